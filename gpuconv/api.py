"""gpuconv.conv2d: tf.nn.conv2d semantics on any backend."""
from __future__ import annotations

import contextlib
from typing import Any, Optional, overload

import numpy as np

from . import config
from .arg_types import IntOrInts, NumpyInput, Padding
from .backends import check_backend_name, get_backend, unusable_reason
from .backends.cuda.cupy_backend import device_scope
from .dtypes import SUPPORTED
from .interop import Call
from .nonfinite import add_nonfinite_terms, split_filters
from .precision import resolve_precision
from .problem import parse_problem


def _is_cupy(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def _like(a, ref):
    """`a` in the array module of `ref` (NumPy or CuPy)."""
    if _is_cupy(ref) and not _is_cupy(a):
        import cupy
        return cupy.asarray(a)
    return a.get() if _is_cupy(a) and not _is_cupy(ref) else a


def _holds_numpy_values(a) -> bool:
    """Whether nested lists/tuples hold NumPy arrays or scalars (whose dtype the caller chose)."""
    stack = [a]
    while stack:
        v = stack.pop()
        if isinstance(v, (np.ndarray, np.generic)) or _is_cupy(v):
            return True
        if isinstance(v, (list, tuple)):
            stack.extend(v)
    return False


def _as_array(name: str, a, like=None):
    """Arrays as they are; nested lists of Python floats or ints as float32 (as in TF and PyTorch), or in
    the dtype of `like`, the other argument's array, when gpuconv supports that dtype (as TF converts a
    filters list to the input's dtype): a list next to a float16 array makes neither refused nor promoted."""
    if isinstance(a, np.ndarray) or _is_cupy(a):
        return a
    try:
        arr = np.asarray(a)
    except Exception as e:
        raise TypeError(f"{name} of type {type(a).__name__} is not allowed: expected a NumPy or CuPy array "
                        f"(or a nested list of floats)") from e
    if not isinstance(a, (list, tuple)) or arr.dtype.kind not in "iuf" or _holds_numpy_values(a):
        return arr  # array-likes and lists of NumPy values keep the dtype they have
    target = like.dtype if like is not None and like.dtype in SUPPORTED else np.float32
    return arr.astype(target)


def _resolve_backend(backend, x, p):
    """The backend for this call. Probes only the backends it may pick: a small NumPy problem never
    imports CuPy, and backend="numpy" never looks for a C++ compiler."""
    if not isinstance(backend, str):
        raise TypeError(f"backend={backend!r} is not allowed: expected a backend name string")
    check_backend_name(backend, auto=True)
    if backend == "auto":
        if _is_cupy(x):
            why = unusable_reason("cupy")
            if why is not None:
                raise ValueError(f"input is a CuPy array but the cupy backend is not usable: {why}")
            return get_backend("cupy")
        if p.flops >= config.settings.cuda_min_flops_for_numpy_inputs and unusable_reason("cupy") is None:
            return get_backend("cupy")
        return get_backend("numpy")
    why = unusable_reason(backend)
    if why is not None:
        raise ValueError(f"backend={backend!r} is not usable on this host: {why}")
    return get_backend(backend)


@overload
def conv2d(input: NumpyInput, filters: NumpyInput, strides: IntOrInts = 1, padding: Padding = "VALID",
           data_format: str = "NHWC", dilations: Optional[IntOrInts] = None, *, backend: str = "auto",
           algorithm: str = "auto", out: Optional[np.ndarray] = None, precision: Optional[str] = None,
           autotune: Optional[bool] = None) -> np.ndarray: ...


@overload
def conv2d(input: Any, filters: Any, strides: IntOrInts = 1, padding: Padding = "VALID",
           data_format: str = "NHWC", dilations: Optional[IntOrInts] = None, *, backend: str = "auto",
           algorithm: str = "auto", out: Any = None, precision: Optional[str] = None,
           autotune: Optional[bool] = None) -> Any: ...  # CuPy, PyTorch, JAX, ... (gpuconv.interop)


def conv2d(input, filters, strides=1, padding="VALID", data_format="NHWC", dilations=None, *,
           backend="auto", algorithm="auto", out=None, precision=None, autotune=None):
    """2-D convolution with the semantics of tf.nn.conv2d.

    input: [*batch, H, W, C] (NHWC) or [*batch, C, H, W] (NCHW); any leading batch shape.
    filters: [KH, KW, C / G, K] (HWIO); C a multiple G of the filters' in-channels means G groups.
    strides, dilations: int or list of 1, 2 or 4 ints. padding: "VALID", "SAME" or explicit pairs.
    backend: "auto", "numpy", "cupy" or "emulator"; algorithm: "auto" or one of
    gpuconv.algorithms(backend). Returns the array type of `input`, in its dtype and layout. Nested lists
    of Python numbers become float32, or the other argument's float dtype when that one is an array.
    Arrays with __dlpack__ or __cuda_array_interface__ are used in place (gpuconv.interop); `out`, an
    array of the result's shape and dtype, receives the result and is returned. precision: None (the
    process default, gpuconv.settings.precision: "highest" unless GPUCONV_PRECISION says otherwise),
    "highest" (exact float32) or "tf32" (float32 inputs may run on tensor cores as TF32; gpuconv.precision).
    autotune: with algorithm="auto" on a CUDA backend, run the autotuner's cached winner for this
    problem, tuning it first when the cache has none (None: GPUCONV_AUTOTUNE, off by default).
    """
    call = Call.enter(input, filters, out)  # foreign arrays in, the caller's type (or out) back
    input, filters = call.input, call.filters
    x = _as_array("input", input, like=filters if isinstance(filters, np.ndarray) or _is_cupy(filters) else None)
    w = _as_array("filters", filters, like=x)
    p, batch_shape = parse_problem(x.shape, x.dtype, w.shape, w.dtype, strides, padding, data_format, dilations)
    p = p.with_(precision=resolve_precision(precision, p.dtype))
    be = _resolve_backend(backend, x, p)
    # Non-native byte order: the filters are converted (the one filter copy the workspace bound leaves
    # out); the NumPy backend converts the input block by block, within the bound, as for half types.
    if w.dtype != p.dtype:
        w = w.astype(p.dtype)
    if x.dtype != p.dtype and be.name != "numpy":
        x = x.astype(p.dtype)
    if autotune is None:
        autotune = config.settings.autotune
    elif not isinstance(autotune, bool):
        raise TypeError(f"autotune={autotune!r} is not allowed: expected True, False or None (GPUCONV_AUTOTUNE)")
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm={algorithm!r} is not allowed: expected 'auto' or one of "
                        f"{sorted(be.algorithms())}")
    if algorithm != "auto":
        algos = be.algorithms()
        if algorithm not in algos:
            raise ValueError(f"algorithm={algorithm!r} is not allowed for backend {be.name!r}: expected 'auto' "
                             f"or one of {sorted(algos)}")
        why = algos[algorithm].why_not(p)
        if why is not None:
            raise ValueError(f"algorithm={algorithm!r} cannot run this problem ({p.describe()}): {why}")
    if be.name != "cupy":
        x, w = (a.get() if _is_cupy(a) else a for a in (x, w))
    x4 = x.reshape((p.N,) + tuple(x.shape[-3:]))
    # on the inputs' GPU, not the current one; inputs on two GPUs are refused
    with device_scope(input=x, filters=w) if be.name == "cupy" else contextlib.nullcontext():
        if be.nonfinite_on_device:
            if autotune and algorithm == "auto" and not p.is_empty:
                from .tuning import tuned_algorithm
                algorithm = tuned_algorithm(be, p)
            y = be.run(p, x4, w, algorithm)
        else:
            w_finite, bad = split_filters(w)
            y = be.run(p, x4, w_finite, algorithm)
            if len(bad) and not p.is_empty:
                add_nonfinite_terms(p, x4, w, y, bad)
    return call.result(_like(y.reshape(tuple(batch_shape) + tuple(y.shape[1:])), x))  # the caller's array type
