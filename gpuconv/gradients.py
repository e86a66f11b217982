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
With stride 1 the input gradient is also a forward convolution ("forward-conv", see its class), which auto
takes where the numpy backend runs that convolution faster than the per-tap GEMMs.

backend= / algorithm= work as for conv2d: "auto" runs CuPy arrays on the cupy backend and everything else
on numpy; the CUDA backends' algorithms are in backends/cuda/gradients.py. The result has the array type
of out_backprop (NumPy or CuPy).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import config
from .api import _as_array, _is_cupy, _like
from .arg_types import IntOrInts, Padding
from .backends import check_backend_name, get_backend, unusable_reason
from .backends.base import Algorithm, pick_first
from .backends.numpy.ieee import ieee as _ieee
from .backends.numpy.slabs import nhwc_view, taps as _taps
from .chunks import output_blocks
from .dtypes import accumulator
from .problem import ConvProblem, parse_problem


class _NumpyGradient(Algorithm):
    def __init__(self, which: str):
        self.which = which
        self.name = "gemm"
        self.summary = ("per filter tap, one GEMM per block of output pixels within the NumPy workspace "
                        + ("(dy @ w^T added into dx)" if which == "input" else "(x^T @ dy added into dw)"))

    def run(self, p: ConvProblem, a: np.ndarray, dy: np.ndarray) -> np.ndarray:
        dy = dy.astype(p.dtype, copy=False)
        if self.which == "input":
            return _backprop_input(p, np.ascontiguousarray(a, p.dtype), dy)
        return _backprop_filter(p, a.astype(p.dtype, copy=False), dy)


class _ForwardConvInputGradient(Algorithm):
    """With stride 1, dx is itself a forward convolution: of dy with the filters flipped in space and their
    channels swapped within each group (w'[kh, kw, k, g*CG + c] = w[KH-1-kh, KW-1-kw, c, g*KG + k]), the
    same dilation, and padding (KH-1)*DH - PT above, (KH-1)*DH - PB below (likewise across), so that the
    numpy backend's own conv2d algorithms (Winograd, pointwise, GEMM with its batch split) compute it."""
    name = "forward-conv"
    summary = ("stride 1, where the numpy backend would run that forward convolution as Winograd, pointwise or "
               "depthwise: the forward convolution of dy with the flipped, channel-swapped filters")

    @staticmethod
    def pads(p: ConvProblem) -> tuple[int, int, int, int]:
        eh, ew = (p.KH - 1) * p.DH, (p.KW - 1) * p.DW
        return eh - p.PT, eh - p.PB, ew - p.PL, ew - p.PR

    @classmethod
    def padding(cls, p: ConvProblem) -> list:
        pt, pb, pl, pr = cls.pads(p)
        spatial = [[pt, pb], [pl, pr]]
        return [[0, 0]] + spatial + [[0, 0]] if p.layout == "NHWC" else [[0, 0], [0, 0]] + spatial

    def why_not(self, p: ConvProblem) -> Optional[str]:
        if (p.SH, p.SW) != (1, 1):
            return f"strides ({p.SH}, {p.SW}): only stride 1 makes the input gradient a forward convolution"
        if min(self.pads(p)) < 0:
            return (f"padding ({p.PT}, {p.PB}, {p.PL}, {p.PR}) beyond the dilated filter's extent "
                    f"({(p.KH - 1) * p.DH}, {(p.KW - 1) * p.DW}) would need negative padding")
        return None

    def slower(self, p: ConvProblem) -> Optional[str]:
        """Why auto prefers the per-tap GEMMs for p (None: this is faster)."""
        why = self.why_not(p) or ("nothing to compute" if p.is_empty else None)
        if why is not None:
            return why
        dy_shape = p.output_shape if p.layout == "NHWC" else (p.N, p.K, p.OH, p.OW)
        fwd = parse_problem(dy_shape, p.dtype, (p.KH, p.KW, p.KG, p.C), p.dtype, 1, self.padding(p), p.layout,
                            (p.DH, p.DW))[0]
        # measured (bench layers, batch 8, 2-core AVX2 host): through Winograd, pointwise or depthwise
        # 0.4-0.8x the per-tap GEMMs' time; through im2col + GEMM 1.1-3.4x (the im2col copy and the
        # flipped filters' copy, which the per-tap GEMMs do without)
        chosen = get_backend("numpy").choose(fwd).name
        if chosen == "gemm":
            return ("its forward convolution would run as im2col + GEMM, slower than the per-tap GEMMs "
                    "(no im2col copy)")
        if chosen == "winograd" and p.CG < 16:
            # the seed case's input gradient: Winograd with 3 output channels, 3.3x the per-tap GEMMs
            return f"Winograd with {p.CG} output channels per group is slower than the per-tap GEMMs"
        return None

    def run(self, p: ConvProblem, w: np.ndarray, dy: np.ndarray) -> np.ndarray:
        from .api import conv2d
        wf = (w.reshape(p.KH, p.KW, p.CG, p.G, p.KG)[::-1, ::-1].transpose(0, 1, 4, 3, 2)
              .reshape(p.KH, p.KW, p.KG, p.C))
        return conv2d(dy, np.ascontiguousarray(wf, p.dtype), 1, self.padding(p), p.layout, (p.DH, p.DW),
                      backend="numpy")


