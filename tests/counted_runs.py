"""Arrays at a fixed alignment, and one launch counted by the emulator's sanitizer: sector counts that do
not depend on where malloc put the arrays."""
from __future__ import annotations

import numpy as np


def aligned_empty(shape, dtype=np.float32, offset: int = 0) -> np.ndarray:
    """An array starting `offset` elements past a 256-byte boundary (CuPy allocates on 256)."""
    n, itemsize = int(np.prod(shape)), np.dtype(dtype).itemsize
    buf = np.empty(n + (256 // itemsize) + offset, dtype)
    start = (-buf.ctypes.data % 256) // itemsize + offset
    return buf[start:start + n].reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """A copy of `a` on a 256-byte boundary."""
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def counted(monkeypatch, run):
    """Calls run() (one kernel launch on the emulator) under memcheck with the counters on; returns that
    launch's global (requests, sectors, bytes) per kernel argument."""
    from gpuconv.backends.cuda import sanitizer
    monkeypatch.setenv("GPUCONV_EMULATOR_SANITIZE", "memcheck")
    monkeypatch.setattr(sanitizer, "collected", [])
    run()
    (c,) = sanitizer.collected
    return c.per_argument
