"""Pointwise convolution (1x1, stride 1, unpadded): the input already is the GEMM's A matrix."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ... import config
from ...dtypes import accumulator
from ...problem import ConvProblem
from ..base import Algorithm
from .slabs import group_filters


class Pointwise(Algorithm):
    name = "pointwise"
    summary = "1x1 stride-1 unpadded: a plain (grouped) GEMM on the input, no im2col"

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None if p.is_pointwise else "needs a 1x1 filter with stride 1 and no padding"

    def run(self, p, x, w, out):
        ct = accumulator(p.dtype)
        wg = group_filters(w, p, ct)                      # [G, C/G, K/G]
        budget = config.numpy_workspace_bytes()
        if p.layout == "NHWC":
            # Groups as strided views of the rows ([G, rows, CG] with row stride C): BLAS reads and writes
            # them in place, so a chunk needs only its conversions to and from the compute type.
            xm, ym = x.reshape(p.M, p.C), out.reshape(p.M, p.K)
            per_row = ct.itemsize * (p.C * (x.dtype != ct) + p.K * (out.dtype != ct)) or 1
            step = max(1, budget // per_row)
            for m0 in range(0, p.M, step):
                a = xm[m0:m0 + step].astype(ct, copy=False)
                a3 = a.reshape(-1, p.G, p.CG).transpose(1, 0, 2)
                y3 = ym[m0:m0 + step].reshape(-1, p.G, p.KG).transpose(1, 0, 2)
                if out.dtype == ct:
                    np.matmul(a3, wg, out=y3)
                else:
                    y3[...] = np.matmul(a3, wg)
        else:
            # NCHW: per image, y[n] (K, HW) = w^T (K, C) @ x[n] (C, HW), batched over groups.
            wt = np.ascontiguousarray(wg.transpose(0, 2, 1))  # [G, KG, CG]
            hw = p.H * p.W
            xm, ym = x.reshape(p.N, p.G, p.CG, hw), out.reshape(p.N, p.G, p.KG, hw)
            per_col = ct.itemsize * (p.C * (x.dtype != ct) + p.K * (out.dtype != ct)) or 1
            step = max(1, budget // per_col)
            for n in range(p.N):
                for j in range(0, hw, step):
                    a = xm[n, :, :, j:j + step].astype(ct, copy=False)
                    if out.dtype == ct:
                        np.matmul(wt, a, out=ym[n, :, :, j:j + step])
                    else:
                        ym[n, :, :, j:j + step] = np.matmul(wt, a)
