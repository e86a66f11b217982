"""The two approaches of the seed articles, rewritten as benchmark baselines for any ConvProblem.

The articles only treat stride 1, VALID, one group; both functions here keep the articles' idea and extend
it the obvious way so that every layer of the suite can be timed:

    shift_and_matmul  one GEMM per filter tap: the input window shifted by (kh, kw) times the tap's
                      [C, K] filter slice, accumulated into the output (explicit zero padding first;
                      strides and dilations as strided views; one GEMM per tap and group).
    per_pixel         the seven-deep Python loop (image, output row, output column, filter, tap row,
                      tap column, input channel) over NumPy scalars, one multiply-add per iteration.
                      It is far too slow for whole layers, so it computes a chosen number of output
                      pixels of image 0 and the benchmark extrapolates.

Both accumulate in gpuconv's accumulator type (float32 for half types, else the input type).
"""
from __future__ import annotations

import numpy as np

from gpuconv.dtypes import accumulator
from gpuconv.problem import ConvProblem


def shift_and_matmul(x: np.ndarray, w: np.ndarray, p: ConvProblem) -> np.ndarray:
    """x NHWC, w HWIO; returns the NHWC output in p.dtype."""
    ct = accumulator(p.dtype)
    xp = np.pad(x.astype(ct, copy=False), ((0, 0), (p.PT, p.PB), (p.PL, p.PR), (0, 0)))
    wc = w.astype(ct, copy=False)
    out = np.zeros((p.N, p.OH, p.OW, p.K), ct)
    for kh in range(p.KH):
        h0 = kh * p.DH
        for kw in range(p.KW):
            w0 = kw * p.DW
            # The input pixels this tap meets, one per output pixel: a strided view, no copy.
            window = xp[:, h0:h0 + (p.OH - 1) * p.SH + 1:p.SH, w0:w0 + (p.OW - 1) * p.SW + 1:p.SW, :]
            for g in range(p.G):
                out[..., g * p.KG:(g + 1) * p.KG] += (window[..., g * p.CG:(g + 1) * p.CG]
                                                      @ wc[kh, kw, :, g * p.KG:(g + 1) * p.KG])
    return out.astype(p.dtype, copy=False)


def per_pixel(x: np.ndarray, w: np.ndarray, p: ConvProblem, first: int, count: int) -> np.ndarray:
    """Output pixels first .. first+count-1 of image 0 (row-major over (oh, ow)): shape [count, K], p.dtype."""
    if not (0 <= first and 1 <= count and first + count <= p.OH * p.OW):
        raise ValueError(f"first={first!r}, count={count!r} are not allowed: expected 0 <= first, 1 <= count, "
                         f"first + count <= OH*OW = {p.OH * p.OW}")
    ct = accumulator(p.dtype)
    xc, wc = x.astype(ct, copy=False), w.astype(ct, copy=False)
    out = np.zeros((count, p.K), ct)
    for n in range(1):                                    # image 0 only; the caller extrapolates to N
        for oh in range(first // p.OW, (first + count - 1) // p.OW + 1):
            for ow in range(p.OW):
                i = oh * p.OW + ow - first
                if not 0 <= i < count:
                    continue
                for k in range(p.K):
                    g = k // p.KG
                    acc = ct.type(0)
                    for kh in range(p.KH):
                        ih = oh * p.SH - p.PT + kh * p.DH
                        if not 0 <= ih < p.H:
                            continue                      # zero padding contributes nothing
                        for kw in range(p.KW):
                            iw = ow * p.SW - p.PL + kw * p.DW
                            if not 0 <= iw < p.W:
                                continue
                            for c in range(p.CG):
                                acc += xc[n, ih, iw, g * p.CG + c] * wc[kh, kw, c, k]
                    out[i, k] = acc
    return out.astype(p.dtype, copy=False)


def _valid_taps(size: int, out: int, k: int, s: int, d: int, pad: int) -> np.ndarray:
    """For each output row (or column): how many of the k filter taps fall inside the input."""
    pos = np.arange(out)[:, None] * s - pad + np.arange(k)[None, :] * d
    return ((pos >= 0) & (pos < size)).sum(axis=1)


def multiply_adds(p: ConvProblem, first: int | None = None, count: int | None = None) -> int:
    """Multiply-adds the per-pixel loop executes (padding taps skipped): for the whole problem, or for
    output pixels first .. first+count-1 of one image."""
    th = _valid_taps(p.H, p.OH, p.KH, p.SH, p.DH, p.PT)
    tw = _valid_taps(p.W, p.OW, p.KW, p.SW, p.DW, p.PL)
    taps = np.outer(th, tw).ravel()                       # valid taps per output pixel of one image
    if first is None:
        return int(p.N * taps.sum()) * p.CG * p.K
    return int(taps[first:first + count].sum()) * p.CG * p.K


def per_pixel_window(p: ConvProblem, budget_macs: int) -> tuple[int, int]:
    """(first, count): about `budget_macs` multiply-adds' worth of output pixels (at least one), taken
    from the middle of image 0 so that the sample is not dominated by the cheaper border pixels."""
    per_pixel_macs = max(1, p.K * p.KH * p.KW * p.CG)
    count = int(min(p.OH * p.OW, max(1, budget_macs // per_pixel_macs)))
    first = min((p.OH // 2) * p.OW, p.OH * p.OW - count)
    return first, count
