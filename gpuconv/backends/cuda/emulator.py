"""The "emulator" backend: the CUDA kernels of kernels/*.cu compiled by the host C++ compiler and run
on the CPU, through the same launch code as the "cupy" backend.

Each kernel file (our headers inlined, exactly the text NVRTC compiles) is built with g++ into a
shared library, force-including kernels/host/cuda_host.h, which supplies threadIdx & co. and a real
__syncthreads() (threads of a block are fibers). A small generated wrapper per entry point unpacks a
`void** args` array the way cuLaunchKernel does. Libraries are cached on disk under a hash of the
sources, flags and compiler (emulator_build.py). A launch runs its grid in slices of SLICE_SECONDS, so
Ctrl-C interrupts a long one promptly.

Options (environment): GPUCONV_EMULATOR_SHUFFLE=<seed> runs the threads of every phase in a seeded
random order, so a race shows as results that change between seeds; GPUCONV_CXX picks the compiler,
GPUCONV_CXX_TIMEOUT limits its run (seconds).
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import threading
import weakref
from typing import Optional

import numpy as np

from .backend import CudaBackend
from .emulator_build import build_library, cache_dir, find_compiler, is_intact
from .emulator_build import compiler  # noqa: F401  (re-exported: `gpuconv info` reports it)
from .launch import Launch
from .shared_symbols import static_shared_arrays
from .signature import Entry, entries_of, parse_entries
from .sources import cuda_include_dirs, kernel_dir, load_source, source_hash

# ctypes releases the GIL during a launch; one launch at a time, as on a single GPU stream.
_LAUNCH_LOCK = threading.Lock()

# The runtime's headers (cuda_host.h includes the others): every one is part of each library's cache key.
RUNTIME_HEADERS = ("cuda_host.h", "sanitizer.h", "mma_host.h")
CXX_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-w", "-fno-strict-aliasing")
# A launch runs its grid in slices of about this many seconds, returning to Python between them: the
# interpreter runs signal handlers only there, so this bounds how late Ctrl-C arrives.
SLICE_SECONDS = 0.05


def wrapper_source(entries: dict[str, Entry]) -> str:
    """One extern "C" launcher per entry point: casts args[i] back to each parameter's C type."""
    out = []
    for e in entries.values():
        call_args = ", ".join(f"*reinterpret_cast<{p.c_decl()}*>(a[{i}])" for i, p in enumerate(e.params))
        out.append(
            f"static void gpuconv_body_{e.name}(void* v) {{\n"
            f"    void** a = static_cast<void**>(v);\n"
            f"    {e.name}({call_args});\n}}\n"
            f'extern "C" int gpuconv_launch_{e.name}(const unsigned* grid, const unsigned* block, size_t smem,\n'
            f"        unsigned long long* rng, int shuffle, unsigned long long* next_block, double max_seconds,\n"
            f"        void** args, char* err, size_t err_len) {{\n"
            f"    return gpuconv_emu::launch(grid, block, smem, rng, shuffle, next_block, max_seconds,\n"
            f"                               gpuconv_body_{e.name}, args, err, err_len);\n}}\n")
    return "\n".join(out)


class EmulatedModule:
    """A kernel source compiled for the CPU; `launch` runs one Launch of one of its entry points."""

    # A build variant (sanitizer.py) adds compile flags, link flags and a library name suffix.
    variant_flags: tuple[str, ...] = ()
    link_flags: tuple[str, ...] = ()
    variant = ""

    def __init__(self, file: str, source: str, defines: tuple[tuple[str, int], ...] = ()):
        self.file = file
        cxx, why_not = find_compiler()
        if cxx is None:
            raise RuntimeError(f"the emulator backend needs a C++ compiler: {why_not}")
        self.entries = parse_entries(source)
        runtime = "".join((kernel_dir() / "host" / h).read_text() for h in RUNTIME_HEADERS)
        includes = cuda_include_dirs()
        flags = list(CXX_FLAGS) + list(self.variant_flags) + [f"-D{k}={v}" for k, v in defines]
        key = source_hash(source, runtime, " ".join(flags + list(self.link_flags)), cxx, *includes)
        self.path = cache_dir() / f"{file}{self.variant}-{key}.so"
        if not is_intact(self.path):  # missing, or damaged since it was built: loading it could SIGBUS
            build_library([cxx, *flags, *self.link_flags, "-include", str(kernel_dir() / "host" / "cuda_host.h"),
                           *[f"-I{d}" for d in includes]], f"{file}.cpp",
                          source + "\n\n// ---- emulator launchers ----\n" + wrapper_source(self.entries),
                          self.path, f"{file}.cu")
        self.lib = ctypes.CDLL(str(self.path))
        self._poison_template_shared()

    def _poison_template_shared(self) -> None:
        """Hands the runtime the __shared__ arrays g++ put outside the poisoned section (templates')."""
        outside = [(off, size) for off, size, name in static_shared_arrays(str(self.path)) if name.startswith("+")]
        if outside:
            self.lib.gpuconv_emu_shared_section.restype = ctypes.c_size_t
            section = self.lib.gpuconv_emu_shared_section()
            arrays = (ctypes.c_void_p * len(outside))(*[section + off for off, _ in outside])
            sizes = (ctypes.c_size_t * len(outside))(*[size for _, size in outside])
            self.lib.gpuconv_emu_outside_shared(arrays, sizes, ctypes.c_int(len(outside)))

    def launch(self, launch: Launch, seed: int = 0, shuffle: bool = False) -> None:
        with _LAUNCH_LOCK:  # the runtime's fibers and built-in variables are process-global state
            self._launch(launch, seed, shuffle)

    def _launch(self, launch: Launch, seed: int, shuffle: bool) -> None:
        fn = getattr(self.lib, f"gpuconv_launch_{launch.kernel}")
        holders = []
        for a in launch.args:
            if isinstance(a, np.ndarray):
                holders.append(ctypes.c_void_p(a.ctypes.data))
            else:
                holders.append(np.array(a))  # a NumPy scalar or struct: its bytes, C layout
        ptrs = (ctypes.c_void_p * len(holders))(*[
            ctypes.addressof(h) if isinstance(h, ctypes.c_void_p) else h.ctypes.data for h in holders])
        grid = (ctypes.c_uint * 3)(*launch.grid)
        block = (ctypes.c_uint * 3)(*launch.block)
        err = ctypes.create_string_buffer(1024)
        self._before_launch(launch, holders, ptrs)
        rng = ctypes.c_ulonglong(seed)
        next_block = ctypes.c_ulonglong(0)
        blocks = math.prod(launch.grid)
        while next_block.value < blocks:  # one slice of the grid per call; signals are handled in between
            rc = fn(grid, block, ctypes.c_size_t(launch.shared_mem), ctypes.byref(rng), ctypes.c_int(shuffle),
                    ctypes.byref(next_block), ctypes.c_double(SLICE_SECONDS), ptrs, err, ctypes.c_size_t(len(err)))
            if rc != 0:
                raise RuntimeError(f"kernel {launch.kernel} failed in the emulator: {err.value.decode()}")

    def _before_launch(self, launch: Launch, holders: list, ptrs) -> None:
        """Called with the argument holders just before the launch runs (the sanitizer's hook)."""


