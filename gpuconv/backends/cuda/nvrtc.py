"""Compile CUDA C++ with NVRTC for a real GPU architecture, without a GPU.

NVRTC is called directly through ctypes on the library cuda-pathfinder finds (pip wheel
nvidia-cuda-nvrtc or a CUDA toolkit). CuPy's own compile path is not used here: it asks the
driver for the current device, so it fails on machines without a GPU, which is where CI runs.

We compile to a cubin (`--gpu-architecture=sm_XX`, not compute_XX) so that ptxas runs and
`-Xptxas=-v` produces the register / shared memory / spill report that `gpuconv kernels` reads.
The PTX is kept as well: its `.maxntid` directive is the block size `__launch_bounds__` resolved
to after macro expansion, which the occupancy computation needs.

NVRTC is thread-safe as long as each thread uses its own nvrtcProgram, and ctypes releases the
GIL around foreign calls, so several compilations can run in a thread pool.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import re
import time
from typing import Iterable, Mapping, Optional

INSTALL_HELP = ("NVRTC (the CUDA runtime compiler) was not found. Install it with "
                "`pip install nvidia-cuda-nvrtc cuda-pathfinder` or `pip install \"gpuconv[cuda13]\"` "
                "(or [cuda12]), or install a CUDA toolkit.")

_NVRTC_SUCCESS = 0
_ARCH = re.compile(r"^sm_(\d+)[a-z]?$")
_MACRO = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NvrtcNotFound(RuntimeError):
    pass


class NvrtcCompileError(RuntimeError):
    """The source did not compile; `log` holds NVRTC's complete log (front end and ptxas)."""

    def __init__(self, name: str, arch: str, log: str, options: tuple[str, ...], status: str):
        self.name, self.arch, self.log, self.options, self.status = name, arch, log, options, status
        hint = ""
        if "cuda_fp16.h" in log or "cuda_bf16.h" in log:
            from .sources import HEADERS_HELP
            hint = "\n" + HEADERS_HELP
        super().__init__(f"NVRTC could not compile {name} for {arch} ({status}); options: {' '.join(options)}\n"
                         f"{log.rstrip()}{hint}")


@dataclasses.dataclass(frozen=True)
class CompileResult:
    name: str
    arch: str
    options: tuple[str, ...]
    cubin: bytes
    ptx: str
    log: str
    seconds: float


