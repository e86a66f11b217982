"""Winograd convolution F(m x m, 3 x 3) for the NumPy backend (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016).

Each m x m tile of output pixels is computed from a t x t tile of input (t = m + 2) as

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A

(per input/output channel pair, (.) elementwise), so a tile costs t*t multiplications per (c, k) instead
of 9*m*m: 2.25x fewer for F(2x2,3x3), 4x fewer for F(4x4,3x3). Summed over input channels, the t*t
elementwise products become t*t independent GEMMs [tiles, C] @ [C, K], which BLAS runs near peak.

Everything here is a matrix product or one strided copy, never a Python loop over tiles:
  1. the padded input rows of a chunk of tiles are copied into a slab (layout change, zero borders),
  2. one strided copy gathers the t*t values of every tile: D[(i, j), (tile, c)],
  3. the input transform is ONE GEMM: V = (B^T kron B^T) @ D        [t*t, tiles*C]
  4. t*t GEMMs batched by numpy.matmul:  M[p] = V[p] @ U[p]          [t*t, tiles, K]
  5. the output transform is ONE GEMM: Y = (A^T kron A^T) @ M        [m*m, tiles*K]
  6. one strided copy scatters Y into the output (cropping partial tiles).
The Kronecker products cost more multiplications than two separate 1-D passes, but as one GEMM on
cache-resident data they are faster than two memory-bound passes (measured: bench/tune_numpy.py).
The filter transform U = (G kron G) @ w is done once per call, in float64, then rounded.

Groups run as per-point GEMMs over bundles of groups: B groups at a time share one block-diagonal
[B*CG, B*KG] matrix, so small groups (ResNeXt's 4 channels) still make BLAS-sized GEMMs at the price
of B times the (cheap) elementwise-stage multiplications.

Tile size: F(2x2,3x3) for float32/float64, F(4x4,3x3) for half types on large images (tile_size()).
"""
from __future__ import annotations

from math import prod
from types import SimpleNamespace
from typing import Optional

import numpy as np

from ... import config
from ...chunks import output_blocks
from ...dtypes import accumulator
from ...problem import ConvProblem
from ..base import Algorithm
from . import threads
from .gemm import Im2colGemm
from .slabs import input_slab


