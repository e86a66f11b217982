"""The emulator as a sanitizer and memory profiler: the kernel files built with gcc's -fsanitize=thread
instrumentation, whose hooks kernels/host/sanitizer.h defines (no libtsan), so that every memory
access of a kernel thread is checked and counted. See sanitizer.h for how.

Tools (GPUCONV_EMULATOR_SANITIZE=memcheck,racecheck,initcheck,synccheck,asynccheck, or "all"):
  memcheck   out-of-bounds and misaligned global and shared accesses (async_copy's source and
             destination at its issue), writes to const arguments;
  racecheck  shared-memory hazards between threads of a block within one barrier interval, and two
             threads of a launch writing the same global byte (atomics excepted); an async_copy writes
             its bytes at any moment from its issue to the async_wait that retires it, so another
             thread's access to them in that window is a hazard too;
  initcheck  reads of shared memory no thread of the block wrote (a landed async_copy writes), and of
             output/workspace bytes (arrays the emulator allocated) that no launch wrote;
  synccheck  a __syncthreads() not reached by every thread of the block, or threads waiting at
             different ones; a warp primitive (__syncwarp, __shfl_*_sync, __ballot/any/all_sync)
             whose mask names a lane that exits, waits elsewhere or brings another mask, a lane
             missing from its own mask, a shuffle reading a lane outside the mask. The warp-level
             checks (cuda_host.h) and the partial-barrier check hold in the plain emulator too;
  asynccheck a thread's access to bytes of its own async_copy that no async_wait has retired yet.
Racecheck orders shared-memory accesses by __syncthreads() only: a warp-synchronous exchange through
shared memory ordered by __syncwarp() is reported (use shuffles, or a block barrier).
A report ends the launch with a RuntimeError: "kernel K failed in the emulator: <tool>: ... by block
(x,y,z) thread (x,y,z)". `counters` adds warp-level memory counters (see Counters).
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import threading
import weakref
from typing import Optional

import numpy as np

from .emulator import EmulatedModule
from .shared_symbols import static_shared_arrays
from .launch import Launch
from .sources import load_source

TOOLS = {"memcheck": 1, "racecheck": 2, "initcheck": 4, "synccheck": 8, "asynccheck": 32}
COUNTERS = 16
ALL_CHECKS = tuple(TOOLS)
GLOBAL_IN, GLOBAL_OUT, SHARED_STATIC, IGNORED, SHARED_OUTSIDE = 0, 1, 2, 3, 4
# Guard assumed around a pointer argument the emulator did not allocate itself (an input): an access
# this close past either end is out of bounds of that argument.
INPUT_REDZONE = 256


def parse_tools(text: str, what: str = "GPUCONV_EMULATOR_SANITIZE") -> tuple[str, ...]:
    """'memcheck,racecheck' -> ('memcheck', 'racecheck'); 'all' -> every check; '' -> ()."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return ALL_CHECKS
    bad = [n for n in names if n not in TOOLS]
    if bad:
        raise ValueError(f"{what}={text!r} is not allowed: unknown tool(s) {bad}; expected a comma-separated "
                         f"subset of {list(TOOLS)} or 'all'")
    return tuple(dict.fromkeys(names))


def tools_from_env() -> tuple[str, ...]:
    return parse_tools(os.environ.get("GPUCONV_EMULATOR_SANITIZE", ""))


def tool_mask(tools) -> int:
    return sum(TOOLS[t] for t in tools)


class Region(ctypes.Structure):
    """Mirror of gpuconv_san::Region (kernels/host/sanitizer.h)."""
    _fields_ = [("base", ctypes.c_size_t), ("size", ctypes.c_uint64), ("guard_before", ctypes.c_uint64),
                ("guard_after", ctypes.c_uint64), ("written", ctypes.c_void_p), ("kind", ctypes.c_int),
                ("name", ctypes.c_char_p)]


@dataclasses.dataclass
class Counters:
    """One launch's memory traffic as the hardware would count it: lanes grouped into warps of 32, the
    n-th execution of an access instruction by a warp's lanes is one request. Counted on the code g++
    generates for the CPU, which may load a value once where nvcc loads it twice (or the reverse)."""
    kernel: str
    global_requests: int
    global_sectors: int        # distinct 32-byte sectors touched, summed over requests
    global_bytes: int          # bytes the lanes asked for
    shared_requests: int
    shared_wavefronts: int     # per request: the most distinct 4-byte words one of the 32 banks serves
    unique_read_bytes: int     # distinct global bytes read: what the launch must move at least
    unique_written_bytes: int  # distinct global bytes written
    # global (requests, sectors, bytes) per kernel argument that had any, by the first lane's address
    per_argument: dict = dataclasses.field(default_factory=dict)

    @property
    def sectors_per_request(self) -> float:
        return self.global_sectors / self.global_requests if self.global_requests else 0.0

    @property
    def global_efficiency(self) -> float:
        return self.global_bytes / (32 * self.global_sectors) if self.global_sectors else 1.0

    @property
    def wavefronts_per_request(self) -> float:
        return self.shared_wavefronts / self.shared_requests if self.shared_requests else 0.0


# Shadow of written bytes per buffer the emulator allocated (GuardedNumpy.empty), kept across launches
# (im2col writes the workspace that gemm reads) and dropped with the buffer.
_WRITTEN: dict[int, np.ndarray] = {}
_WRITTEN_LOCK = threading.Lock()


