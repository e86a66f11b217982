"""The precision switch for float32 convolutions, as JAX's `precision` and PyTorch's `allow_tf32`.

"highest" (the default): float32 products and sums, exact float32 FMAs, on every backend.
"tf32": float32 inputs may be rounded to TensorFloat-32 (10 mantissa bits, cvt.rna: nearest, ties away
    from zero) and multiplied on tensor cores, accumulating in float32, where an algorithm does that
    (the CUDA backends' tensor-core algorithm). It is a permission, not a request for rounding: the
    NumPy backend and the CUDA-core kernels compute in full float32 under either setting, as PyTorch
    and TensorFlow do on their CPUs.
Half types always multiply exactly (their products fit float32) and accumulate in float32: the switch
does not change them. float64 is never rounded to TF32: asking for it explicitly is an error, and a
process default of "tf32" (GPUCONV_PRECISION) leaves float64 calls at "highest".
"""
from __future__ import annotations

from typing import Optional

import numpy as np

PRECISIONS = ("highest", "tf32")


def check_precision(value, name: str = "precision") -> str:
    """The precision named by `value` (any case), or a TypeError/ValueError naming `name`."""
    if not isinstance(value, str):
        raise TypeError(f"{name}={value!r} is not allowed: expected None or one of {list(PRECISIONS)}")
    if value.lower() not in PRECISIONS:
        raise ValueError(f"{name}={value!r} is not allowed: expected None or one of {list(PRECISIONS)} "
                         f"(any case)")
    return value.lower()


def resolve_precision(precision: Optional[str], dtype) -> str:
    """The precision a call with inputs of `dtype` runs at: the argument, or the process default
    (gpuconv.settings.precision) when it is None; "tf32" applies to float32 only."""
    from . import config
    explicit = precision is not None
    value = check_precision(precision) if explicit else config.settings.precision
    if value == "tf32" and np.dtype(dtype) == np.float64:
        if explicit:
            raise ValueError("precision='tf32' is not allowed for float64 inputs: TF32 keeps 10 of float64's 52 "
                             "mantissa bits; expected None or 'highest' (or convert the inputs to float32)")
        return "highest"
    return value if np.dtype(dtype) == np.float32 else "highest"
