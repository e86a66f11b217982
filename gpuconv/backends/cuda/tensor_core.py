"""The tensor-core algorithm (kernels/tensor_core_gemm.cu): the implicit GEMM on WMMA fragments.

float16 (sm_70+) and bfloat16 (sm_80+) always; float32 only with precision="tf32" (sm_80+), its inputs
rounded to TF32. The output and input channels of a group must be multiples of 8: the shapes where
tensor cores pay (and the loaders' 4-element copies apply in NHWC). The emulator states sm_80
(EMULATED_ARCH): its host builds take every sm_80+ code path of the kernels.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...dtypes import bfloat16
from ...problem import ConvProblem
from .algorithms import CudaAlgorithm, _address, loader_modes, problem_sizes
from .launch import Launch, entry_name, launch_limit_reason
from .params import conv_problem_struct, layout_strides

# The oldest architecture each input type runs on, as (major, minor).
MIN_ARCH = {np.dtype(np.float16): (7, 0), bfloat16: (8, 0), np.dtype(np.float32): (8, 0)}
CHANNEL_MULTIPLE = 8


class TensorCoreGemm(CudaAlgorithm):
    name = "tensor_core"
    summary = ("implicit GEMM on tensor cores (WMMA, float32 accumulation): float16, bfloat16, and float32 "
               "as TF32 with precision='tf32'; channels per group multiples of 8")
    file = "tensor_core_gemm"

    def __init__(self, backend, stages: Optional[int] = None):
        super().__init__(backend)
        self.defines = () if stages is None else (("TC_STAGES", stages),)

    def tile(self, name: str) -> int:
        return self.macro(self.file, f"TC_{name}")

    @property
    def threads(self) -> int:
        return 32 * (self.tile("BM") // self.tile("WM")) * (self.tile("BN") // self.tile("WN"))

    def stage_elements(self, p: ConvProblem) -> int:
        """One pipeline stage (A and B tiles, rows padded by 16 bytes) in input elements."""
        size = np.dtype(p.dtype).itemsize
        bk, pad = self.tile("BK_BYTES") // size, 16 // size
        return self.tile("BM") * (bk + pad) + bk * (self.tile("BN") + pad)

    def stages(self) -> int:
        """Pipeline stages the kernel uses on this backend's architecture (sm_75: a 2-stage register
        double buffer)."""
        return self.tile("STAGES") if self.backend.compute_capability() >= (8, 0) else 2

    def shared_bytes(self, p: ConvProblem) -> int:
        stages = self.stages() * self.stage_elements(p) * np.dtype(p.dtype).itemsize
        epilogue = self.threads // 32 * 16 * self.tile("LDE") * 4
        return max(stages, epilogue)

    def configured(self, p: ConvProblem) -> "TensorCoreGemm":
        """This algorithm with the most stages (up to the kernel's default) that fit the device."""
        for stages in range(self.tile("STAGES"), 1, -1):
            algo = self if stages == self.tile("STAGES") else TensorCoreGemm(self.backend, stages)
            if algo.shared_bytes(p) <= self.backend.shared_limit():
                return algo
        return TensorCoreGemm(self.backend, 2)

    def grid(self, p: ConvProblem) -> tuple[int, int, int]:
        return -(-p.M // self.tile("BM")), -(-p.KG // self.tile("BN")), p.G

    def why_not(self, p: ConvProblem) -> Optional[str]:
        dtype = np.dtype(p.dtype)
        if dtype not in MIN_ARCH:
            return f"tensor cores take float16, bfloat16 or float32 (as TF32), not {dtype}"
        if dtype == np.float32 and p.precision != "tf32":
            return "float32 runs on tensor cores only as TF32, which needs precision='tf32' (the default is 'highest')"
        arch, need = self.backend.compute_capability(), MIN_ARCH[dtype]
        if arch < need:
            what = "TF32" if dtype == np.float32 else str(dtype)
            return (f"{what} tensor cores need sm_{need[0]}{need[1]} or newer; this device is "
                    f"sm_{arch[0]}{arch[1]}")
        if p.CG % CHANNEL_MULTIPLE or p.KG % CHANNEL_MULTIPLE:
            return (f"input and output channels per group must be multiples of {CHANNEL_MULTIPLE} (got "
                    f"CG={p.CG}, KG={p.KG})")
        gx, gy, gz = self.grid(p)
        # row, column and reduction indices are int in both index variants
        ints = {"rows of whole tiles": gx * self.tile("BM"), "columns of whole tiles": gy * self.tile("BN"),
                "R + a reduction tile": p.R + self.tile("BK_BYTES")}
        why = launch_limit_reason((gx, gy, gz), ints, self.file)
        if why is not None:
            return why
        smem, limit = self.configured(p).shared_bytes(p), self.backend.shared_limit()
        if smem > limit:
            return f"{smem} bytes of shared memory, more than the {limit} a block may use"
        return None

    def index_spans(self, p: ConvProblem) -> tuple[int, ...]:
        """The arrays, and the loader's row base offset (an output pixel's top-left tap, which padding
        may put outside the input)."""
        sN, sH, sW, sC = layout_strides(p.layout, p.N, p.H, p.W, p.C)
        top = max(p.PT, (p.OH - 1) * p.SH - p.PT)
        left = max(p.PL, (p.OW - 1) * p.SW - p.PL)
        return (*problem_sizes(p), (p.N - 1) * sN + top * sH + left * sW + p.C * sC)

    def run(self, p, x, w, out):
        algo = self.configured(p)
        # the tap-tile module copies 16-byte chunks: a tile within one tap, and x, w and the filter rows
        # on 16 bytes
        vec_a, vec_b, mode = loader_modes(p, x, w, tap_tiles=(
            p.CG % (self.tile("BK_BYTES") // x.itemsize) == 0 and p.K * x.itemsize % 16 == 0
            and _address(x) % 16 == 0 and _address(w) % 16 == 0))
        self.backend.launch(Launch(
            file=self.file, kernel=entry_name("conv_tc", p.dtype, self.bits(*self.index_spans(p))),
            grid=self.grid(p), block=(self.threads, 1, 1), shared_mem=algo.shared_bytes(p),
            args=(conv_problem_struct(p), x, w, out, np.int32(vec_a), np.int32(vec_b)),
            defines=algo.defines + (() if mode == 2 else (("TC_VEC", mode),))))