def written_shadow(root: np.ndarray, host_written: bool = False) -> np.ndarray:
    with _WRITTEN_LOCK:
        shadow = _WRITTEN.get(id(root))
        if shadow is None:
            shadow = (np.ones if host_written else np.zeros)(root.nbytes, np.uint8)
            _WRITTEN[id(root)] = shadow
            weakref.finalize(root, _WRITTEN.pop, id(root), None)
        return shadow


class SanitizedModule(EmulatedModule):
    """A kernel file built with the sanitizer's instrumentation; `tools` and `xp` are set per launch."""

    variant_flags = ("-DGPUCONV_SANITIZE", "-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0",
                     "-fno-tree-sra")
    # the instrumentation's hooks are ours: link the C and C++ runtimes but not libtsan
    # (--no-undefined: a hook g++ needs that sanitizer.h lacks fails the build, not the dlopen)
    link_flags = ("-nodefaultlibs", "-Wl,--no-undefined", "-lstdc++", "-lm", "-lc", "-lgcc_s")
    variant = "-sanitize"

    def __init__(self, file: str, source: str, defines: tuple[tuple[str, int], ...] = ()):
        super().__init__(file, source, defines)
        self.lib.gpuconv_san_begin.argtypes = [ctypes.c_uint, ctypes.POINTER(Region), ctypes.c_int]
        self.lib.gpuconv_san_begin.restype = None
        self.lib.gpuconv_san_counters.argtypes = [ctypes.POINTER(ctypes.c_ulonglong)]
        self.lib.gpuconv_san_counters.restype = None
        self.lib.gpuconv_san_region_counters.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_ulonglong)]
        self.lib.gpuconv_san_region_counters.restype = None
        self._region_names: list[str] = []
        self.lib.gpuconv_san_static_shared.restype = ctypes.c_size_t
        self.shared_arrays = static_shared_arrays(str(self.path))
        self.mask = 0
        self.xp = None
        self.last_counters: Optional[Counters] = None

    def run(self, launch: Launch, tools, xp=None, counters: bool = False, seed: int = 0,
            shuffle: bool = False) -> Optional[Counters]:
        from .emulator import _LAUNCH_LOCK
        with _LAUNCH_LOCK:
            self.mask = tool_mask(tools) | (COUNTERS if counters else 0)
            self.xp = xp
            self._launch(launch, seed, shuffle)
            if not counters:
                return None
            raw = (ctypes.c_ulonglong * 7)()
            self.lib.gpuconv_san_counters(raw)
            per_argument = {}
            for i, name in enumerate(self._region_names):
                three = (ctypes.c_ulonglong * 3)()
                self.lib.gpuconv_san_region_counters(i, three)
                if three[0]:
                    per_argument[name] = tuple(int(v) for v in three)
            return Counters(launch.kernel, *[int(v) for v in raw], per_argument=per_argument)

    def _before_launch(self, launch: Launch, holders: list, ptrs) -> None:
        regions, keep = [], []
        params = self.entries[launch.kernel].params
        for p, a, h in zip(params, launch.args, holders):
            name = p.name
            if isinstance(a, np.ndarray):
                const = p.const
                base, size = a.ctypes.data, a.nbytes
                before = after = INPUT_REDZONE
                written = None
                root = self.xp.guarded_buffer(a) if hasattr(self.xp, "guarded_buffer") else None
                if root is not None:
                    before = base - root.ctypes.data
                    after = root.ctypes.data + root.nbytes - base - size
                    shadow = written_shadow(root, self.xp.host_written(root))
                    written = shadow.ctypes.data + before
                    keep.append(shadow)
                regions.append((base, size, before, after, written, GLOBAL_IN if const else GLOBAL_OUT, name))
            else:  # the scalar's bytes, read by the launcher: no kernel access
                regions.append((h.ctypes.data, h.nbytes, 0, 0, None, IGNORED, name))
        regions.append((ctypes.addressof(ptrs), ctypes.sizeof(ptrs), 0, 0, None, IGNORED, "launch arguments"))
        shared = self.shared_arrays or ((0, 1 << 40, "static shared memory"),)
        section = self.lib.gpuconv_san_static_shared()
        for off, size, name in shared:
            if name.startswith("+"):
                regions.append((section + off, size, 0, 0, None, SHARED_OUTSIDE, name[1:]))
            else:
                regions.append((off, size, 0, 0, None, SHARED_STATIC, name))
        arr = (Region * len(regions))(*[Region(*r[:6], r[6].encode()) for r in regions])
        self._keep = (arr, keep)  # alive until the next launch: the C side holds pointers into them
        self._region_names = [r[6] for r in regions]
        self.lib.gpuconv_san_begin(self.mask, arr, len(regions))


@functools.lru_cache(maxsize=None)
def load_sanitized(file: str, defines: tuple[tuple[str, int], ...] = ()) -> SanitizedModule:
    return SanitizedModule(file, load_source(file), defines)


# `gpuconv sanitize --counters` collects each launch's counters here (None: not collecting).
collected: Optional[list] = None


def sanitized_launch(launch: Launch, tools, xp, seed: int, shuffle: bool) -> None:
    """The emulator backend's launch under GPUCONV_EMULATOR_SANITIZE (or `gpuconv sanitize`)."""
    counters = collected is not None
    c = load_sanitized(launch.file, launch.defines).run(launch, tools, xp, counters=counters, seed=seed,
                                                        shuffle=shuffle)
    if counters:
        collected.append(c)