NUMPY_AUTO_RULE = ("input: forward-conv for stride 1 where the numpy backend would run that convolution as "
                   "Winograd (with >= 16 channels per group), pointwise or depthwise, else gemm; filter: gemm")
_NUMPY_GRADIENTS = {"input": {"forward-conv": _ForwardConvInputGradient(), "gemm": _NumpyGradient("input")},
                    "filter": {"gemm": _NumpyGradient("filter")}}


def gradient_algorithms(backend: str, which: str) -> dict[str, Algorithm]:
    """The algorithms of backend `backend` for the "input" or "filter" gradient."""
    check_backend_name(backend, " for gradient_algorithms()")
    if which not in _NUMPY_GRADIENTS:
        raise ValueError(f"which={which!r} is not allowed: expected 'input' or 'filter'")
    return dict(_NUMPY_GRADIENTS[which]) if backend == "numpy" else get_backend(backend).gradient_algorithms(which)


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
        if backend != "numpy":
            return backend, pick_first(list(algos.values()), p, get_backend(backend).gradient_auto_rule(which))
        order = [a for a in algos.values() if getattr(a, "slower", lambda p: None)(p) is None]
        return backend, pick_first(order, p, NUMPY_AUTO_RULE)
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
            if p.CG == 1:   # depthwise: per channel a dot product over the pixels (a batched matmul of 1x1
                # results would loop in NumPy's slow path), one einsum pass over the views
                xs = xv[images, rows, cols].astype(ct, copy=False)
                dw[kh, kw, :, 0] += np.einsum("nhwg,nhwgk->gk", xs, g.reshape(g.shape[:3] + (p.G, p.KG)))
                continue
            m = int(np.prod(g.shape[:3]))
            xs = xv[images, rows, cols].astype(ct, copy=False).reshape(m, p.G, p.CG).transpose(1, 2, 0)  # [G, CG, m]
            dw[kh, kw] += np.matmul(xs, g.reshape(m, p.G, p.KG).transpose(1, 0, 2))                     # [G, m, KG]
    return dw.transpose(0, 1, 3, 2, 4).reshape(p.KH, p.KW, p.CG, p.K).astype(p.dtype)


def conv2d_backprop_input(input_sizes, filters, out_backprop, strides: IntOrInts = 1, padding: Padding = "VALID",
                          data_format: str = "NHWC", dilations: Optional[IntOrInts] = None, *, backend: str = "auto",
                          algorithm: str = "auto") -> Any:  # out_backprop's array type
    """dL/d(input) of conv2d(input, filters, ...) for the upstream gradient out_backprop, as
    tf.compat.v1.nn.conv2d_backprop_input: input_sizes is the input's shape (rank >= 4, in data_format).
    backend, algorithm: as for conv2d (gradient_algorithms(backend, "input") lists the algorithms)."""
    w = _as_array("filters", filters)
    dy = _as_array("out_backprop", out_backprop, like=w)
    x_shape = _sizes("input_sizes", input_sizes)
    p, _ = _problem(x_shape, w.shape, w.dtype, dy, strides, padding, data_format, dilations)
    return _gradient("input", backend, algorithm, p, w, dy, x_shape)


def conv2d_backprop_filter(input, filter_sizes, out_backprop, strides: IntOrInts = 1, padding: Padding = "VALID",
                           data_format: str = "NHWC", dilations: Optional[IntOrInts] = None, *, backend: str = "auto",
                           algorithm: str = "auto") -> Any:
    """dL/d(filters) of conv2d(input, filters, ...) for the upstream gradient out_backprop, as
    tf.compat.v1.nn.conv2d_backprop_filter: filter_sizes is the filters' shape [KH, KW, C / G, K].
    backend, algorithm: as for conv2d (gradient_algorithms(backend, "filter") lists the algorithms)."""
    x = _as_array("input", input)
    dy = _as_array("out_backprop", out_backprop, like=x)
    w_shape = _sizes("filter_sizes", filter_sizes, rank=4)
    p, _ = _problem(x.shape, w_shape, x.dtype, dy, strides, padding, data_format, dilations)
    return _gradient("filter", backend, algorithm, p, x, dy, w_shape)


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
    x = _as_array("input", input)
    w = _as_array("filters", filters, like=x)
    return (conv2d_backprop_input(x.shape, w, out_backprop, strides, padding, data_format, dilations,
                                  backend=backend, algorithm=ai),
            conv2d_backprop_filter(x, w.shape, out_backprop, strides, padding, data_format, dilations,
                                   backend=backend, algorithm=af))
