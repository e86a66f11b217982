"""Depthwise convolution (one input channel per group): multiply-adds of shifted input views,
vectorised over channels, no GEMM (a GEMM with a reduction of KH*KW is mostly overhead)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...chunks import output_blocks
from ...dtypes import accumulator
from ...problem import ConvProblem
from ..base import Algorithm
from . import threads
from .slabs import nhwc_view, taps
from .workspace import block_budget

# Workspace bytes of a block, below the workspace bound: small enough for the block's accumulator to
# stay in cache across the KH*KW multiply-adds (bench/tune_numpy.py, 2-core EPYC).
DEPTHWISE_BLOCK_BYTES = 4 << 20


class Depthwise(Algorithm):
    name = "depthwise"
    summary = "one input channel per group: shifted multiply-adds vectorised over channels"

    def workers(self, p: ConvProblem) -> int:
        # no BLAS at all: elementwise passes only, measured 1.5x faster on 2 threads (mobilenet layer)
        return threads.cpu_workers()

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None if p.CG == 1 else f"needs one input channel per group (CG=1), got CG={p.CG}"

    def run(self, p, x, w, out):
        ct = accumulator(p.dtype)
        mult = p.KG                                       # channel multiplier
        wt = w.astype(ct, copy=False).reshape(p.KH, p.KW, p.C, mult)
        xv, yv = nhwc_view(x, p.layout), nhwc_view(out, p.layout)
        per_pixel = 2 * ct.itemsize * p.K                 # accumulator + product
        bufs = None
        for block in output_blocks(p, per_pixel, block_budget(DEPTHWISE_BLOCK_BYTES)):
            n0, n1, oh0, oh1, ow0, ow1 = block
            shape = (n1 - n0, oh1 - oh0, ow1 - ow0, p.C, mult)
            if bufs is None:                              # the first block is the largest: reuse it
                bufs = np.empty((2, int(np.prod(shape))), ct)
            acc, tmp = (b[:int(np.prod(shape))].reshape(shape) for b in bufs)
            acc.fill(0)
            for kh, kw, (a, b), (c, d), rs, cs in taps(p, block):
                if rs is None or cs is None:
                    continue
                t = tmp[:, a:b, c:d]
                if mult == 1:      # no broadcast axis: NumPy runs the multiply unbuffered
                    np.multiply(xv[n0:n1, rs, cs], wt[kh, kw, :, 0], out=t[..., 0])
                else:
                    np.multiply(xv[n0:n1, rs, cs][..., None], wt[kh, kw], out=t)
                np.add(acc[:, a:b, c:d], t, out=acc[:, a:b, c:d])
            yv[n0:n1, oh0:oh1, ow0:ow1] = acc.reshape(acc.shape[:3] + (p.K,))
