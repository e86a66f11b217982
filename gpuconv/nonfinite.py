"""Non-finite filter values, with TensorFlow's meaning and IEEE sums.

In tf.nn.conv2d a filter tap that falls on padding adds no term to the sum; it is not 0 * w. So a
NaN or Inf filter value reaches exactly the outputs where its tap reads an input pixel. GEMM-based
and Winograd algorithms multiply the padding's zeros (0 * Inf = NaN), so conv2d runs every backend
on the filters with non-finite values replaced by 0 and then adds each non-finite value's own terms
(x * w over the outputs its tap reaches) -- a few array operations, and only when filters hold any.

Where such a tap reads a non-finite input the zeroed GEMM already summed Inf * 0 = NaN, which is no
term of the definition: those outputs (few: an Inf input under an Inf tap) are recomputed from the
definition instead, so every output is what IEEE arithmetic gives for the exact sum of its terms.

This module does it on the host, for the NumPy backend. The CUDA backends do the same on the device
(kernels/nonfinite_zero.cu and nonfinite_fixup.cu), so that a GPU call never reads device memory.
"""
from __future__ import annotations

import numpy as np

from .chunks import valid_range
from .dtypes import accumulator
from .problem import ConvProblem


def all_finite(a: np.ndarray) -> bool:
    """Whether a holds no NaN or Inf, without a temporary of its size in the common case: a float64 sum
    is finite exactly when no value is NaN/Inf (an overflowing sum of huge finite values only sends us
    to the exact check)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.sum(a, dtype=np.float64))) or bool(np.isfinite(a).all())


def split_filters(w: np.ndarray):
    """(filters with non-finite values zeroed, array of those values' [kh, kw, c, k] indices)."""
    if all_finite(w):
        return w, np.empty((0, 4), np.intp)
    finite = np.isfinite(w)
    return np.where(finite, w, np.zeros((), w.dtype)), np.argwhere(~finite)


def add_nonfinite_terms(p: ConvProblem, x, w, y, bad) -> None:
    """y += the terms of each non-finite filter value (in place, NumPy arrays); outputs where such a
    value meets a non-finite input are recomputed from the definition."""
    with np.errstate(all="ignore"):                    # 0 * Inf = NaN is the IEEE answer, not a warning
        _add_terms(p, x, w, y, bad)


def _add_terms(p: ConvProblem, x, w, y, bad) -> None:
    xv = x if p.layout == "NHWC" else x.transpose(0, 2, 3, 1)
    yv = y if p.layout == "NHWC" else y.transpose(0, 2, 3, 1)
    polluted = []
    for kh, kw, c, k in bad.tolist():
        a, b = valid_range(0, p.OH, p.SH, kh * p.DH - p.PT, p.H)
        l, r = valid_range(0, p.OW, p.SW, kw * p.DW - p.PL, p.W)
        if a == b or l == r:
            continue
        ih = kh * p.DH - p.PT
        iw = kw * p.DW - p.PL
        channel = (k // p.KG) * p.CG + c
        src = xv[:, a * p.SH + ih:(b - 1) * p.SH + ih + 1:p.SH, l * p.SW + iw:(r - 1) * p.SW + iw + 1:p.SW, channel]
        yv[:, a:b, l:r, k] = yv[:, a:b, l:r, k] + src * w[kh, kw, c, k]
        n, oh, ow = np.nonzero(~np.isfinite(src))      # where Inf * 0 polluted the GEMM's sum
        polluted.append(((n * p.OH + oh + a) * p.OW + ow + l) * p.K + k)
    if polluted:
        flat = np.unique(np.concatenate(polluted))     # NHWC flat output indices, each once
        at = np.stack(np.unravel_index(flat, (p.N, p.OH, p.OW, p.K)), axis=1)
        if at.shape[0]:
            yv[at[:, 0], at[:, 1], at[:, 2], at[:, 3]] = _outputs_by_definition(p, xv, w, at).astype(y.dtype)


def _outputs_by_definition(p: ConvProblem, xv, w, at):
    """y[n, oh, ow, k] for the rows (n, oh, ow, k) of `at`: the sum of x * w over the taps that read an
    input pixel, in the accumulator type (NHWC input view)."""
    ct = accumulator(p.dtype)
    n, oh, ow, k = (at[:, i] for i in range(4))
    c0 = (k // p.KG) * p.CG                               # the first input channel of k's group
    total = np.zeros(at.shape[0], ct)
    for kh in range(p.KH):
        ih = oh * p.SH - p.PT + kh * p.DH
        for kw in range(p.KW):
            iw = ow * p.SW - p.PL + kw * p.DW
            inside = (ih >= 0) & (ih < p.H) & (iw >= 0) & (iw < p.W)
            if not bool(inside.any()):
                continue
            rows = np.flatnonzero(inside)
            chans = c0[rows, None] + np.arange(p.CG)
            xs = xv[n[rows, None], ih[rows, None], iw[rows, None], chans].astype(ct)
            ws = w[kh, kw][:, k[rows]].T.astype(ct)        # [rows, CG]
            total[rows] = total[rows] + (xs * ws).sum(axis=1)
    return total