@functools.lru_cache(maxsize=None)
def load_module(file: str, defines: tuple[tuple[str, int], ...] = ()) -> EmulatedModule:
    return EmulatedModule(file, load_source(file), defines)


def shuffle_seed() -> Optional[int]:
    raw = os.environ.get("GPUCONV_EMULATOR_SHUFFLE")
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"GPUCONV_EMULATOR_SHUFFLE={raw!r} is not allowed: expected an integer seed") from None


class GuardedNumpy:
    """NumPy, except that `empty` surrounds every array with guard bytes that are checked after each
    launch: a kernel writing outside an output or workspace array fails loudly here, where on a GPU it
    would silently corrupt a neighbour.

    The registry of guarded buffers holds them weakly: an entry lives exactly as long as its buffer,
    so nothing has to be released after a call, and no thread's call can unregister another's arrays."""

    GUARD = 4096
    PATTERN = 0xA5

    def __init__(self):
        self._buffers: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buf = np.full(nbytes + 2 * self.GUARD, self.PATTERN, np.uint8)
        self._buffers[id(buf)] = buf
        return buf[self.GUARD:self.GUARD + nbytes].view(dtype).reshape(shape)

    def guarded_buffer(self, a: np.ndarray) -> Optional[np.ndarray]:
        """The guarded buffer `a` is a view of, or None when `empty` did not allocate it."""
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        return root if self._buffers.get(id(root)) is root else None

    def check(self, launch: Launch) -> None:
        for param, a in zip(launch_entry_params(launch), launch.args):
            if not isinstance(a, np.ndarray) or not param.pointer or param.const:
                continue
            root = self.guarded_buffer(a)
            if root is not None:
                for side, guard in (("before", root[:self.GUARD]), ("after", root[-self.GUARD:])):
                    if not (guard == self.PATTERN).all():
                        raise RuntimeError(f"kernel {launch.kernel} wrote {side} the end of its "
                                           f"'{param.name}' array (out-of-bounds write)")


def launch_entry_params(launch: Launch):
    return entries_of(launch.file)[launch.kernel].params


class EmulatorBackend(CudaBackend):
    name = "emulator"
    summary = "gpuconv's CUDA kernels compiled for and run on the CPU (testing and learning; slow)"

    def __init__(self, seed: Optional[int] = None):
        super().__init__()
        self.seed = seed
        self.xp = GuardedNumpy()

    def unavailable_reason(self) -> Optional[str]:
        if not sys.platform.startswith("linux"):
            # cuda_host.h relies on ucontext fibers and the linker's __start_/__stop_ section symbols (ELF)
            return f"the emulator runs on Linux only (this is {sys.platform})"
        cxx, why_not = find_compiler()
        if cxx is None:
            return why_not
        try:
            cache_dir()
        except RuntimeError as e:
            return str(e)
        return self.headers_reason()

    def owns(self, array) -> bool:
        return False  # never chosen by "auto": a NumPy input goes to the numpy backend

    def launch(self, launch: Launch) -> None:
        launch.check()
        seed = self.seed if self.seed is not None else shuffle_seed()
        from . import sanitizer  # GPUCONV_EMULATOR_SANITIZE: the instrumented build variant
        tools = sanitizer.tools_from_env()
        if tools or sanitizer.collected is not None:
            sanitizer.sanitized_launch(launch, tools, self.xp, seed or 0, seed is not None)
        else:
            load_module(launch.file, launch.defines).launch(launch, seed=seed or 0, shuffle=seed is not None)
        self.xp.check(launch)