@functools.lru_cache(maxsize=None)
def _lib() -> ctypes.CDLL:
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError as e:
        raise NvrtcNotFound(f"{INSTALL_HELP} (cuda-pathfinder is not importable: {e})") from None
    try:
        loaded = load_nvidia_dynamic_lib("nvrtc")
    except Exception as e:  # DynamicLibNotFoundError and friends
        raise NvrtcNotFound(f"{INSTALL_HELP} ({type(e).__name__}: {e})") from None
    lib = ctypes.CDLL(loaded.abs_path)  # already dlopen'ed by pathfinder: same handle
    p, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    signatures = {
        "nvrtcVersion": [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
        "nvrtcGetNumSupportedArchs": [ctypes.POINTER(ctypes.c_int)],
        "nvrtcGetSupportedArchs": [ctypes.POINTER(ctypes.c_int)],
        "nvrtcCreateProgram": [ctypes.POINTER(p), cp, cp, ctypes.c_int, ctypes.POINTER(cp), ctypes.POINTER(cp)],
        "nvrtcCompileProgram": [p, ctypes.c_int, ctypes.POINTER(cp)],
        "nvrtcDestroyProgram": [ctypes.POINTER(p)],
        "nvrtcGetProgramLogSize": [p, ctypes.POINTER(sz)],
        "nvrtcGetProgramLog": [p, ctypes.c_char_p],
        "nvrtcGetCUBINSize": [p, ctypes.POINTER(sz)],
        "nvrtcGetCUBIN": [p, ctypes.c_char_p],
        "nvrtcGetPTXSize": [p, ctypes.POINTER(sz)],
        "nvrtcGetPTX": [p, ctypes.c_char_p],
    }
    for fname, argtypes in signatures.items():
        fn = getattr(lib, fname)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    lib.nvrtcGetErrorString.argtypes, lib.nvrtcGetErrorString.restype = [ctypes.c_int], ctypes.c_char_p
    return lib


def library_path() -> str:
    """Where the NVRTC library was loaded from; raises NvrtcNotFound when it is not installed."""
    from cuda.pathfinder import load_nvidia_dynamic_lib
    _lib()
    return load_nvidia_dynamic_lib("nvrtc").abs_path


def available() -> Optional[str]:
    """None when NVRTC can be loaded, else the reason it cannot."""
    try:
        _lib()
    except NvrtcNotFound as e:
        return str(e)
    return None


def version() -> tuple[int, int]:
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(_lib().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


@functools.lru_cache(maxsize=None)
def supported_archs() -> tuple[str, ...]:
    """The real architectures this NVRTC can generate code for, e.g. ('sm_75', 'sm_80', ...)."""
    lib = _lib()
    n = ctypes.c_int()
    _check(lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
    archs = (ctypes.c_int * n.value)()
    _check(lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
    return tuple(f"sm_{a}" for a in archs)


def _status(code: int) -> str:
    return _lib().nvrtcGetErrorString(code).decode()


def _check(code: int, what: str) -> None:
    if code != _NVRTC_SUCCESS:
        raise RuntimeError(f"{what} failed: {_status(code)}")


def _define_options(defines) -> list[str]:
    """-D options from a mapping {NAME: value or None} or from strings "NAME" / "NAME=value"."""
    items = defines.items() if isinstance(defines, Mapping) else (
        (d.split("=", 1)[0], d.split("=", 1)[1] if "=" in d else None) for d in defines)
    out = []
    for name, value in items:
        if not isinstance(name, str) or not _MACRO.match(name):
            raise ValueError(f"defines entry {name!r} is not allowed: expected a C macro name "
                             f"(letters, digits and '_', not starting with a digit)")
        out.append(f"-D{name}" if value is None else f"-D{name}={value}")
    return out


def build_options(arch: str, defines=(), options: Iterable[str] = (),
                  include_dirs: Optional[Iterable[str]] = None) -> tuple[str, ...]:
    """The full NVRTC option list: arch, ptxas verbosity, C++17, CUDA's include dirs, macros, extras."""
    m = _ARCH.match(arch) if isinstance(arch, str) else None
    if m is None:
        raise ValueError(f"arch={arch!r} is not allowed: expected a real architecture such as 'sm_80' "
                         f"(compute_XX gives PTX only, and ptxas' report needs a cubin)")
    supported = supported_archs()
    if f"sm_{m.group(1)}" not in supported:
        raise ValueError(f"arch={arch!r} is not supported by NVRTC {'.'.join(map(str, version()))}: "
                         f"expected one of {list(supported)}")
    if include_dirs is None:
        from .sources import CudaHeadersNotFound, cuda_include_dirs
        try:
            include_dirs = cuda_include_dirs()
        except CudaHeadersNotFound:
            include_dirs = ()  # a kernel that includes <cuda_fp16.h> then fails with a hint
    # NVRTC 13.5 accepts both -Xptxas=-v and --ptxas-options=-v; -std=c++17 is its default, made explicit
    opts = [f"--gpu-architecture={arch}", "-Xptxas=-v", "-std=c++17"]
    opts += [f"-I{d}" for d in include_dirs]
    opts += _define_options(defines)
    if isinstance(options, str):
        raise TypeError(f"options={options!r} is not allowed: expected a list of option strings")
    opts += list(options)
    return tuple(opts)


def _read(prog, size_fn, get_fn) -> bytes:
    n = ctypes.c_size_t()
    _check(size_fn(prog, ctypes.byref(n)), size_fn.__name__)
    buf = ctypes.create_string_buffer(n.value)
    if n.value:
        _check(get_fn(prog, buf), get_fn.__name__)
    return buf.raw[:n.value]


def compile(source: str, name: str, arch: str = "sm_80", options: Iterable[str] = (), *,
            defines=(), include_dirs: Optional[Iterable[str]] = None) -> CompileResult:
    """Compile `source` (named `name` in messages, e.g. "direct.cu") to a cubin for `arch`.

    Raises NvrtcCompileError with the full log on failure, NvrtcNotFound when NVRTC is missing.
    """
    if not isinstance(source, str):
        raise TypeError(f"source of type {type(source).__name__} is not allowed: expected str")
    opts = build_options(arch, defines, options, include_dirs)
    lib = _lib()
    prog = ctypes.c_void_p()
    _check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
           "nvrtcCreateProgram")
    try:
        encoded = [o.encode() for o in opts]
        argv = (ctypes.c_char_p * len(encoded))(*encoded)
        t0 = time.perf_counter()
        status = lib.nvrtcCompileProgram(prog, len(encoded), argv)
        seconds = time.perf_counter() - t0
        log = _read(prog, lib.nvrtcGetProgramLogSize, lib.nvrtcGetProgramLog).rstrip(b"\0").decode(errors="replace")
        if status != _NVRTC_SUCCESS:
            raise NvrtcCompileError(name, arch, log, opts, _status(status))
        cubin = _read(prog, lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN)
        ptx = _read(prog, lib.nvrtcGetPTXSize, lib.nvrtcGetPTX).rstrip(b"\0").decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    if not cubin:  # would mean a virtual arch slipped through: no SASS, no ptxas report
        raise NvrtcCompileError(name, arch, log, opts, "no cubin produced")
    return CompileResult(name=name, arch=arch, options=opts, cubin=cubin, ptx=ptx, log=log, seconds=seconds)


__all__ = ["CompileResult", "NvrtcCompileError", "NvrtcNotFound", "INSTALL_HELP", "available", "build_options",
           "compile", "library_path", "supported_archs", "version"]
