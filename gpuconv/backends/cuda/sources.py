"""Kernel sources: finding kernels/*.cu, inlining our own headers, and locating CUDA's headers.

Our headers are inlined into each kernel's text (recursively, once each) because CuPy's on-disk
cache keys on the source text and options only: an edited header pulled in by #include would
silently reuse a stale binary. CUDA's own headers (<cuda_fp16.h>, <cuda_bf16.h>) stay #includes and
come from the pip wheels (found with cuda-pathfinder) or else a CUDA toolkit.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
from importlib import resources
from pathlib import Path

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)

HEADERS_HELP = ("CUDA's headers cuda_fp16.h / cuda_bf16.h were not found. NVRTC from pip ships none; "
                "install them with `pip install \"gpuconv[cuda13]\"` (or [cuda12]), which brings the "
                "nvidia-cuda-runtime, -crt and -cccl wheels, or set CUDA_HOME to a CUDA toolkit "
                "(/usr/local/cuda and /usr/local/cuda-* are looked in too).")


class CudaHeadersNotFound(RuntimeError):
    pass


def kernel_dir() -> Path:
    """kernels/ as installed (package data `gpuconv.kernels`), or beside the package in a source tree."""
    try:
        return Path(str(resources.files("gpuconv.kernels")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[3] / "kernels"


def kernel_files() -> list[Path]:
    """Every algorithm's kernel file, one per algorithm."""
    return sorted(kernel_dir().glob("*.cu"))


def kernel_path(name: str) -> Path:
    path = kernel_dir() / (name if name.endswith(".cu") else name + ".cu")
    if not path.is_file():
        names = [p.stem for p in kernel_files()]
        raise ValueError(f"kernel file {name!r} does not exist: expected one of {names}")
    return path


def read_ascii(path: Path) -> str:
    """A kernel source's text. Sources must be ASCII: NVRTC 12.2 leaves the process in the "C" locale
    after a compile, and CuPy 13 then writes the next source to its cache with that default encoding,
    so any non-ASCII byte makes the second module load fail."""
    data = path.read_bytes()
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"kernel source {path} has a non-ASCII byte {data[e.start:e.start + 1]!r} on line "
                         f"{line}: kernel sources must be ASCII-only") from None


def inline_includes(path: Path, _seen: set | None = None) -> str:
    """The file's text with every #include "..." of ours replaced by that header's text (once each)."""
    seen = set() if _seen is None else _seen
    text = read_ascii(path)

    def expand(m: re.Match) -> str:
        header = (path.parent / m.group(1)).resolve()
        if header in seen:
            return f"// (already inlined: {m.group(1)})"
        seen.add(header)
        return f"// ---- begin {m.group(1)} ----\n{inline_includes(header, seen)}\n// ---- end {m.group(1)} ----"

    return _INCLUDE.sub(expand, text)


@functools.lru_cache(maxsize=None)
def load_source(name: str) -> str:
    """A kernel file's complete source text (our headers inlined), as compiled by every backend."""
    return inline_includes(kernel_path(name))


_TILE_MACRO = re.compile(r"#ifndef\s+(\w+)\s*\n\s*#define\s+\1\s+(\d+)[^\n]*\n\s*#endif")


@functools.lru_cache(maxsize=None)
def default_macros(name: str) -> dict[str, int]:
    """A kernel file's overridable tile parameters and their defaults (`#ifndef X / #define X n`), so the
    launchers compute grids and shared memory from the same numbers the kernel is compiled with."""
    return {k: int(v) for k, v in _TILE_MACRO.findall(load_source(name))}


def source_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# Where CUDA toolkits install, when neither a wheel nor CUDA_HOME / CUDA_PATH says: the default
# symlink first, then versioned installs, newest first.
CUDA_ROOT = "/usr/local/cuda"


def _wheel_include_dirs() -> list[str]:
    """Header directories of the nvidia-cuda-runtime / -cccl wheels, as cuda-pathfinder finds them."""
    try:
        from cuda.pathfinder import find_nvidia_header_directory
    except ImportError:
        return []
    dirs = []
    for lib in ("cudart", "cccl"):
        try:
            d = find_nvidia_header_directory(lib)
        except Exception:  # pathfinder's not-found errors vary between versions
            d = None
        if d and d not in dirs:
            dirs.append(d)
    return dirs


def _version_key(path: str) -> tuple[int, ...]:
    suffix = path.rsplit("cuda-", 1)[-1]
    return tuple(int(p) for p in suffix.split(".") if p.isdigit())


def _toolkit_roots() -> list[str]:
    roots = [os.environ.get(env) for env in ("CUDA_HOME", "CUDA_PATH")]
    roots.append(CUDA_ROOT)
    roots += sorted(glob.glob(CUDA_ROOT + "-*"), key=_version_key, reverse=True)
    return [r for i, r in enumerate(roots) if r and r not in roots[:i]]


@functools.lru_cache(maxsize=None)
def cuda_include_dirs() -> tuple[str, ...]:
    """Directories to pass with -I so that <cuda_fp16.h> and <cuda_bf16.h> compile (NVRTC and g++).

    The wheels' headers when they have them, else the first toolkit that does (its include/ and, from
    CUDA 13 on, include/cccl): never a mix of two CUDA versions' headers."""
    looked = []
    candidates = [_wheel_include_dirs()]
    for root in _toolkit_roots():
        include = os.path.join(root, "include")
        candidates.append([include] + [d for d in [os.path.join(include, "cccl")] if os.path.isdir(d)])
    for dirs in candidates:
        looked += dirs
        if any(os.path.isfile(os.path.join(d, "cuda_fp16.h")) for d in dirs):
            return tuple(dirs)
    raise CudaHeadersNotFound(HEADERS_HELP + (f" Looked in: {looked}" if looked else ""))
