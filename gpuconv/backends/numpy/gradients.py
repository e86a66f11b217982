"""The NumPy algorithms of conv2d's two gradients (gpuconv.conv2d_backprop_input / _filter).

For y = conv2d(x, w) and the upstream gradient dy, over the output pixels of a bounded block:
    input   dx[input pixels] += dy[pixels] @ w^T, per filter tap
        gemm          one GEMM per tap, its [pixels, CG] result added into dx through a strided view (one
                      tap never hits a pixel twice); the tap's dy slice is a copy where the tap leaves the
                      image, and each GEMM's inner size is CG only
        col2im        one GEMM [pixels, KG] @ [KG, KH*KW*CG] per group for all taps, then KH*KW strided adds
                      (col2im; below 16 channels into planar stride phases, _col2im_planar): for few input
                      channels (the RGB stem: C = 3, 49 taps) one wide GEMM instead of 49 with 3 columns
                      and 49 copies of dy
        forward-conv  stride 1: dx is the forward convolution of dy with the flipped filters (Winograd,
                      pointwise or depthwise through the numpy backend's own algorithms)
    filter  dw[tap] += x[input pixels of the tap]^T @ dy[pixels]
        gemm          one GEMM per tap on slices of x and dy (each a copy where the slice is strided)
        im2col        the forward pass's im2col of the block (one copy of x) and one GEMM per group,
                      [KH*KW*CG, pixels] @ [pixels, KG], reducing over all pixels of the block at once
        depthwise     CG = 1: per block one einsum over a strided view of the zero-padded input slab
                      ([pixels, KH, KW, G] against dy's [pixels, G, KG]): no GEMM, no copy per tap
Half types accumulate in float32 and round once (under NumPy's IEEE error state, entered by the caller and
by each worker). The batch is split over worker threads (threads.py) where
the work is BLAS or NumPy loops that release the GIL; the filter gradient's per-worker partial sums are
added in batch order, so results repeat bit for bit on a host.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ... import config
from ...chunks import output_blocks
from ...dtypes import accumulator
from ...nonfinite import all_finite
from ...problem import ConvProblem
from .. import forward_conv_gradient
from ..base import Algorithm, pick_first
from . import threads
from .gemm import GEMM_BLOCK_BYTES, im2col
from .slabs import group_filters, input_slab, nhwc_view, row_tap_view, tap_view, taps
from .workspace import block_budget


def _dx_result(p: ConvProblem, dx: np.ndarray) -> np.ndarray:
    """dx (NHWC, accumulator type) in the problem's layout and dtype."""
    if p.layout == "NHWC" and dx.dtype == p.dtype:
        return dx
    x_shape = (p.N, p.H, p.W, p.C) if p.layout == "NHWC" else (p.N, p.C, p.H, p.W)
    out = np.empty(x_shape, p.dtype)
    nhwc_view(out, p.layout)[...] = dx
    return out


def _dw_result(p: ConvProblem, dw: np.ndarray) -> np.ndarray:
    """dw as [KH, KW, G, CG, KG] (accumulator type) in HWIO and the problem's dtype."""
    return dw.transpose(0, 1, 3, 2, 4).reshape(p.KH, p.KW, p.CG, p.K).astype(p.dtype)


def _dy_block(p: ConvProblem, dyv: np.ndarray, block, ct) -> np.ndarray:
    """dy of an output block as [pixels, G, KG] in ct (a view for NHWC in ct over whole rows)."""
    n0, n1, oh0, oh1, ow0, ow1 = block
    g = dyv[n0:n1, oh0:oh1, ow0:ow1].astype(ct, copy=False)
    return g.reshape(-1, p.G, p.KG)


def _sum_in_order(parts: list) -> np.ndarray:
    total = parts[0]
    for part in parts[1:]:
        total += part
    return total


