"""The CUDA algorithms: each says whether it can run a problem, and builds its launches.

Written once for both CUDA backends: `self.backend.xp` allocates (NumPy or CuPy) and
`self.backend.launch` runs a Launch (emulated on the CPU, or on the GPU through CuPy).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ... import config
from ...dtypes import accumulator
from ...problem import ConvProblem
from ..base import Algorithm
from .launch import Launch, entry_name, index_bits
from .params import conv_problem_struct

# Static + dynamic shared memory a block may use without opting in (all of sm_75 .. sm_90).
MAX_SHARED_BYTES = 48 * 1024

AUTO_RULE = "direct for every problem it can run (the only GPU algorithm so far)"


def auto_order(p: ConvProblem) -> list[str]:
    return ["direct"]


class CudaAlgorithm(Algorithm):
    file = ""
    defines: tuple[tuple[str, int], ...] = ()

    def __init__(self, backend):
        self.backend = backend

    def bits(self, *spans: int) -> int:
        return index_bits(*spans, force64=config.settings.cuda_force_index64)


class Direct(CudaAlgorithm):
    name = "direct"
    summary = "direct convolution: input patch + filter slice staged in shared memory, register accumulators"
    file = "direct"
    # The kernel's defaults (kernels/direct.cu); change them together with `defines`.
    TILE_OH, TILE_OW, TILE_K, THREAD_K = 8, 8, 16, 4
    MAX_CC = 16  # input channels staged per step, at most

    @property
    def threads(self) -> int:
        return self.TILE_OH * self.TILE_OW * self.TILE_K // self.THREAD_K

    def patch_size(self, p: ConvProblem) -> tuple[int, int]:
        return ((self.TILE_OH - 1) * p.SH + (p.KH - 1) * p.DH + 1,
                (self.TILE_OW - 1) * p.SW + (p.KW - 1) * p.DW + 1)

    def shared_bytes(self, p: ConvProblem, cc: int) -> int:
        ph, pw = self.patch_size(p)
        return (cc * ph * pw + p.KH * p.KW * cc * self.TILE_K) * accumulator(p.dtype).itemsize

    def channels_per_step(self, p: ConvProblem) -> Optional[int]:
        for cc in range(min(p.CG, self.MAX_CC), 0, -1):
            if self.shared_bytes(p, cc) <= MAX_SHARED_BYTES:
                return cc
        return None

    def grid(self, p: ConvProblem) -> tuple[int, int, int]:
        tiles = -(-p.OH // self.TILE_OH) * -(-p.OW // self.TILE_OW)
        return p.N * tiles, p.G * -(-p.KG // self.TILE_K), 1

    def why_not(self, p: ConvProblem) -> Optional[str]:
        if self.channels_per_step(p) is None:
            ph, pw = self.patch_size(p)
            return (f"one input channel needs {self.shared_bytes(p, 1)} bytes of shared memory (a {ph}x{pw} "
                    f"input patch and a {p.KH}x{p.KW}x{self.TILE_K} filter slice), more than the "
                    f"{MAX_SHARED_BYTES} a block may use")
        gx, gy, _ = self.grid(p)
        if gx > 2 ** 31 - 1 or gy > 65535:
            return f"grid ({gx}, {gy}) exceeds CUDA's limits (2^31-1, 65535)"
        return None

    def run(self, p, x, w, out):
        cc = self.channels_per_step(p)
        bits = self.bits(x.size, w.size, out.size)
        self.backend.launch(Launch(
            file=self.file, kernel=entry_name("conv_direct", p.dtype, bits), grid=self.grid(p),
            block=(self.threads, 1, 1), shared_mem=self.shared_bytes(p, cc),
            args=(conv_problem_struct(p), x, w, out, np.int32(cc)), defines=self.defines))


def make_algorithms(backend) -> dict[str, CudaAlgorithm]:
    return {a.name: a for a in (Direct(backend),)}
