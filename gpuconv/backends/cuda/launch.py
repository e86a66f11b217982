"""One kernel launch, described once and executed by either CUDA backend.

The cupy and emulator backends differ only in the array module (CuPy vs NumPy) and in how a kernel
file becomes a loaded module (NVRTC via CuPy's RawModule vs g++ + ctypes). Everything else — kernel
name, grid, block, shared-memory size, the argument tuple, its check against the parsed signature,
the 32/64-bit index choice — is this module's, so CI exercises all of it without a GPU.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ...dtypes import bfloat16
from .signature import check_args, compiled_limits, entries_of

DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64", np.dtype(np.float16): "f16",
                bfloat16: "bf16"}
INDEX32_LIMIT = 2 ** 31 - 1
# CUDA's limits on grid and block dimensions.
MAX_GRID = (2 ** 31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)
# Static + dynamic shared memory every GPU gives a block without the opt-in attribute.
SHARED_WITHOUT_OPTIN = 48 * 1024


@dataclasses.dataclass(frozen=True)
class DeviceLimits:
    """What one block may use on a device."""
    threads_per_block: int = 1024
    shared_optin: int = SHARED_WITHOUT_OPTIN   # static + dynamic bytes with the opt-in attribute set


# The emulator's stand-in device: what every CUDA GPU allows, so a launch it accepts runs anywhere.
PORTABLE_LIMITS = DeviceLimits()


@dataclasses.dataclass(frozen=True)
class Launch:
    file: str                     # kernel file stem, e.g. "direct"
    kernel: str                   # entry point, e.g. "conv_direct_f32_i32"
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int               # dynamic shared memory, bytes
    args: tuple
    defines: tuple[tuple[str, int], ...] = ()   # -D macros (tile sizes) the module is compiled with

    def check(self, storage: dict | None = None, limits: DeviceLimits = PORTABLE_LIMITS, opt_in: bool = False) -> None:
        """Raise what a GPU would refuse, before launching: wrong arguments, grid or block dimensions,
        more threads than the device or the kernel's __launch_bounds__ allow, more shared memory than
        the device has, or more than 48 KB without `opt_in` (the caller then sets the kernel's
        max_dynamic_shared_size_bytes). Static shared memory is parsed from the source."""
        entries = entries_of(self.file)
        if self.kernel not in entries:
            raise ValueError(f"kernel {self.kernel!r} is not an entry point of {self.file}.cu: "
                             f"expected one of {sorted(entries)}")
        check_args(entries[self.kernel], self.args, storage)
        where = f"kernel {self.kernel}"
        for axis, (g, limit) in enumerate(zip(self.grid, MAX_GRID)):
            if not 1 <= g <= limit:
                raise ValueError(f"{where}: grid dimension {'xyz'[axis]}={g} outside 1..{limit}")
        for axis, (b, limit) in enumerate(zip(self.block, MAX_BLOCK)):
            if not 1 <= b <= limit:
                raise ValueError(f"{where}: block dimension {'xyz'[axis]}={b} outside 1..{limit}")
        threads = self.block[0] * self.block[1] * self.block[2]
        if threads > limits.threads_per_block:
            raise ValueError(f"{where}: block {self.block} has {threads} threads, more than the "
                             f"{limits.threads_per_block} a block may have")
        compiled = compiled_limits(self.file, self.kernel, self.defines)
        if compiled.max_threads is not None and threads > compiled.max_threads:
            raise ValueError(f"{where}: block {self.block} has {threads} threads, more than its "
                             f"__launch_bounds__({compiled.max_threads}) allows")
        static = compiled.static_shared
        total = static + self.shared_mem
        if self.shared_mem < 0 or total > limits.shared_optin:
            raise ValueError(f"{where}: {static} bytes of static + {self.shared_mem} of dynamic shared memory "
                             f"exceed the {limits.shared_optin} bytes a block may use on this device")
        if total > SHARED_WITHOUT_OPTIN and not opt_in:
            raise ValueError(f"{where}: {static} bytes of static + {self.shared_mem} of dynamic shared memory "
                             f"exceed {SHARED_WITHOUT_OPTIN} bytes, which needs the kernel's "
                             f"max_dynamic_shared_size_bytes opt-in")

    def needs_opt_in(self) -> bool:
        static = compiled_limits(self.file, self.kernel, self.defines).static_shared
        return static + self.shared_mem > SHARED_WITHOUT_OPTIN


def index_bits(*element_spans: int, force64: bool = False) -> int:
    """32 when every array's element offsets fit a signed 32-bit int, else 64.

    Kernels index elements (the compiler scales by the element size in 64-bit pointer arithmetic),
    so the bound is on element offsets: the largest span any array or workspace covers.
    """
    return 64 if force64 or max(element_spans, default=0) > INDEX32_LIMIT else 32


def launch_limit_reason(grid: tuple[int, int, int], int_indices: dict[str, int], file: str) -> Optional[str]:
    """Why `grid` cannot launch (CUDA's grid limits) or `file`.cu cannot index the problem (each named
    quantity must fit the int its kernels keep it in, in both index variants); None when both hold."""
    gx, gy, gz = grid
    if gx > 2 ** 31 - 1 or gy > 65535 or gz > 65535:
        return f"grid ({gx}, {gy}, {gz}) exceeds CUDA's limits (2^31-1, 65535, 65535)"
    for what, v in int_indices.items():
        if v > INDEX32_LIMIT:
            return f"{what} = {v} overflows {file}.cu's 32-bit int indices (at most {INDEX32_LIMIT})"
    return None


def grid_stride_end(total: int, blocks: int, threads: int) -> int:
    """The largest index a grid-stride loop `for (idx = start; idx < total; idx += blocks*threads)`
    computes: the last idx a thread uses plus the stride, which must fit the index type too."""
    return max(total, 1) - 1 + blocks * threads


def entry_name(prefix: str, dtype, bits: int) -> str:
    return f"{prefix}_{DTYPE_SUFFIX[np.dtype(dtype)]}_i{bits}"