class PerTapGradient(Algorithm):
    """One GEMM per filter tap and output block (the formulation without any im2col workspace)."""
    name = "gemm"

    def __init__(self, which: str):
        self.which = which
        self.summary = ("per filter tap, one GEMM per block of output pixels within the NumPy workspace "
                        + ("(dy @ w^T added into dx)" if which == "input" else "(x^T @ dy added into dw)"))

    def run(self, p: ConvProblem, a: np.ndarray, dy: np.ndarray) -> np.ndarray:
        dy = dy.astype(p.dtype, copy=False)
        if self.which == "input":
            return _dx_result(p, _per_tap_input(p, np.ascontiguousarray(a, p.dtype), dy))
        return _dw_result(p, _per_tap_filter(p, a.astype(p.dtype, copy=False), dy))


def _tap_slices(p: ConvProblem, dyv: np.ndarray, ct):
    """For every output block within the workspace bound (per pixel: one dy row and one input row in the
    accumulator, and their copies) and every filter tap reading inside the image: (kh, kw, images, input
    rows, input columns, the block's dy pixels of that tap in the accumulator type)."""
    per_pixel = ct.itemsize * (p.K + p.C) * 2
    for block in output_blocks(p, per_pixel, config.numpy_workspace_bytes()):
        n0, n1, oh0, oh1, ow0, ow1 = block
        for kh, kw, (a, b), (c, d), rows, cols in taps(p, block):
            if rows is not None and cols is not None:
                g = dyv[n0:n1, oh0 + a:oh0 + b, ow0 + c:ow0 + d].astype(ct, copy=False)
                yield kh, kw, slice(n0, n1), rows, cols, g


def _per_tap_input(p: ConvProblem, w: np.ndarray, dy: np.ndarray) -> np.ndarray:
    ct = accumulator(p.dtype)
    wt = w.astype(ct, copy=False).reshape(p.KH, p.KW, p.CG, p.G, p.KG).transpose(0, 1, 3, 4, 2)  # [.., G, KG, CG]
    dyv = nhwc_view(dy, p.layout)
    dx = np.zeros((p.N, p.H, p.W, p.C), ct)
    for kh, kw, images, rows, cols, g in _tap_slices(p, dyv, ct):
        target = dx[images, rows, cols]
        if p.CG == 1 and p.KG == 1:                          # depthwise: no GEMM, a product
            target += g * wt[kh, kw, :, 0, 0]
            continue
        m = int(np.prod(g.shape[:3]))
        contrib = np.matmul(g.reshape(m, p.G, p.KG).transpose(1, 0, 2), wt[kh, kw])  # [G, m, CG]
        target += contrib.transpose(1, 0, 2).reshape(target.shape)
    return dx


