"""The float64 reference convolution: the definition, written to be read, not to be fast.

    y[n, oh, ow, k] = sum over kh, kw, c in group(k) of
                      x[n, oh*SH - PT + kh*DH, ow*SW - PL + kw*DW, c] * w[kh, kw, c - g*CG, k]

where a tap that falls outside the image (on padding) adds no term — TensorFlow's meaning, which
matters for non-finite filters (it is not 0 * w). Vectorised only over (n, oh, ow) and channels, one
filter tap and one group at a time, so every term of the sum is visible in the code.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .interop import to_host
from .problem import ConvProblem


def conv2d_reference(x: npt.ArrayLike, w: npt.ArrayLike, p: ConvProblem) -> np.ndarray:
    """float64 result in p.layout; x is [N, ...] in p.layout, w is HWIO."""
    x = to_host("x", x).astype(np.float64)  # NumPy, CuPy, or any array with __dlpack__
    w = to_host("w", w).astype(np.float64)
    if p.layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    y = np.zeros((p.N, p.OH, p.OW, p.K))
    for kh in range(p.KH):
        ih = np.arange(p.OH) * p.SH - p.PT + kh * p.DH
        ok_h = (ih >= 0) & (ih < p.H)
        for kw in range(p.KW):
            iw = np.arange(p.OW) * p.SW - p.PL + kw * p.DW
            ok_w = (iw >= 0) & (iw < p.W)
            if not ok_h.any() or not ok_w.any():
                continue
            patch = x[:, ih[ok_h]][:, :, iw[ok_w]]            # the input pixels this tap reads
            rows, cols = np.flatnonzero(ok_h), np.flatnonzero(ok_w)
            for g in range(p.G):
                with np.errstate(invalid="ignore"):   # Inf - Inf, 0 * Inf: NaN is the IEEE answer
                    y[:, rows[:, None], cols[None, :], g * p.KG:(g + 1) * p.KG] += (
                        patch[..., g * p.CG:(g + 1) * p.CG] @ w[kh, kw, :, g * p.KG:(g + 1) * p.KG])
    return y.transpose(0, 3, 1, 2) if p.layout == "NCHW" else y


def abs_conv_bound(x, w, p: ConvProblem) -> np.ndarray:
    """(|x| conv |w|): the scale that rounding errors of the sum are proportional to."""
    x, w = (np.abs(to_host(n, a).astype(np.float64)) for n, a in (("x", x), ("w", w)))
    return conv2d_reference(x, w, p)
