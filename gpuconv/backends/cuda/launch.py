"""One kernel launch, described once and executed by either CUDA backend.

The cupy and emulator backends differ only in the array module (CuPy vs NumPy) and in how a kernel
file becomes a loaded module (NVRTC via CuPy's RawModule vs g++ + ctypes). Everything else — kernel
name, grid, block, shared-memory size, the argument tuple, its check against the parsed signature,
the 32/64-bit index choice — is this module's, so CI exercises all of it without a GPU.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ...dtypes import bfloat16
from .signature import check_args, entries_of

DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64", np.dtype(np.float16): "f16",
                bfloat16: "bf16"}
INDEX32_LIMIT = 2 ** 31 - 1
# CUDA's limits on grid dimensions.
MAX_GRID = (2 ** 31 - 1, 65535, 65535)


@dataclasses.dataclass(frozen=True)
class Launch:
    file: str                     # kernel file stem, e.g. "direct"
    kernel: str                   # entry point, e.g. "conv_direct_f32_i32"
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int               # dynamic shared memory, bytes
    args: tuple
    defines: tuple[tuple[str, int], ...] = ()   # -D macros (tile sizes) the module is compiled with

    def check(self, storage: dict | None = None) -> None:
        entries = entries_of(self.file)
        if self.kernel not in entries:
            raise ValueError(f"kernel {self.kernel!r} is not an entry point of {self.file}.cu: "
                             f"expected one of {sorted(entries)}")
        check_args(entries[self.kernel], self.args, storage)
        for axis, (g, limit) in enumerate(zip(self.grid, MAX_GRID)):
            if not 1 <= g <= limit:
                raise ValueError(f"kernel {self.kernel}: grid dimension {'xyz'[axis]}={g} outside 1..{limit}")


def index_bits(*element_spans: int, force64: bool = False) -> int:
    """32 when every array's element offsets fit a signed 32-bit int, else 64.

    Kernels index elements (the compiler scales by the element size in 64-bit pointer arithmetic),
    so the bound is on element offsets: the largest span any array or workspace covers.
    """
    return 64 if force64 or max(element_spans, default=0) > INDEX32_LIMIT else 32


def grid_stride_end(total: int, blocks: int, threads: int) -> int:
    """The largest index a grid-stride loop `for (idx = start; idx < total; idx += blocks*threads)`
    computes: the last idx a thread uses plus the stride, which must fit the index type too."""
    return max(total, 1) - 1 + blocks * threads


def entry_name(prefix: str, dtype, bits: int) -> str:
    return f"{prefix}_{DTYPE_SUFFIX[np.dtype(dtype)]}_i{bits}"
