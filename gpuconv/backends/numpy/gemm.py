"""im2col + GEMM: the input pixels of a bounded block of output pixels copied into a column matrix,
then one batched BLAS GEMM over groups. Runs every problem."""
from __future__ import annotations

import numpy as np

from ...chunks import output_blocks
from ...dtypes import accumulator
from ..base import Algorithm
from . import threads
from .slabs import covers, group_filters, input_slab, nhwc_view, tap_view, taps
from .workspace import block_budget

# Workspace bytes of a block, below the workspace bound: chosen so that a block's working set stays in
# the caches between the copy and the GEMM. Measured with bench/tune_numpy.py on a 2-core EPYC (2 MiB
# L2 per core, 32 MiB L3).
GEMM_BLOCK_BYTES = 4 << 20


class Im2colGemm(Algorithm):
    name = "gemm"
    summary = "im2col of bounded output blocks + batched BLAS GEMM over groups; runs every problem"

    def workers(self, p) -> int:
        """The batch split over worker threads, BLAS held to one thread each (NumpyBackend.run): the im2col
        copies run in parallel too, and a worker's GEMMs need no cross-thread sync. On the 2-core EPYC,
        shared and loaded, float32, median ratio to TF-CPU interleaved: seed case 1.70 -> 0.68, ResNet
        stem 2.47 -> 1.08, 3x3 stride 2 4.56 -> 1.46, dilated 4.89 -> 1.80 (OpenBLAS's own two threads
        stall when the cores are oversubscribed). Needs threadpoolctl to hold BLAS to one thread."""
        return threads.blas_workers()

    def run(self, p, x, w, out):
        ct = accumulator(p.dtype)
        wg = group_filters(w, p, ct)                      # [G, R, KG]
        xv, yv = nhwc_view(x, p.layout), nhwc_view(out, p.layout)
        # Per output pixel: its column row and its GEMM result row, plus (G = 1) its share of the block's
        # input slab, SH*SW*C values, taken 4x for the halo the filter's reach adds to a block.
        per_pixel = ct.itemsize * (p.G * p.R + p.K + (p.G == 1) * p.SH * p.SW * p.C * 4)
        budget = block_budget(GEMM_BLOCK_BYTES)
        buf, slab_buf = None, None
        for block in output_blocks(p, per_pixel, budget):
            n0, n1, oh0, oh1, ow0, ow1 = block
            nb, hb, wb = n1 - n0, oh1 - oh0, ow1 - ow0
            rows = nb * hb * wb
            if buf is None:
                buf = np.empty(rows * p.G * p.R, ct)       # the first block is the largest
            col = buf[:rows * p.G * p.R].reshape(p.G, nb, hb, wb, p.KH, p.KW, p.CG)
            slab_buf = im2col(p, xv, block, col, budget - ct.itemsize * rows * (p.R + p.K), slab_buf)
            target = yv[n0:n1, oh0:oh1, ow0:ow1]
            a_mat = col.reshape(p.G, rows, p.R)
            if p.G == 1 and out.dtype == ct and target.flags.c_contiguous:
                np.matmul(a_mat[0], wg[0], out=target.reshape(rows, p.K))
            else:
                r = np.matmul(a_mat, wg)                  # [G, rows, KG]
                target[...] = r.transpose(1, 0, 2).reshape(nb, hb, wb, p.K)


def im2col(p, xv, block, col, slab_budget: int, slab_buf):
    """Fills col, [G, nb, hb, wb, KH, KW, CG] in the accumulator type, with the input pixels each output
    pixel of the block reads (zero outside the image). Returns the slab buffer, for reuse."""
    n0, n1, oh0, oh1, ow0, ow1 = block
    nb, hb, wb = n1 - n0, oh1 - oh0, ow1 - ow0
    slab_bytes = col.itemsize * nb * p.C * ((hb - 1) * p.SH + (p.KH - 1) * p.DH + 1) * (
        (wb - 1) * p.SW + (p.KW - 1) * p.DW + 1)
    if p.G == 1 and slab_bytes <= slab_budget:
        # One strided copy from a zero-padded slab of the block's input: for dilation 1 a filter
        # row's KW*C inputs are contiguous, so the copy moves runs of KW*C values, not C (the
        # 7x7 stem with C = 3 copies 21-value runs instead of 3-value ones). Blocks whose slab
        # would break the workspace bound (a wide dilated filter over a thin block) take the
        # per-tap copies below instead.
        slab, slab_buf = input_slab(p, xv, block, col.dtype, slab_buf)
        np.copyto(col[0], tap_view(p, slab, (nb, hb, wb)))
        return slab_buf
    block_taps = list(taps(p, block))
    if not all(covers(t, block) for t in block_taps):
        col.fill(0)
    for kh, kw, (a, b), (c, d), rs, cs in block_taps:
        if rs is None or cs is None:
            continue
        src = xv[n0:n1, rs, cs].reshape(nb, b - a, d - c, p.G, p.CG)
        col[:, :, a:b, c:d, kh, kw, :] = src.transpose(3, 0, 1, 2, 4)
    return slab_buf
