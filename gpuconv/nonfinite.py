"""Non-finite filter values, with TensorFlow's meaning.

In tf.nn.conv2d a filter tap that falls on padding adds no term to the sum; it is not 0 * w. So a
NaN or Inf filter value reaches exactly the outputs where its tap reads an input pixel. GEMM-based
and Winograd algorithms multiply the padding's zeros (0 * Inf = NaN), so conv2d runs every backend
on the filters with non-finite values replaced by 0 and then adds each non-finite value's own terms
(x * w over the outputs its tap reaches) — a few array operations, and only when filters hold any.
"""
from __future__ import annotations

import numpy as np

from .chunks import valid_range
from .problem import ConvProblem


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def split_filters(w):
    """(filters with non-finite values zeroed, host array of those values' [kh, kw, c, k] indices)."""
    w_host = _host(w)
    finite = np.isfinite(w_host)
    if finite.all():  # the common case: one cheap pass, no index search
        return w, np.empty((0, 4), np.intp)
    bad = np.argwhere(~finite)
    if isinstance(w, np.ndarray):
        xp = np
    else:
        import cupy as xp
    return xp.where(xp.isfinite(w), w, xp.zeros((), w.dtype)), bad


def add_nonfinite_terms(p: ConvProblem, x, w, y, bad) -> None:
    """y += the terms of each non-finite filter value (in place, any array module)."""
    xv = x if p.layout == "NHWC" else x.transpose(0, 2, 3, 1)
    yv = y if p.layout == "NHWC" else y.transpose(0, 2, 3, 1)
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
