"""The two gradients of conv2d and the transposed convolution, with TensorFlow's semantics, on NumPy arrays.

For y = conv2d(x, w) and an upstream gradient dy of y's shape:
    conv2d_backprop_input(x.shape, w, dy)  = dL/dx   (tf.compat.v1.nn.conv2d_backprop_input)
    conv2d_backprop_filter(x, w.shape, dy) = dL/dw   (tf.compat.v1.nn.conv2d_backprop_filter)
    conv2d_transpose(dy, w, x.shape)       = dL/dx   (tf.nn.conv2d_transpose: the same operation)
    conv2d_grads(x, w, dy)                 = (dL/dx, dL/dw)

The algorithms: backends/numpy/gradients.py (GEMM formulations over blocks of output pixels bounded by the
NumPy workspace, as for the forward pass: col2im, im2col, per-tap GEMMs, the stride-1 input gradient as a
forward convolution, depthwise) and backends/cuda/gradients.py (the kernels of both CUDA backends).

backend= / algorithm= work as for conv2d: "auto" runs CuPy arrays on the cupy backend and everything else
on numpy; the CUDA backends' algorithms are in backends/cuda/gradients.py. Arrays of other libraries come
in through DLPack or the CUDA array interface, as for conv2d (gpuconv.interop); the result has the array
type of out_backprop (NumPy, CuPy, or the library it came from: PyTorch, JAX).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .api import _as_array, _is_cupy, _like
from .arg_types import IntOrInts, Padding
from .backends import check_backend_name, get_backend, unusable_reason
from .backends.base import Algorithm
from .backends.numpy.ieee import ieee
from .interop import Call, import_array, import_shape
from .problem import ConvProblem, parse_problem


def gradient_algorithms(backend: str, which: str) -> dict[str, Algorithm]:
    """The algorithms of backend `backend` for the "input" or "filter" gradient."""
    check_backend_name(backend, " for gradient_algorithms()")
    if which not in ("input", "filter"):
        raise ValueError(f"which={which!r} is not allowed: expected 'input' or 'filter'")
    return get_backend(backend).gradient_algorithms(which)


def _pick(which: str, backend, algorithm, p: ConvProblem, arrays) -> tuple[str, Algorithm]:
    """The backend name and the algorithm that compute one gradient, as conv2d resolves its own."""
    if not isinstance(backend, str):
        raise TypeError(f"backend={backend!r} is not allowed: expected a backend name string")
    check_backend_name(backend, auto=True)
    if backend == "auto":
        backend = "cupy" if any(_is_cupy(a) for a in arrays) else "numpy"
    why = unusable_reason(backend)
    if why is not None:
        raise ValueError(f"backend={backend!r} is not usable on this host: {why}")
    algos = gradient_algorithms(backend, which)
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm={algorithm!r} is not allowed: expected 'auto' or one of {sorted(algos)}")
    if algorithm == "auto":
        return backend, get_backend(backend).choose_gradient(which, p)
    if algorithm not in algos:
        raise ValueError(f"algorithm={algorithm!r} is not allowed for the {which} gradient on backend "
                         f"{backend!r}: expected 'auto' or one of {sorted(algos)}")
    why = algos[algorithm].why_not(p)
    if why is not None:
        raise ValueError(f"algorithm={algorithm!r} cannot run this problem ({p.describe()}): {why}")
    return backend, algos[algorithm]


def _gradient(which: str, backend, algorithm, p: ConvProblem, a, dy, shape: tuple):
    """One gradient of the result's `shape`, in out_backprop's array type."""
    name, algo = _pick(which, backend, algorithm, p, (a, dy))
    if p.is_empty:
        return _like(np.zeros(shape, p.dtype), dy)
    a4 = a.reshape((p.N,) + tuple(a.shape[-3:])) if which == "filter" else a
    dy4 = dy.reshape((p.N,) + tuple(dy.shape[-3:]))
    if name == "numpy":
        a4, dy4 = (v.get() if _is_cupy(v) else v for v in (a4, dy4))
        with ieee():                      # also around the result's rounding to a half type
            result = algo.run(p, a4, dy4)
    else:
        be = get_backend(name)
        if name != "cupy":
            a4, dy4 = (v.get() if _is_cupy(v) else v for v in (a4, dy4))
        a4, dy4 = (v if v.dtype == p.dtype else v.astype(p.dtype) for v in (a4, dy4))  # non-native byte order
        from .backends.cuda.cupy_backend import device_scope
        with device_scope(**({"filters" if which == "input" else "input": a4, "out_backprop": dy4})):
            out_shape = p.input_shape if which == "input" else p.filter_shape
            result = be.run_gradient(algo, p, a4, dy4, out_shape)
    return _like(result, dy).reshape(shape)


def _sizes(name: str, sizes, rank: Optional[int] = None) -> tuple[int, ...]:
    """A shape given as a list, tuple or 1-D integer array of non-negative ints."""
    sizes = import_shape(name, sizes)
    vals = sizes.tolist() if isinstance(sizes, np.ndarray) and sizes.ndim == 1 else sizes
    ok = isinstance(vals, (list, tuple)) and (rank is None or len(vals) == rank) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in vals)
    if not ok:
        want = f"{rank} non-negative ints" if rank else "a shape: a list of non-negative ints"
        raise ValueError(f"{name}={sizes!r} is not allowed: expected {want}")
    return tuple(int(v) for v in vals)


def _problem(x_shape, w_shape, dtype, dy, strides, padding, data_format, dilations) -> tuple[ConvProblem, tuple]:
    p, batch = parse_problem(x_shape, dtype, w_shape, dtype, strides, padding, data_format, dilations)
    expected = tuple(batch) + tuple(p.output_shape[1:])
    if tuple(dy.shape) != expected:
        raise ValueError(f"out_backprop has shape {tuple(dy.shape)}; expected {expected}, the output shape of "
                         f"this convolution ({p.describe()})")
    if dy.dtype != p.dtype:
        raise TypeError(f"out_backprop has dtype {dy.dtype}; expected {p.dtype}, the dtype of the other operand")
    return p, batch


def conv2d_backprop_input(input_sizes, filters, out_backprop, strides: IntOrInts = 1, padding: Padding = "VALID",
                          data_format: str = "NHWC", dilations: Optional[IntOrInts] = None, *, backend: str = "auto",
                          algorithm: str = "auto") -> Any:  # out_backprop's array type
    """dL/d(input) of conv2d(input, filters, ...) for the upstream gradient out_backprop, as
    tf.compat.v1.nn.conv2d_backprop_input: input_sizes is the input's shape (rank >= 4, in data_format).
    backend, algorithm: as for conv2d (gradient_algorithms(backend, "input") lists the algorithms)."""
    call = Call.enter(out_backprop, filters, names=("out_backprop", "filters"))  # dy's library back
    w = _as_array("filters", call.filters)
    dy = _as_array("out_backprop", call.input, like=w)
    x_shape = _sizes("input_sizes", input_sizes)
    p, _ = _problem(x_shape, w.shape, w.dtype, dy, strides, padding, data_format, dilations)
    return call.result(_gradient("input", backend, algorithm, p, w, dy, x_shape))


def conv2d_backprop_filter(input, filter_sizes, out_backprop, strides: IntOrInts = 1, padding: Padding = "VALID",
                           data_format: str = "NHWC", dilations: Optional[IntOrInts] = None, *, backend: str = "auto",
                           algorithm: str = "auto") -> Any:
    """dL/d(filters) of conv2d(input, filters, ...) for the upstream gradient out_backprop, as
    tf.compat.v1.nn.conv2d_backprop_filter: filter_sizes is the filters' shape [KH, KW, C / G, K].
    backend, algorithm: as for conv2d (gradient_algorithms(backend, "filter") lists the algorithms)."""
    call = Call.enter(out_backprop, input, names=("out_backprop", "input"))
    x = _as_array("input", call.filters)
    dy = _as_array("out_backprop", call.input, like=x)
    w_shape = _sizes("filter_sizes", filter_sizes, rank=4)
    p, _ = _problem(x.shape, w_shape, x.dtype, dy, strides, padding, data_format, dilations)
    return call.result(_gradient("filter", backend, algorithm, p, x, dy, w_shape))


def conv2d_transpose(input, filters, output_shape, strides: IntOrInts = 1, padding: Padding = "SAME",
                     data_format: str = "NHWC", dilations: Optional[IntOrInts] = None, *, backend: str = "auto",
                     algorithm: str = "auto") -> Any:
    """tf.nn.conv2d_transpose: the gradient of conv2d with respect to its input. filters are
    [KH, KW, output channels / G, input channels] (the forward convolution's HWIO filters); output_shape is
    the result's shape, which must be one that conv2d maps back to input's shape."""
    return conv2d_backprop_input(output_shape, filters, input, strides, padding, data_format, dilations,
                                 backend=backend, algorithm=algorithm)


def conv2d_grads(input, filters, out_backprop, strides: IntOrInts = 1, padding: Padding = "VALID",
                 data_format: str = "NHWC", dilations: Optional[IntOrInts] = None, *, backend: str = "auto",
                 algorithm="auto") -> tuple[Any, Any]:
    """(dL/d(input), dL/d(filters)) of conv2d(input, filters, ...) for the upstream gradient out_backprop.
    algorithm: "auto", or a pair (input gradient's algorithm, filter gradient's algorithm)."""
    pair = algorithm if isinstance(algorithm, (tuple, list)) and len(algorithm) == 2 else None
    if pair is None and algorithm != "auto":
        raise ValueError(f"algorithm={algorithm!r} is not allowed: expected 'auto' or a pair (input gradient's "
                         f"algorithm, filter gradient's algorithm)")
    ai, af = pair or ("auto", "auto")
    # each array imported once; both results in out_backprop's library
    call = Call.enter(out_backprop, input, names=("out_backprop", "input"))
    x = _as_array("input", call.filters)
    w = _as_array("filters", import_array("filters", filters), like=x)
    dy = call.input
    return (call.result(conv2d_backprop_input(x.shape, w, dy, strides, padding, data_format, dilations,
                                              backend=backend, algorithm=ai)),
            call.result(conv2d_backprop_filter(x, w.shape, dy, strides, padding, data_format, dilations,
                                               backend=backend, algorithm=af)))
