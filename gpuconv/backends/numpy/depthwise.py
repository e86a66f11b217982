"""Depthwise convolution (one input channel per group), no GEMM (a GEMM with a reduction of KH*KW is
mostly overhead).

Per block of output pixels, one numpy.einsum over a strided (pixel, tap, channel) view of the block's
input slab: every output is one pass that reads its KH*KW inputs from the slab in cache and writes the
output once, instead of 2*KH*KW elementwise passes (multiply into a temporary, add into an accumulator)
over arrays larger than the L2. With a column stride of 1 and no channel multiplier, the view is taken
over whole rows instead ((pixel row, tap, w*C) against the filters tiled along the row), so that
einsum's inner loop runs over a row's wb*C contiguous values rather than C. Blocks whose slab would break
the workspace bound (a wide dilated filter over thin blocks) take those per-tap multiply-adds instead.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...chunks import output_blocks
from ...dtypes import accumulator
from ...problem import ConvProblem
from ..base import Algorithm
from . import threads
from .slabs import input_slab, nhwc_view, row_tap_view, tap_view, taps
from .workspace import block_budget

# Workspace bytes of a block, below the workspace bound. Measured on the 2-core EPYC (512 KiB L2 per core),
# MobileNet's 16x56x56x128 layer, float32: with einsum's loops over C, interleaved with
# tf.nn.depthwise_conv2d, 1 MiB 0.92x TF, 4 MiB 0.95x; with its loops over whole rows (w, c), median of 9:
# 256 KiB 22.7 ms, 1 MiB 13.3 ms, 4 MiB 10.8 ms, 16 MiB 13.1 ms.
DEPTHWISE_BLOCK_BYTES = 4 << 20


class Depthwise(Algorithm):
    name = "depthwise"
    summary = "one input channel per group: one einsum over the taps of each cache-sized input slab"

    def workers(self, p: ConvProblem) -> int:
        # no BLAS at all: NumPy loops only, which release the GIL
        return threads.cpu_workers()

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None if p.CG == 1 else f"needs one input channel per group (CG=1), got CG={p.CG}"

    def run(self, p, x, w, out):
        ct = accumulator(p.dtype)
        mult = p.KG                                       # channel multiplier
        wt = w.astype(ct, copy=False).reshape(p.KH, p.KW, p.C, mult)
        xv, yv = nhwc_view(x, p.layout), nhwc_view(out, p.layout)
        direct = out.dtype == ct                          # einsum writes the output itself
        # Per output pixel: its share of the slab, twice for the halo; or the fallback's two arrays.
        per_pixel = ct.itemsize * max(2 * p.SH * p.SW * p.C + (not direct) * p.K, 2 * p.K)
        budget = block_budget(DEPTHWISE_BLOCK_BYTES)
        slab_buf = res_buf = tiled = None
        for block in output_blocks(p, per_pixel, budget):
            n0, n1, oh0, oh1, ow0, ow1 = block
            nb, hb, wb = n1 - n0, oh1 - oh0, ow1 - ow0
            hs = (hb - 1) * p.SH + (p.KH - 1) * p.DH + 1
            ws = (wb - 1) * p.SW + (p.KW - 1) * p.DW + 1
            target = yv[n0:n1, oh0:oh1, ow0:ow1]
            if ct.itemsize * (nb * hs * ws * p.C + (not direct) * nb * hb * wb * p.K) > budget:
                self._multiply_adds(p, xv, wt, block, target, ct)
                continue
            slab, slab_buf = input_slab(p, xv, block, ct, slab_buf)
            rows = row_tap_view(p, slab, (nb, hb, wb))
            if rows is not None:
                # A row's (w, c) values are one contiguous run in the slab: einsum's inner loop runs over
                # wb*C of them against filters tiled along the row, not over C (per-loop overhead: MobileNet's
                # layer at batch 8 in one einsum, one thread, took 22.5 ms with C-long loops, 13.5 ms so)
                if tiled is None or tiled.shape[2] < wb * p.C:
                    tiled = np.tile(wt[..., 0], (1, 1, wb))          # [KH, KW, wb*C]
                flat = target.strides[2] == p.C * target.itemsize and target.strides[3] == target.itemsize
                if direct and flat:
                    np.einsum("nhijk,ijk->nhk", rows, tiled[..., :wb * p.C], out=target.reshape(nb, hb, -1))
                else:
                    target[...] = np.einsum("nhijk,ijk->nhk", rows, tiled[..., :wb * p.C]).reshape(target.shape)
                continue
            view = tap_view(p, slab, (nb, hb, wb))
            if direct:
                res = target.reshape(nb, hb, wb, p.C, mult)
            else:
                if res_buf is None:                       # the first block is the largest
                    res_buf = np.empty(nb * hb * wb * p.K, ct)
                res = res_buf[:nb * hb * wb * p.K].reshape(nb, hb, wb, p.C, mult)
            np.einsum("nhwijc,ijcm->nhwcm", view, wt, out=res)
            if not direct:
                target[...] = res.reshape(nb, hb, wb, p.K)

    @staticmethod
    def _multiply_adds(p, xv, wt, block, target, ct):
        """The block as KH*KW multiply-adds of shifted input views, no slab."""
        n0, n1, oh0, oh1, ow0, ow1 = block
        shape = (n1 - n0, oh1 - oh0, ow1 - ow0, p.C, wt.shape[3])
        acc, tmp = np.zeros(shape, ct), np.empty(shape, ct)
        for kh, kw, (a, b), (c, d), rs, cs in taps(p, block):
            if rs is None or cs is None:
                continue
            t = tmp[:, a:b, c:d]
            np.multiply(xv[n0:n1, rs, cs][..., None], wt[kh, kw], out=t)
            np.add(acc[:, a:b, c:d], t, out=acc[:, a:b, c:d])
        target[...] = acc.reshape(shape[:3] + (p.K,))
