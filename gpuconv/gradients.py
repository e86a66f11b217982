"""The two gradients of conv2d and the transposed convolution, with TensorFlow's semantics, on NumPy arrays.

For y = conv2d(x, w) and an upstream gradient dy of y's shape:
    conv2d_backprop_input(x.shape, w, dy)  = dL/dx   (tf.compat.v1.nn.conv2d_backprop_input)
    conv2d_backprop_filter(x, w.shape, dy) = dL/dw   (tf.compat.v1.nn.conv2d_backprop_filter)
    conv2d_transpose(dy, w, x.shape)       = dL/dx   (tf.nn.conv2d_transpose: the same operation)
    conv2d_grads(x, w, dy)                 = (dL/dx, dL/dw)

Both are sums over the filter taps of one GEMM each, over blocks of output pixels whose size the NumPy
workspace bound sets (as for the forward pass): for tap (kh, kw), the output pixels whose input pixel
(oh*SH + kh*DH - PT, ow*SW + kw*DW - PL) is inside the image contribute
    dx[input pixels, group g] += dy[pixels, g] @ w[kh, kw, :, g]^T        (backprop input: a scatter-add
                                                                           through a strided view; one
                                                                           tap never hits a pixel twice)
    dw[kh, kw, :, g]          += x[input pixels, g]^T @ dy[pixels, g]     (backprop filter)
batched over groups. Half types accumulate in float32 (dx and dw whole, in float32) and are rounded once.
The CUDA backends do not have these yet: CuPy arrays are refused with that reason.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import config
from .arg_types import IntOrInts, Padding
from .backends.numpy.ieee import ieee as _ieee
from .backends.numpy.slabs import nhwc_view, taps as _taps
from .chunks import output_blocks
from .dtypes import accumulator
from .problem import ConvProblem, parse_problem


def _numpy_only(name: str, *arrays) -> None:
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            raise TypeError(f"{name} of type cupy.ndarray is not allowed yet: the gradients run on the NumPy "
                            f"backend only (the CUDA kernels for them are not written); pass NumPy arrays")


def _as_numpy(name: str, a) -> np.ndarray:
    _numpy_only(name, a)
    if isinstance(a, np.ndarray):
        return a
    try:
        arr = np.asarray(a)
    except Exception as e:
        raise TypeError(f"{name} of type {type(a).__name__} is not allowed: expected a NumPy array") from e
    return arr.astype(np.float32) if isinstance(a, (list, tuple)) and arr.dtype.kind in "iuf" else arr


def _sizes(name: str, sizes, rank: Optional[int] = None) -> tuple[int, ...]:
    """A shape given as a list, tuple or 1-D integer array of non-negative ints."""
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


def _tap_slices(p: ConvProblem, dyv: np.ndarray, ct):
    """For every output block within the workspace bound (per pixel: one dy row and one input row in the
    accumulator, and their copies) and every filter tap reading inside the image: (kh, kw, images, input
    rows, input columns, the block's dy pixels of that tap in the accumulator type)."""
    per_pixel = ct.itemsize * (p.K + p.C) * 2
    for block in output_blocks(p, per_pixel, config.numpy_workspace_bytes()):
        n0, n1, oh0, oh1, ow0, ow1 = block
        for kh, kw, (a, b), (c, d), rows, cols in _taps(p, block):
            if rows is not None and cols is not None:
                g = dyv[n0:n1, oh0 + a:oh0 + b, ow0 + c:ow0 + d].astype(ct, copy=False)
                yield kh, kw, slice(n0, n1), rows, cols, g


def _backprop_input(p: ConvProblem, w: np.ndarray, dy: np.ndarray) -> np.ndarray:
    ct = accumulator(p.dtype)
    wt = w.astype(ct, copy=False).reshape(p.KH, p.KW, p.CG, p.G, p.KG).transpose(0, 1, 3, 4, 2)  # [.., G, KG, CG]
    dyv = nhwc_view(dy.reshape((p.N,) + dy.shape[-3:]), p.layout)
    dx = np.zeros((p.N, p.H, p.W, p.C), ct)
    with _ieee():
        for kh, kw, images, rows, cols, g in _tap_slices(p, dyv, ct):
            target = dx[images, rows, cols]
            if p.CG == 1 and p.KG == 1:                          # depthwise: no GEMM, a product
                target += g * wt[kh, kw, :, 0, 0]
                continue
            m = int(np.prod(g.shape[:3]))
            contrib = np.matmul(g.reshape(m, p.G, p.KG).transpose(1, 0, 2), wt[kh, kw])  # [G, m, CG]
            target += contrib.transpose(1, 0, 2).reshape(target.shape)
    if p.layout == "NHWC" and dx.dtype == p.dtype:
        return dx
    x_shape = (p.N, p.H, p.W, p.C) if p.layout == "NHWC" else (p.N, p.C, p.H, p.W)
    out = np.empty(x_shape, p.dtype)
    nhwc_view(out, p.layout)[...] = dx
    return out


def _backprop_filter(p: ConvProblem, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    ct = accumulator(p.dtype)
    xv = nhwc_view(x.reshape((p.N,) + x.shape[-3:]), p.layout)
    dyv = nhwc_view(dy.reshape((p.N,) + dy.shape[-3:]), p.layout)
    dw = np.zeros((p.KH, p.KW, p.G, p.CG, p.KG), ct)
    with _ieee():
        for kh, kw, images, rows, cols, g in _tap_slices(p, dyv, ct):
            m = int(np.prod(g.shape[:3]))
            xs = xv[images, rows, cols].astype(ct, copy=False).reshape(m, p.G, p.CG).transpose(1, 2, 0)  # [G, CG, m]
            dw[kh, kw] += np.matmul(xs, g.reshape(m, p.G, p.KG).transpose(1, 0, 2))                     # [G, m, KG]
    return dw.transpose(0, 1, 3, 2, 4).reshape(p.KH, p.KW, p.CG, p.K).astype(p.dtype)


def conv2d_backprop_input(input_sizes, filters, out_backprop, strides: IntOrInts = 1, padding: Padding = "VALID",
                          data_format: str = "NHWC", dilations: Optional[IntOrInts] = None) -> np.ndarray:
    """dL/d(input) of conv2d(input, filters, ...) for the upstream gradient out_backprop, as
    tf.compat.v1.nn.conv2d_backprop_input: input_sizes is the input's shape (rank >= 4, in data_format)."""
    w = _as_numpy("filters", filters)
    dy = _as_numpy("out_backprop", out_backprop)
    x_shape = _sizes("input_sizes", input_sizes)
    p, _ = _problem(x_shape, w.shape, w.dtype, dy, strides, padding, data_format, dilations)
    if p.is_empty:
        return np.zeros(x_shape, p.dtype)
    return _backprop_input(p, np.ascontiguousarray(w, p.dtype), dy.astype(p.dtype, copy=False)).reshape(x_shape)


def conv2d_backprop_filter(input, filter_sizes, out_backprop, strides: IntOrInts = 1, padding: Padding = "VALID",
                           data_format: str = "NHWC", dilations: Optional[IntOrInts] = None) -> np.ndarray:
    """dL/d(filters) of conv2d(input, filters, ...) for the upstream gradient out_backprop, as
    tf.compat.v1.nn.conv2d_backprop_filter: filter_sizes is the filters' shape [KH, KW, C / G, K]."""
    x = _as_numpy("input", input)
    dy = _as_numpy("out_backprop", out_backprop)
    w_shape = _sizes("filter_sizes", filter_sizes, rank=4)
    p, _ = _problem(x.shape, w_shape, x.dtype, dy, strides, padding, data_format, dilations)
    if p.is_empty:
        return np.zeros(w_shape, p.dtype)
    return _backprop_filter(p, x.astype(p.dtype, copy=False), dy.astype(p.dtype, copy=False))


def conv2d_transpose(input, filters, output_shape, strides: IntOrInts = 1, padding: Padding = "SAME",
                     data_format: str = "NHWC", dilations: Optional[IntOrInts] = None) -> np.ndarray:
    """tf.nn.conv2d_transpose: the gradient of conv2d with respect to its input. filters are
    [KH, KW, output channels / G, input channels] (the forward convolution's HWIO filters); output_shape is
    the result's shape, which must be one that conv2d maps back to input's shape."""
    return conv2d_backprop_input(output_shape, filters, input, strides, padding, data_format, dilations)


def conv2d_grads(input, filters, out_backprop, strides: IntOrInts = 1, padding: Padding = "VALID",
                 data_format: str = "NHWC", dilations: Optional[IntOrInts] = None) -> tuple[np.ndarray, np.ndarray]:
    """(dL/d(input), dL/d(filters)) of conv2d(input, filters, ...) for the upstream gradient out_backprop."""
    x = _as_numpy("input", input)
    w = _as_numpy("filters", filters)
    return (conv2d_backprop_input(x.shape, w, out_backprop, strides, padding, data_format, dilations),
            conv2d_backprop_filter(x, w.shape, out_backprop, strides, padding, data_format, dilations))
