"""Views and copies of the input that an output block reads: NHWC views, filter taps' slices, and
zero-padded input slabs."""
from __future__ import annotations

import numpy as np

from ...chunks import valid_range
from ...problem import ConvProblem


def nhwc_view(a: np.ndarray, layout: str) -> np.ndarray:
    return a if layout == "NHWC" else a.transpose(0, 2, 3, 1)


def group_filters(w: np.ndarray, p: ConvProblem, dtype) -> np.ndarray:
    """HWIO filters as G stacked [R, KG] matrices (R = KH*KW*CG in (kh, kw, c) order): a view when w is
    contiguous in dtype (BLAS takes each group's matrix with a row stride of K), so worker threads
    sharing one filter array copy nothing."""
    return w.astype(dtype, copy=False).reshape(p.R, p.G, p.KG).transpose(1, 0, 2)


def taps(p: ConvProblem, block):
    """For each filter tap of an output block: the valid output sub-block and the input slices it reads."""
    n0, n1, oh0, oh1, ow0, ow1 = block
    for kh in range(p.KH):
        off_h = kh * p.DH - p.PT
        a, b = valid_range(oh0, oh1, p.SH, off_h, p.H)
        for kw in range(p.KW):
            off_w = kw * p.DW - p.PL
            c, d = valid_range(ow0, ow1, p.SW, off_w, p.W)
            rows = slice(a * p.SH + off_h, (b - 1) * p.SH + off_h + 1, p.SH) if b > a else None
            cols = slice(c * p.SW + off_w, (d - 1) * p.SW + off_w + 1, p.SW) if d > c else None
            yield kh, kw, (a - oh0, b - oh0), (c - ow0, d - ow0), rows, cols


def covers(tap, block) -> bool:
    """Whether a tap (from taps()) reads inside the image for every output pixel of the block."""
    _, _, (a, b), (c, d), _, _ = tap
    return a == 0 and b == block[3] - block[2] and c == 0 and d == block[5] - block[4]


def tap_view(p: ConvProblem, slab: np.ndarray, shape: tuple) -> np.ndarray:
    """The read-only [nb, hb, wb, KH, KW, C] view of a block's input slab (from input_slab): for output pixel
    (n, h, w) of the block, the input its tap (kh, kw) reads. shape: the block's (nb, hb, wb)."""
    sn, sh, sw, sc = slab.strides
    return np.lib.stride_tricks.as_strided(
        slab, tuple(shape) + (p.KH, p.KW, slab.shape[3]), (sn, p.SH * sh, p.SW * sw, p.DH * sh, p.DW * sw, sc),
        writeable=False)


def row_tap_view(p: ConvProblem, slab: np.ndarray, shape: tuple):
    """The read-only [nb, hb, KH, KW, wb*C] view of a block's input slab in which each output row's
    (w, c) values are one contiguous run per tap: for depthwise layers without a channel multiplier at
    column stride 1, so that einsum's inner loop runs over wb*C values instead of C. None where the
    layer or the slab's layout does not allow it. shape: the block's (nb, hb, wb)."""
    sn, sh, sw, sc = slab.strides
    if p.KG != 1 or p.SW != 1 or not sw == p.C * sc == p.C * slab.itemsize:
        return None
    nb, hb, wb = shape
    return np.lib.stride_tricks.as_strided(
        slab, (nb, hb, p.KH, p.KW, wb * p.C), (sn, p.SH * sh, p.DH * sh, p.DW * sw, sc), writeable=False)


def input_slab(p: ConvProblem, xv, block, ct, slab_buf):
    """The input pixels an output block reads, zero outside the image: [nb, hs, ws, C] in NHWC and dtype
    ct. A view of the input when the block reads no padding and no conversion is needed; else a copy
    in slab_buf (grown when too small). Returns (slab, slab_buf)."""
    n0, n1, oh0, oh1, ow0, ow1 = block
    h0, w0 = oh0 * p.SH - p.PT, ow0 * p.SW - p.PL
    hs = (oh1 - oh0 - 1) * p.SH + (p.KH - 1) * p.DH + 1
    ws = (ow1 - ow0 - 1) * p.SW + (p.KW - 1) * p.DW + 1
    inside = h0 >= 0 and w0 >= 0 and h0 + hs <= p.H and w0 + ws <= p.W
    if inside and xv.dtype == ct and xv.strides[3] == xv.itemsize:
        return xv[n0:n1, h0:h0 + hs, w0:w0 + ws], slab_buf
    C = xv.shape[3]  # p.C, or a channel slice of it (Winograd's filter blocks)
    need = (n1 - n0) * hs * ws * C
    if slab_buf is None or slab_buf.size < need:
        slab_buf = np.empty(need, ct)
    slab = slab_buf[:need].reshape(n1 - n0, hs, ws, C)
    a0, a1 = max(h0, 0), min(h0 + hs, p.H)
    b0, b1 = max(w0, 0), min(w0 + ws, p.W)
    if not inside:
        slab.fill(0)
    if a1 > a0 and b1 > b0:
        slab[:, a0 - h0:a1 - h0, b0 - w0:b1 - w0] = xv[n0:n1, a0:a1, b0:b1]
    return slab, slab_buf