def _per_tap_filter(p: ConvProblem, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    ct = accumulator(p.dtype)
    xv, dyv = nhwc_view(x, p.layout), nhwc_view(dy, p.layout)
    dw = np.zeros((p.KH, p.KW, p.G, p.CG, p.KG), ct)
    for kh, kw, images, rows, cols, g in _tap_slices(p, dyv, ct):
        if p.CG == 1:   # depthwise: per channel a dot product over the pixels
            xs = xv[images, rows, cols].astype(ct, copy=False)
            dw[kh, kw, :, 0] += np.einsum("nhwg,nhwgk->gk", xs, g.reshape(g.shape[:3] + (p.G, p.KG)))
            continue
        m = int(np.prod(g.shape[:3]))
        xs = xv[images, rows, cols].astype(ct, copy=False).reshape(m, p.G, p.CG).transpose(1, 2, 0)  # [G, CG, m]
        dw[kh, kw] += np.matmul(xs, g.reshape(m, p.G, p.KG).transpose(1, 0, 2))                     # [G, m, KG]
    return dw


class Col2imInputGradient(Algorithm):
    name = "col2im"
    summary = ("per block of output pixels one GEMM dy @ w^T for all taps ([pixels, KH*KW*CG] per group), "
               "then one strided add per tap into dx (col2im; planar stride phases below 16 channels)")

    def slower(self, p: ConvProblem) -> Optional[str]:
        """Why auto prefers the per-tap GEMMs for p (None: this is faster). Measured, 2-core AVX2 host, float32:
        ResNet stem (C = 3, 7x7/2) 50 vs 440 ms at batch 8; 3x3, 5x5 and 7x7 filters on C = 3, 4 and 8
        (stride 1 and 2) 1.3-4.5x faster; C = 12 and 16 at stride 2 about even; ResNet's 3x3 layers
        (C >= 128) 1.0-1.7x slower (their per-tap GEMMs are wide already, while col2im's one GEMM streams
        KH*KW times the filters per block)."""
        if p.G > 1:
            return f"{p.G} groups: the per-tap GEMMs batch the groups already"
        if p.C > COL2IM_MAX_CHANNELS:
            return f"{p.C} input channels: the per-tap GEMMs are {p.C} wide, as fast"
        if (p.PT, p.PB, p.PL, p.PR) == (0, 0, 0, 0):
            # the seed case (3 channels, VALID): 0.92 vs 1.26 ms at batch 8, 5.8 vs 6.6 ms at batch 100
            return "no padding: every tap reads dy in place, the per-tap GEMMs copy nothing"
        return None

    def run(self, p: ConvProblem, w: np.ndarray, dy: np.ndarray) -> np.ndarray:
        ct = accumulator(p.dtype)
        wt = group_filters(np.ascontiguousarray(w, ct), p, ct).transpose(0, 2, 1)    # [G, KG, R]
        if p.C < COL2IM_CHANNELS_INNER:
            return _dx_result(p, _col2im_planar(p, wt, dy, ct))
        dx = np.empty((p.N, p.H, p.W, p.C), ct)

        def part(q: ConvProblem, n0: int, n1: int) -> None:
            _col2im_input(q, wt, nhwc_view(dy[n0:n1], p.layout), dx[n0:n1], ct)
        threads.map_batch(p, threads.blas_workers(), part)
        return _dx_result(p, dx)


# auto's col2im: only for inputs with at most this many channels (see Col2imInputGradient.slower)
COL2IM_MAX_CHANNELS = 8
# col2im adds a tap's [pixels, C] block into NHWC dx with the channels innermost from this many input
# channels up; below, into planar stride phases (_col2im_planar)
COL2IM_CHANNELS_INNER = 16


def _col2im_input(p: ConvProblem, wt: np.ndarray, dyv: np.ndarray, dx: np.ndarray, ct) -> None:
    dx.fill(0)
    # per output pixel: its row of the column matrix and (NCHW or a half type) its copy of dy
    per_pixel = ct.itemsize * (p.G * p.R + p.K)
    buf = None
    for block in output_blocks(p, per_pixel, block_budget(GEMM_BLOCK_BYTES)):
        n0, n1, oh0, oh1, ow0, ow1 = block
        rows = (n1 - n0) * (oh1 - oh0) * (ow1 - ow0)
        if buf is None:
            buf = np.empty(rows * p.G * p.R, ct)           # the first block is the largest
        g = _dy_block(p, dyv, block, ct).transpose(1, 0, 2)                  # [G, pixels, KG]
        col = np.matmul(g, wt, out=buf[:rows * p.G * p.R].reshape(p.G, rows, p.R))
        col = col.reshape((p.G, n1 - n0, oh1 - oh0, ow1 - ow0, p.KH, p.KW, p.CG))
        for kh, kw, (a, b), (c, d), rs, cs in taps(p, block):
            if rs is not None and cs is not None:
                target = dx[n0:n1, rs, cs]
                target = target.reshape(target.shape[:3] + (p.G, p.CG))
                target += col[:, :, a:b, c:d, kh, kw].transpose(1, 2, 3, 0, 4)


def _col2im_planar(p: ConvProblem, wt: np.ndarray, dy: np.ndarray, ct) -> np.ndarray:
    """col2im for few channels (the RGB stem), where adding [pixels, C] blocks into NHWC would run NumPy's
    inner loop over C = 3 values at a time. The product is taken transposed ([R, pixels]: pixels innermost)
    and added per tap and channel into a zero-padded, planar dx split into its stride phases,
    [C, N, SH, SW, rows, WQ] with WQ = ceil(padded columns / SW): tap (kh, kw) of output (oh, ow) lands on
    phase (kh*DH % SH, kw*DW % SW) at (oh + kh*DH // SH, ow + kw*DW // SW), untrimmed (the padding absorbs
    what falls outside the image). dy's rows are copied out to WQ columns with zeros, so that a block's
    product rows have the phase's row length and each tap's add is one contiguous run per image (a strided
    add of OW-long rows costs NumPy ~0.1 us per row). One pass at the end interleaves the phases into NHWC
    and drops the padding: this path holds dx twice (C < 16: small beside dy). ResNet stem at batch 8,
    2-core host, median of 7: 127 ms adding [pixels, C] blocks into NHWC, 77 ms adding channel by channel
    into NHWC, 50 ms as here (of which the GEMM about 26 ms, the adds about 20 ms)."""
    # dy's zero columns times a non-finite filter value would add NaN to real pixels: such filters take
    # the exact per-block adds
    runs_ok = bool(np.isfinite(wt).all())
    hq = -(-max((p.OH - 1) * p.SH + (p.KH - 1) * p.DH + 1, p.PT + p.H) // p.SH)
    wq = -(-max((p.OW - 1) * p.SW + (p.KW - 1) * p.DW + 1, p.PL + p.W) // p.SW)
    # one spare row: a run's zero tail (dy's padding columns) may reach past the last row
    phases = np.zeros((p.C, p.N, p.SH, p.SW, hq + 1, wq), ct)

    def part(q: ConvProblem, n0: int, n1: int) -> None:
        dyv, acc = nhwc_view(dy[n0:n1], p.layout), phases[:, n0:n1]
        runs = acc.reshape(acc.shape[:4] + (-1,))              # each phase's rows as one run
        per_pixel = ct.itemsize * (p.G * p.R + p.K) * wq // max(1, p.OW) + 1   # product and padded dy
        buf = dbuf = None
        for block in output_blocks(q, per_pixel, block_budget(GEMM_BLOCK_BYTES)):
            b0, b1, oh0, oh1, ow0, ow1 = block
            nb, hb = b1 - b0, oh1 - oh0
            full_rows = runs_ok and (ow0, ow1) == (0, p.OW)
            wb = wq if full_rows else ow1 - ow0
            pixels = nb * hb * wb
            if buf is None:
                buf, dbuf = np.empty(pixels * p.G * p.R, ct), np.empty(pixels * p.K, ct)
            if full_rows:
                g = dbuf[:pixels * p.K].reshape(nb, hb, wq, p.K)
                g[:, :, p.OW:] = 0
                g[:, :, :p.OW] = dyv[b0:b1, oh0:oh1]
                g = g.reshape(pixels, p.G, p.KG)
            else:
                g = _dy_block(p, dyv, block, ct)
            colt = np.matmul(wt.transpose(0, 2, 1), g.transpose(1, 2, 0), out=buf[:pixels * p.G * p.R].reshape(
                p.G, p.R, pixels)).reshape((p.G, p.KH, p.KW, p.CG, nb, hb * wb))
            for kh in range(p.KH):
                qh, ph = divmod(kh * p.DH, p.SH)
                for kw in range(p.KW):
                    qw, pw = divmod(kw * p.DW, p.SW)
                    for gi in range(p.G):
                        for ci in range(p.CG):
                            src, c = colt[gi, kh, kw, ci], gi * p.CG + ci
                            if full_rows:
                                start = (oh0 + qh) * wq + qw
                                runs[c, b0:b1, ph, pw, start:start + hb * wq] += src
                            else:
                                acc[c, b0:b1, ph, pw, oh0 + qh:oh1 + qh, ow0 + qw:ow1 + qw] += src.reshape(nb, hb, wb)
    threads.map_batch(p, threads.blas_workers(), part)
    # interleave channel by channel: the phases into one padded plane, then the plane into NHWC (long inner
    # loops both; one 6-D transpose with C = 3 innermost took 9-15 ms of the stem's time)
    dx = np.empty((p.N, p.H, p.W, p.C), ct)
    plane = np.empty((p.N, hq, p.SH, wq, p.SW), ct)
    for c in range(p.C):
        for ph in range(p.SH):
            for pw in range(p.SW):
                plane[:, :, ph, :, pw] = phases[c, :, ph, pw, :hq]
        dx[..., c] = plane.reshape(p.N, hq * p.SH, wq * p.SW)[:, p.PT:p.PT + p.H, p.PL:p.PL + p.W]
    return dx


class ForwardConvInputGradient(Algorithm):
    """dx as forward convolutions of dy with the flipped, channel-swapped filters, one per stride phase
    (forward_conv_gradient.py), which the numpy backend's own conv2d algorithms (Winograd, pointwise,
    depthwise, GEMM with its batch split) compute."""
    name = "forward-conv"
    summary = ("dx as forward convolutions of dy with the flipped, channel-swapped filters (one per stride "
               "phase) on the numpy backend's own algorithms")

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None

    def slower(self, p: ConvProblem) -> Optional[str]:
        """Why auto prefers the next algorithm for p (None: this is faster)."""
        if p.is_empty:
            return "nothing to compute"
        if not forward_conv_gradient.is_one_phase(p):
            return STRIDED_SLOWER
        from .. import get_backend
        # measured (bench layers, batch 8, 2-core AVX2 host): through Winograd, pointwise or depthwise
        # 0.4-0.8x the per-tap GEMMs' time; through im2col + GEMM 1.1-3.4x (the im2col copy and the
        # flipped filters' copy, which the per-tap GEMMs and col2im do without)
        chosen = get_backend("numpy").choose(forward_conv_gradient.forward_problem(p)).name
        if chosen == "gemm":
            return "its forward convolution would run as im2col + GEMM, slower (the im2col copy)"
        if chosen == "winograd" and p.C < 16:
            # the seed case's input gradient: Winograd with 3 output channels, 3.3x the per-tap GEMMs. Small
            # groups are fine: Winograd bundles them into block-diagonal GEMMs at least 32 wide (ResNeXt
            # G = 32 of 4 channels: 48 ms against 247 ms for the per-tap GEMMs' [pixels, 4] @ [4, 4])
            return f"Winograd with {p.C} output channels is slower"
        return None

    def run(self, p: ConvProblem, w: np.ndarray, dy: np.ndarray) -> np.ndarray:
        from .. import get_backend
        dx = np.empty(p.input_shape, p.dtype)
        forward_conv_gradient.run(p, w.astype(p.dtype, copy=False), dy, dx, get_backend("numpy"))
        return dx


# measured, 2-core AVX2 host, float32, batch 8: ResNet's 3x3 stride 2 at 56 48 ms against the per-tap
# GEMMs' 45; 1x1 stride 2 (256 filters) 8.2 against 6.2; the stem (7x7/2, C = 3) 168 against col2im's 48
STRIDED_SLOWER = ("strided or cropped: its phases' small forward convolutions (im2col + GEMM for most) are slower "
                  "than the per-tap GEMMs")


def _padding_meets_nonfinite(p: ConvProblem, dy: np.ndarray) -> bool:
    """Whether zero-padded copies of the input (im2col's columns, the depthwise slab) would meet a NaN or
    Inf in dy: 0 * Inf = NaN, a term the definition does not have (a tap on the padding adds nothing, as
    in conv2d; the per-tap GEMMs and every CUDA algorithm but splitk-gemm skip it). Frameworks disagree
    there: TensorFlow with oneDNN and PyTorch multiply the zeros, TensorFlow's Eigen kernels spread NaN
    further. Those inputs take the per-tap GEMMs. Only dy's border bands, the output pixels some tap of
    which reads padding, are checked (2 of 56 rows and columns for a 3x3 SAME layer at 56x56)."""
    def bands(out: int, size: int, k: int, s: int, d: int, pad: int) -> tuple[int, int]:
        # output positions [0, lo) read before the image, [hi, out) past its end
        lo = min(out, -(-pad // s))
        hi = max(lo, min(out, -(-(size + pad - (k - 1) * d) // s)))
        return lo, hi
    top, bottom = bands(p.OH, p.H, p.KH, p.SH, p.DH, p.PT)
    left, right = bands(p.OW, p.W, p.KW, p.SW, p.DW, p.PL)
    v = nhwc_view(dy, p.layout)
    strips = (v[:, :top], v[:, bottom:], v[:, top:bottom, :left], v[:, top:bottom, right:])
    return not all(all_finite(s) for s in strips if s.size)


class Im2colFilterGradient(Algorithm):
    name = "im2col"
    summary = ("per block of output pixels the forward pass's im2col copy of the input, then one GEMM "
               "col^T @ dy per group over all the block's pixels")

    def slower(self, p: ConvProblem) -> Optional[str]:
        """Why auto prefers the per-tap GEMMs for p (None: this is faster). Measured on the bench layers, batch
        8, 2-core AVX2 host, float32: stem 41 vs 412 ms, ResNeXt 60 vs 149, VGG 336 vs 584, ResNet 3x3 at
        56 31 vs 48, at 28 about even; at 14 and 7 1.3-2.4x slower, 1x1 1.6-1.9x slower (per-tap reads
        the input in place there; small images give short GEMM reductions per block)."""
        if p.KH * p.KW == 1:
            return "a 1x1 filter: its one per-tap GEMM needs no im2col copy"
        if p.OH * p.OW < IM2COL_MIN_OUTPUT_PIXELS:
            return f"{p.OH}x{p.OW} outputs per image: too few pixels per block for a long GEMM reduction"
        return None

    def run(self, p: ConvProblem, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
        if _padding_meets_nonfinite(p, dy):
            return PerTapGradient("filter").run(p, x, dy)
        ct = accumulator(p.dtype)

        def part(q: ConvProblem, n0: int, n1: int) -> np.ndarray:
            return _im2col_filter(q, nhwc_view(x[n0:n1], p.layout), nhwc_view(dy[n0:n1], p.layout), ct)
        dw = _sum_in_order(threads.map_batch(p, threads.blas_workers(), part))      # [G, R, KG]
        return _dw_result(p, dw.reshape(p.G, p.KH, p.KW, p.CG, p.KG).transpose(1, 2, 0, 3, 4))


# auto's im2col filter gradient: from outputs of 28x28 per image on (see Im2colFilterGradient.slower)
IM2COL_MIN_OUTPUT_PIXELS = 28 * 28


def _im2col_filter(p: ConvProblem, xv: np.ndarray, dyv: np.ndarray, ct) -> np.ndarray:
    dw = np.zeros((p.G, p.R, p.KG), ct)
    # per output pixel: its column row, (NCHW or a half type) its copy of dy, and (G = 1) its share of the
    # block's input slab, taken 4x for the halo (as the forward im2col)
    per_pixel = ct.itemsize * (p.G * p.R + p.K + (p.G == 1) * p.SH * p.SW * p.C * 4)
    budget = block_budget(GEMM_BLOCK_BYTES)
    buf, slab_buf = None, None
    for block in output_blocks(p, per_pixel, budget):
        n0, n1, oh0, oh1, ow0, ow1 = block
        rows = (n1 - n0) * (oh1 - oh0) * (ow1 - ow0)
        if buf is None:
            buf = np.empty(rows * p.G * p.R, ct)
        col = buf[:rows * p.G * p.R].reshape(p.G, n1 - n0, oh1 - oh0, ow1 - ow0, p.KH, p.KW, p.CG)
        slab_buf = im2col(p, xv, block, col, budget - ct.itemsize * rows * (p.G * p.R + p.K), slab_buf)
        g = _dy_block(p, dyv, block, ct)
        if p.G == 1:
            dw[0] += col.reshape(rows, p.R).T @ g[:, 0]
        else:
            dw += np.matmul(col.reshape(p.G, rows, p.R).transpose(0, 2, 1), g.transpose(1, 0, 2))
    return dw


class DepthwiseFilterGradient(Algorithm):
    name = "depthwise"
    summary = ("one input channel per group: per block one einsum of a strided [pixels, KH, KW, G] view of "
               "the zero-padded input slab with dy")

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None if p.CG == 1 else f"needs one input channel per group (CG=1), got CG={p.CG}"

    def run(self, p: ConvProblem, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
        if _padding_meets_nonfinite(p, dy):
            return PerTapGradient("filter").run(p, x, dy)
        ct = accumulator(p.dtype)

        def part(q: ConvProblem, n0: int, n1: int) -> np.ndarray:
            return _depthwise_filter(q, nhwc_view(x[n0:n1], p.layout), nhwc_view(dy[n0:n1], p.layout), ct)
        # NumPy loops only, which release the GIL: a worker per CPU
        dw = _sum_in_order(threads.map_batch(p, threads.cpu_workers(), part))        # [KH, KW, G, KG]
        return _dw_result(p, dw[:, :, :, None, :])


def _depthwise_filter(p: ConvProblem, xv: np.ndarray, dyv: np.ndarray, ct) -> np.ndarray:
    dw = np.zeros((p.KH, p.KW, p.G, p.KG), ct)
    # per output pixel: its share of the input slab (SH*SW*C, 4x for the halo) and (NCHW or a half type)
    # its copy of dy; a block of whole rows keeps the einsum's operands in cache (einsum over the compact
    # slab: 6.9-7.3 ms against 8.3-8.9 ms reading the block's interior in place, MobileNet's layer, batch 8)
    per_pixel = ct.itemsize * (p.SH * p.SW * p.C * 4 + p.K)
    slab_buf = None
    for block in output_blocks(p, per_pixel, block_budget(GEMM_BLOCK_BYTES)):
        n0, n1, oh0, oh1, ow0, ow1 = block
        slab, slab_buf = input_slab(p, xv, block, ct, slab_buf)
        nb, hb, wb = n1 - n0, oh1 - oh0, ow1 - ow0
        g = dyv[n0:n1, oh0:oh1, ow0:ow1].astype(ct, copy=False)
        rows = row_tap_view(p, slab, (nb, hb, wb))
        if rows is not None:
            # as the forward pass's depthwise: einsum's inner loop over a row's wb*C contiguous values
            # (not C), the row's partial sums added over w afterwards. MobileNet's layer, batch 16,
            # interleaved: 8.4 ms against 9.6 (11.1 against 13.5 in a busier run)
            part = np.einsum("nhijk,nhk->ijk", rows, g.reshape(nb, hb, wb * p.C))
            dw[..., 0] += part.reshape(p.KH, p.KW, wb, p.C).sum(2)
            continue
        view = tap_view(p, slab, (nb, hb, wb))
        dw += np.einsum("nhwabg,nhwgk->abgk", view, g.reshape(g.shape[:3] + (p.G, p.KG)))
    return dw


INPUT = {a.name: a for a in (ForwardConvInputGradient(), Col2imInputGradient(), PerTapGradient("input"))}
FILTER = {a.name: a for a in (DepthwiseFilterGradient(), Im2colFilterGradient(), PerTapGradient("filter"))}
AUTO_RULES = {
    "input": ("forward-conv for stride 1 where the numpy backend would run that convolution as Winograd "
              f"(with >= 16 input channels), pointwise or depthwise; col2im for padded, ungrouped inputs "
              f"of at most {COL2IM_MAX_CHANNELS} channels; else gemm"),
    "filter": (f"depthwise when CG=1; im2col for filters larger than 1x1 with at least "
               f"{IM2COL_MIN_OUTPUT_PIXELS} output pixels per image; else gemm"),
}


def choose(which: str, p: ConvProblem) -> Algorithm:
    """auto's algorithm: the first of the list that can run p and is not slower than the next (slower())."""
    algos = INPUT if which == "input" else FILTER
    order = [a for a in algos.values() if getattr(a, "slower", lambda p: None)(p) is None]
    return pick_first(order, p, AUTO_RULES[which])
