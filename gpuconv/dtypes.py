"""The floating-point types gpuconv computes in, and how each accumulates."""
from __future__ import annotations

import ml_dtypes
import numpy as np

bfloat16 = np.dtype(ml_dtypes.bfloat16)
SUPPORTED = (np.dtype(np.float16), bfloat16, np.dtype(np.float32), np.dtype(np.float64))
_NAMES = ", ".join(str(d) for d in SUPPORTED)


def check_dtypes(x_dtype, w_dtype) -> np.dtype:
    """Input and filters must share one supported float dtype; returns it."""
    try:
        # byte order is storage, not type: a big-endian float32 is converted, not refused
        xd, wd = (np.dtype(d).newbyteorder("=") for d in (x_dtype, w_dtype))
    except TypeError:
        raise TypeError(f"input dtype {x_dtype!r} / filters dtype {w_dtype!r}: expected one of {_NAMES}") from None
    if xd not in SUPPORTED or wd not in SUPPORTED or xd != wd:
        raise TypeError(f"input dtype {xd} and filters dtype {wd} are not allowed: both must be the same "
                        f"one of {_NAMES}")
    return xd


def accumulator(dtype) -> np.dtype:
    """Half types accumulate in float32 and round once at the end; float64 stays float64."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def unit_roundoff(dtype) -> float:
    """u = 2^-p for a p-bit significand: the relative error of one rounding."""
    return float(ml_dtypes.finfo(np.dtype(dtype)).eps) / 2