def toom_cook(m: int, r: int, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transform matrices (A^T [m, n], G [n, r], B^T [n, n]) of F(m, r), n = m + r - 1, in float64.

    Built from n - 1 finite interpolation points plus the point at infinity (Toom-Cook), as the
    transpose of a linear-convolution algorithm:
      A^T[i, j] = p_j^i                         (evaluate the output polynomial; inf column = e_{m-1})
      G[j, k]   = p_j^k / prod_{l != j}(p_j - p_l)   (evaluate the filter, with the Lagrange scaling)
      B^T[j, :] = coefficients of prod_{l != j}(x - p_l)   (inf row: of prod_l (x - p_l))
    """
    pts = [float(v) for v in points]
    n = m + r - 1
    if len(pts) != n - 1 or len(set(pts)) != len(pts):
        raise ValueError(f"points={points!r}: F({m},{r}) needs {n - 1} distinct finite points")
    at = np.zeros((m, n))
    g = np.zeros((n, r))
    bt = np.zeros((n, n))
    for j, pj in enumerate(pts):
        at[:, j] = [pj ** i for i in range(m)]
        others = [pl for pl in pts if pl != pj]
        g[j] = [pj ** k / prod(pj - pl for pl in others) for k in range(r)]
        coeffs = np.polynomial.polynomial.polyfromroots(others)     # degree n - 2: pad to n
        bt[j, :len(coeffs)] = coeffs
    at[m - 1, n - 1] = 1.0
    g[n - 1, r - 1] = 1.0
    bt[n - 1] = np.polynomial.polynomial.polyfromroots(pts)
    return at, g, bt


# Interpolation points. {0, 1, -1} is the classic F(2x2,3x3). For F(4x4,3x3), {0, 1, -1, 1/2, -2} instead
# of Lavin's {0, +-1, +-2}: measured on ResNet layers (float32, against the float64 reference) it has 2.5x
# less error (Barabasz et al., "Error analysis and improving the accuracy of Winograd convolution", 2020,
# make the same observation about mixing points p and 1/p).
POINTS = {2: (0.0, 1.0, -1.0), 4: (0.0, 1.0, -1.0, 0.5, -2.0)}


def tile_size(p: ConvProblem) -> int:
    """m of F(m x m, 3x3) for problem p: the documented rule of algorithm="winograd".

    Measured on the suite's ResNet 3x3 layers (bench/tune_numpy.py, float32, max |error| against the float64
    reference divided by TF-CPU's own): F(2x2) 0.2-0.8x TF's error, F(4x4) 0.7-2.8x at C >= 64 and 7x at
    C = 3, so float32 and float64 (the types people pick for accuracy) use F(2x2). Half types compute in
    float32 and round once to a 8- or 11-bit significand, which swamps F(4x4)'s extra float32 error; they
    use F(4x4), 1.3-1.5x faster, where the output has enough tiles (>= 16x16 pixels) for its 36 GEMMs and
    2.25x larger transformed filters to pay off.
    """
    half = np.dtype(p.dtype).itemsize == 2
    return 4 if half and p.OH * p.OW >= 256 else 2


class _Transforms:
    """The transform matrices of F(m x m, 3 x 3) in one compute dtype.

    Rows of B^T are scaled so that their first non-zero is +1 (with the matching row of G scaled
    alike, which leaves every product V*U unchanged): F(2x2)'s input transform then is one add or
    subtract per row.
    """

    def __init__(self, m: int, dtype):
        at, g, bt = toom_cook(m, 3, POINTS[m])
        first = bt[np.arange(len(bt)), np.argmax(bt != 0, axis=1)]
        bt, g = bt / first[:, None], g * first[:, None]
        self.m, self.t = m, m + 2
        self.at, self.bt = at, bt
        self.bb = np.kron(bt, bt).astype(dtype)        # [t*t, t*t]  input transform
        self.aa = np.kron(at, at).astype(dtype)        # [m*m, t*t]  output transform
        self.gg = np.kron(g, g).astype(dtype)          # [t*t, 9]    filter transform
        # F(2x2)'s transforms have only +-1 entries: elementwise adds beat a 16x16 GEMM (measured 3x on
        # ResNet layers); F(4x4)'s have up to 5 non-unit entries a row, where the GEMM wins.
        self.elementwise = bool(np.all(np.isin(bt, (-1, 0, 1))) and np.all(np.isin(at, (-1, 0, 1))))


_CACHE: dict = {}


def transforms(m: int, dtype) -> _Transforms:
    key = (m, np.dtype(dtype))
    if key not in _CACHE:
        _CACHE[key] = _Transforms(m, dtype)
    return _CACHE[key]


def _combine(coefs, srcs, out):
    """out = sum_i coefs[i] * srcs[i] with elementwise ops, for coefficients mostly +-1."""
    terms = [(float(c), s) for c, s in zip(coefs, srcs) if c != 0]
    (c0, s0), rest = terms[0], terms[1:]
    if c0 == 1 and rest and rest[0][0] in (1.0, -1.0):
        (np.add if rest[0][0] == 1 else np.subtract)(s0, rest[0][1], out=out)
        rest = rest[1:]
    elif c0 == 1:
        np.copyto(out, s0)
    else:
        np.multiply(s0, c0, out=out)
    for c, s in rest:
        if c == 1:
            np.add(out, s, out=out)
        elif c == -1:
            np.subtract(out, s, out=out)
        else:
            out += c * s


def bundle_size(p: ConvProblem) -> int:
    """Groups per block-diagonal GEMM: the fewest whose bundle has >= 32 input and output channels.

    A GEMM with a 4-wide reduction or a 4-wide result runs at a few percent of BLAS peak; padding it
    to 32 with zeros costs 8x the elementwise-stage multiplications but runs about 20x faster.
    """
    for b in range(1, p.G + 1):
        if p.G % b == 0 and b * p.CG >= 32 and b * p.KG >= 32:
            return b
    return p.G


def _chunks(N: int, nth: int, ntw: int, tiles: int):
    """(n0, n1, th0, th1, tw0, tw1) blocks of about `tiles` tiles: whole images, else tile rows, else
    segments of one tile row — output_blocks' split, on the grid of tiles instead of pixels."""
    return output_blocks(SimpleNamespace(N=N, OH=nth, OW=ntw), 1, tiles)


# Tiles per chunk are chosen so that one chunk's transformed input V (t*t*tiles*C values) is about this
# many bytes: large enough for efficient GEMMs (>= a few hundred rows), small enough to stay in L2/L3
# between the stages. Measured best between 1 and 4 MiB on a 2 MiB-L2 EPYC (bench/tune_numpy.py).
CHUNK_BYTES = 2 << 20


class Winograd(Algorithm):
    name = "winograd"
    summary = ("Winograd F(2x2,3x3) (F(4x4,3x3) for half types) for 3x3 stride-1 undilated layers: "
               "16 or 36 batched BLAS GEMMs per tile chunk")

    def __init__(self, m: Optional[int] = None):
        self.m = m              # None: tile_size(p); 2 or 4 to force one (tests, tuning)

    def why_not(self, p: ConvProblem) -> Optional[str]:
        if (p.KH, p.KW) != (3, 3):
            return f"needs a 3x3 filter, got {p.KH}x{p.KW}"
        if (p.SH, p.SW) != (1, 1):
            return f"needs stride 1, got strides ({p.SH}, {p.SW}): a strided output skips the tiles' overlap"
        if (p.DH, p.DW) != (1, 1):
            return f"needs dilation 1, got dilations ({p.DH}, {p.DW})"
        return None

    def workers(self, p: ConvProblem) -> int:
        """Worker threads over the batch (NumpyBackend.run), BLAS held to one thread each. Measured on
        an idle 2-core host, float32: VGG 224x224x64 32 -> 21 ms, ResNeXt G=32 14 -> 11.5 ms, but ResNet
        56 at batch 8 7.7 -> 9.8 ms, where BLAS on both cores did better. On the same host shared and
        loaded, median ratio to TF-CPU interleaved, one worker -> two: ResNet 3x3 at 56 8.5 -> 1.16, 28
        5.1 -> 1.13, 14 2.8 -> 1.04, 7 3.7 -> 1.7 (OpenBLAS's own threads stall when the cores are
        oversubscribed): the split loses at most a quarter when idle and saves most of the call under
        load, so it is taken for every layer. Needs threadpoolctl to hold BLAS to one thread."""
        return threads.blas_workers()

    def run(self, p: ConvProblem, x, w, out):
        # Winograd mixes the inputs of a whole tile, so a NaN or Inf would reach every output of its tile
        # (and Inf - Inf gives NaN). The sum of the inputs is finite exactly when no input is NaN/Inf (or
        # when a huge finite sum overflows, harmlessly sending us down the exact path too). Summed in the
        # accumulator type: a float16 sum overflows on ordinary post-ReLU data. No temporary array, unlike
        # np.isfinite(x).all().
        ct = accumulator(p.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(np.sum(x, dtype=ct)) and np.isfinite(np.sum(w, dtype=ct))
        if not finite:
            return Im2colGemm().run(p, x, w, out)
        tf = transforms(self.m or tile_size(p), ct)
        xv = x if p.layout == "NHWC" else x.transpose(0, 2, 3, 1)
        yv = out if p.layout == "NHWC" else out.transpose(0, 2, 3, 1)
        budget = config.numpy_workspace_bytes()
        B = bundle_size(p)
        tt = tf.t ** 2
        while B > 1 and tt * (B * p.CG) * (B * p.KG) * ct.itemsize > budget // 2:
            B = max(b for b in range(1, B) if p.G % b == 0)    # a tiny workspace: smaller bundles
        wc = w.astype(ct, copy=False).reshape(9, p.CG, p.G, p.KG)
        # Per filter-block entry: U's t*t values, and the 9 of the block's filter copy (a K range of the
        # filters is not contiguous) that coexists with U while U is computed.
        for c0, c1, k0, k1 in self._filter_blocks(p, B, ct.itemsize * (tf.t ** 2 + 9), budget // 2):
            # Filter transform of the block, once per call: U[p, bundle, B*CG, B*KG (or a K range)].
            g0, g1 = c0 // p.CG, max(c1 // p.CG, c0 // p.CG + 1)
            wb = wc[:, :, g0:g1].reshape(9, p.CG, -1)[:, :, k0 - g0 * p.KG:k1 - g0 * p.KG]
            u = self._filter_transform(tf, wb, g1 - g0, B, ct)
            self._run_block(p, tf, xv[..., c0:c1], yv[..., k0:k1], u, budget - u.nbytes, ct)
            del u                                # not alive next to the next block's U
        # Outputs whose whole receptive field is padding (explicit pads wider than the filter reach) are
        # exactly zero; the tile arithmetic would leave rounding residue from neighbouring pixels there.
        r0, r1 = max(0, p.PT - 2), min(p.OH, p.H + p.PT)
        q0, q1 = max(0, p.PL - 2), min(p.OW, p.W + p.PL)
        for sl in ((slice(None), slice(0, r0)), (slice(None), slice(r1, None)),
                   (slice(None), slice(None), slice(0, q0)), (slice(None), slice(None), slice(q1, None))):
            yv[sl] = 0

    @staticmethod
    def _filter_blocks(p: ConvProblem, B: int, bytes_per_entry: int, limit: int):
        """(c0, c1, k0, k1): input and output channel ranges whose filter transform fits `limit` bytes.
        One block whenever it fits (the normal case); else output-channel blocks for G = 1, or blocks of
        whole bundles of groups. Each extra block repeats the input transform for its channels."""
        if p.G == 1:
            kb = max(1, min(p.K, limit // (bytes_per_entry * p.C)))
            for k0 in range(0, p.K, kb):
                yield 0, p.C, k0, min(p.K, k0 + kb)
        else:
            per_bundle = bytes_per_entry * B * p.CG * B * p.KG
            nb = max(1, min(p.G // B, limit // per_bundle)) * B              # groups per block
            for g0 in range(0, p.G, nb):
                g1 = min(p.G, g0 + nb)
                yield g0 * p.CG, g1 * p.CG, g0 * p.KG, g1 * p.KG

    @staticmethod
    def _filter_transform(tf, wb, groups: int, B: int, ct) -> np.ndarray:
        """U = (G kron G) @ w: [t*t, bundles, B*CG, B*KG], block-diagonal within bundles of B groups.
        In the compute dtype: 9-term sums of exactly representable products for F(2x2)."""
        tt = tf.t ** 2
        cg, kcols = wb.shape[1], wb.shape[2]
        kg = kcols // groups
        if groups == 1:
            return (tf.gg @ wb.reshape(9, -1)).reshape(tt, 1, cg, kcols)
        u1 = (tf.gg @ wb.reshape(9, -1)).reshape(tt, cg, groups // B, B, kg)
        u = np.zeros((tt, groups // B, B, cg, B, kg), ct)
        for b in range(B):                     # the B diagonal blocks, each one strided copy
            u[:, :, b, :, b, :] = u1[:, :, :, b, :].transpose(0, 2, 1, 3)
        return u.reshape(tt, groups // B, B * cg, B * kg)

    def _run_block(self, p: ConvProblem, tf, xv, yv, u, avail: int, ct):
        """Winograd for the channels in xv / yv (NHWC views) with the transformed filters u."""
        m, t = tf.m, tf.t
        tt = t * t
        C, K = xv.shape[3], yv.shape[3]
        nth, ntw = -(-p.OH // m), -(-p.OW // m)
        isz = ct.itemsize
        # Per-tile workspace: D then M share one buffer, V then Y the other, plus the input slab.
        wide = max(C, K)
        per_tile = isz * (2 * tt * wide + tt * C)          # the slab holds at most t*t*C per tile
        tiles = max(1, min(max(per_tile, avail) // per_tile, CHUNK_BYTES // (isz * tt * C)))
        tiles = min(tiles, p.N * nth * ntw)
        # One thread drives the chunks of its share of the batch (see workers()).
        bufs = [np.empty(tt * tiles * wide, ct), np.empty(tt * tiles * wide, ct), None]
        for chunk in _chunks(p.N, nth, ntw, tiles):
            self._chunk(p, tf, xv, yv, u, ct, bufs, chunk)

    def _chunk(self, p: ConvProblem, tf, xv, yv, u, ct, bufs, chunk):
        """One chunk of tiles: slab, input transform, GEMMs, output transform, scatter."""
        m, t = tf.m, tf.t
        tt, mm = t * t, m * m
        C, K = xv.shape[3], yv.shape[3]
        nbun, bc, bk = u.shape[1], u.shape[2], u.shape[3]
        buf1, buf2, slab_buf = bufs
        n0, n1, th0, th1, tw0, tw1 = chunk
        nb, hr, wr = n1 - n0, th1 - th0, tw1 - tw0
        T, ws = nb * hr * wr, wr * m + 2
        # 1. Input rows of the chunk, zero outside the image: [nb, hr*m + 2, wr*m + 2, C].
        slab, bufs[2] = input_slab(p, xv, (n0, n1, th0 * m, th1 * m, tw0 * m, tw1 * m), ct, slab_buf)
        v = buf2[:tt * T * C].reshape(tt, T * C)
        if tf.elementwise:
            # 2+3. V = B^T d B as two passes of adds over strided views of the slab: rows, then columns.
            u1 = buf1[:t * nb * hr * ws * C].reshape(t, nb, hr, ws, C)
            for i in range(t):
                _combine(tf.bt[i], [slab[:, j:j + m * hr:m] for j in range(t)], u1[i])
            v6 = v.reshape(t, t, nb, hr, wr, C)
            for i in range(t):
                _combine(tf.bt[i], [u1[:, :, :, j:j + m * wr:m] for j in range(t)], v6[:, i])
        else:
            # 2. Gather the t x t input tiles: D[i, j, n, th, tw, c] = slab[n, th*m + i, tw*m + j, c].
            sn, sh, sw, sc = slab.strides
            tiles_view = np.lib.stride_tricks.as_strided(
                slab, (t, t, nb, hr, wr, C), (sh, sw, sn, m * sh, m * sw, sc), writeable=False)
            d = buf1[:tt * T * C].reshape(t, t, nb, hr, wr, C)
            np.copyto(d, tiles_view)
            # 3. Input transform, one GEMM.
            np.matmul(tf.bb, d.reshape(tt, T * C), out=v)
        # 4. The tt elementwise stages as batched GEMMs over transform points (and group bundles).
        mt = buf1[:tt * T * K].reshape(tt, T, K)
        if nbun == 1:
            np.matmul(v.reshape(tt, T, C), u[:, 0], out=mt)
        else:
            np.matmul(v.reshape(tt, T, nbun, bc).transpose(0, 2, 1, 3), u,
                      out=mt.reshape(tt, T, nbun, bk).transpose(0, 2, 1, 3))
        # 5. Output transform Y = A^T M A, and 6. scatter out[n, th*m + i, tw*m + j, k] = Y[i, j, n, th, tw, k].
        r0, c0 = th0 * m, tw0 * m
        if tf.elementwise:
            mt6 = mt.reshape(t, t, nb, hr, wr, K)
            z = buf2[:m * t * T * K].reshape(m, t, nb, hr, wr, K)
            for i in range(m):
                _combine(tf.at[i], [mt6[j] for j in range(t)], z[i])
            if r0 + hr * m <= p.OH and c0 + wr * m <= p.OW and yv.dtype == ct:
                # Whole tiles: the last pass writes straight into the output.
                dst = yv[n0:n1, r0:r0 + hr * m, c0:c0 + wr * m].reshape(nb, hr, m, wr, m, K)
                for j in range(m):
                    _combine(tf.at[j], [z[:, i] for i in range(t)], dst[:, :, :, :, j].transpose(2, 0, 1, 3, 4))
                return
            y = buf1[:mm * T * K].reshape(m, m, nb, hr, wr, K)
            for j in range(m):
                _combine(tf.at[j], [z[:, i] for i in range(t)], y[:, j])
        else:
            y = buf2[:mm * T * K].reshape(m, m, nb, hr, wr, K)
            np.matmul(tf.aa, mt.reshape(tt, T * K), out=y.reshape(mm, T * K))
        self._scatter(yv[n0:n1], y.transpose(2, 3, 0, 4, 1, 5), r0, c0, p.OH, p.OW, m)

    @staticmethod
    def _scatter(yv, y6, r0, c0, OH, OW, m):
        nb, hr, _, wr, _, K = y6.shape
        rows, cols = min(hr * m, OH - r0), min(wr * m, OW - c0)
        fr, fc = rows // m, cols // m                    # full tiles
        er, ec = rows - fr * m, cols - fc * m            # pixels of the last, partial tile
        dst = yv[:, r0:r0 + rows, c0:c0 + cols]
        if fr and fc:
            dst[:, :fr * m, :fc * m].reshape(nb, fr, m, fc, m, K)[...] = y6[:, :fr, :, :fc]
        if er and fc:
            dst[:, fr * m:, :fc * m].reshape(nb, er, fc, m, K)[...] = y6[:, fr, :er, :fc]
        if fr and ec:
            dst[:, :fr * m, fc * m:].reshape(nb, fr, m, ec, K)[...] = y6[:, :fr, :, fc, :ec]
        if er and ec:
            dst[:, fr * m:, fc * m:] = y6[:, fr, :er, fc, :ec]
