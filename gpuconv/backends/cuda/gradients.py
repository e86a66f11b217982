"""The CUDA algorithms of the two conv2d gradients (gpuconv.conv2d_backprop_input / _filter), for both
CUDA backends, as algorithms.py is for the forward pass.

input gradient:  "forward-conv": the forward convolutions of dy with the flipped, channel-swapped
                 filters, one per stride phase (forward_conv_gradient.py), on the forward pass's own
                 kernels as its auto rule picks them (implicit GEMM, tensor cores for half types,
                 depthwise), through its non-finite filter handling; small filter copies, and with a
                 stride each phase's result copied into its strided view of dx.
                 "gather" (kernels/grad_input.cu): one thread per input element adds exactly the taps
                 that reach it; no workspace, no atomics, but no operand reuse in shared memory.
filter gradient: "depthwise" (kernels/grad_filter_depthwise.cu) for one input channel per group: one
                 thread per (pixel slice, tap, channel) sum, the slices added by split_k_reduce.cu.
                 "forward-conv": one forward convolution of the input with batch and channels swapped
                 (CG images of G*N channels in G groups), dy as its filters, stride and dilation
                 swapped (forward_conv_gradient.py), on the forward pass's kernels (implicit GEMM with
                 its deterministic split-K, tensor cores); x and dy are copied once, transposed, within
                 the workspace bound.
                 "splitk-gemm": dW = im2col(x)^T @ dy per group, a GEMM whose reduction runs over all
                 N*OH*OW output pixels. It is split into slices of pixels: im2col.cu unfolds a chunk of
                 slices into the workspace, gemm_splitk.cu (gemm.cu's body) writes one float partial dW
                 per slice, and split_k_reduce.cu adds the partials in slice order and rounds once. The
                 slice count depends only on the problem and the workspace bound, so every run (and
                 every GPU) adds the same numbers in the same order: bit-identical results. Unlike
                 the others it multiplies its im2col's padding zeros by dy (a NaN/Inf there gives NaN,
                 as TF with oneDNN and PyTorch do, not the definition's value).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ... import config
from ...dtypes import accumulator
from ...problem import ConvProblem
from .. import forward_conv_gradient
from .algorithms import CudaAlgorithm, _address, grid_stride_blocks, problem_sizes
from .launch import INDEX32_LIMIT, Launch, entry_name, grid_stride_end
from .params import GEMM_PROBLEM_DTYPE, conv_problem_struct, make_struct

INPUT_AUTO_RULE = ("forward-conv, except gather for a strided depthwise layer (one channel per group, no "
                   "multiplier), where the phases move about as many bytes in 3 launches per phase")
FILTER_AUTO_RULE = ("depthwise for one input channel per group (CG=1); forward-conv where the "
                    "transposed copies fit the workspace bound; else splitk-gemm")


class ForwardConvInput(CudaAlgorithm):
    name = "forward-conv"
    summary = ("dx as forward convolutions of dy with the flipped, channel-swapped filters, one per stride "
               "phase, on the forward pass's kernels as its auto rule picks them (implicit GEMM, tensor "
               "cores, depthwise)")

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None

    def run(self, p: ConvProblem, w, dy, out) -> None:
        forward_conv_gradient.run(p, w, dy, out, self.backend)


class GatherInput(CudaAlgorithm):
    name = "gather"
    summary = ("input gradient as a gather: one thread per input element sums the (kh, kw, k) taps that "
               "reach it, skipping a strided layer's zero taps; no workspace, no atomics")
    file = "grad_input"

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None  # a grid-stride loop: any size, any layout, groups and depthwise

    def run(self, p: ConvProblem, w, dy, out) -> None:
        # The kernel reads the filters as [KH, KW, G, KG, CG], so that threads taking consecutive input
        # channels read consecutive filter values; for CG = 1 that is the HWIO array itself.
        wt = w if p.CG == 1 else self.backend.xp.ascontiguousarray(
            w.reshape(p.KH, p.KW, p.CG, p.G, p.KG).transpose(0, 1, 3, 4, 2))
        threads = self.macro(self.file, "GRAD_INPUT_THREADS")
        total = out.size
        blocks = grid_stride_blocks(total, threads)
        bits = self.bits(*problem_sizes(p), grid_stride_end(total, blocks, threads))
        self.backend.launch(Launch(
            file=self.file, kernel=entry_name("conv_grad_input", p.dtype, bits), grid=(blocks, 1, 1),
            block=(threads, 1, 1), shared_mem=0, args=(conv_problem_struct(p), dy, wt, out),
            defines=self.defines))


class ForwardConvFilter(CudaAlgorithm):
    name = "forward-conv"
    summary = ("dw as one forward convolution: the input with batch and channels swapped convolved with dy as "
               "the filters, stride and dilation swapped, on the forward pass's kernels as its auto rule picks "
               "them (implicit GEMM with split-K, tensor cores); groups stay groups (CG images of G*N channels)")

    def why_not(self, p: ConvProblem) -> Optional[str]:
        copies = (p.N * p.H * p.W * p.C + p.M * p.K) * np.dtype(p.dtype).itemsize
        if copies > config.settings.cuda_workspace_bytes:
            return (f"the transposed copies of the input and dy ({copies} bytes) exceed the workspace bound of "
                    f"{config.settings.cuda_workspace_bytes} bytes (gpuconv.set_workspace(cuda_bytes=...))")
        return None

    def run(self, p: ConvProblem, x, dy, out) -> None:
        forward_conv_gradient.run_filter(p, x, dy, out, self.backend)


class SplitKFilter(CudaAlgorithm):
    name = "splitk-gemm"
    summary = ("filter gradient as im2col(x)^T @ dy, its N*OH*OW-long reduction split into pixel slices "
               "(one float partial each, in the workspace) and summed in a fixed order by a second kernel")
    file = "gemm_splitk"
    # Enough blocks over all slices to fill a large GPU several times; more slices only add partials.
    TARGET_BLOCKS = 1024
    MAX_SPLITS = 256

    def tile(self, name: str) -> int:
        return self.macro(self.file, name)

    @property
    def threads(self) -> int:
        return self.tile("GEMM_BM") // self.tile("GEMM_TM") * (self.tile("GEMM_BN") // self.tile("GEMM_TN"))

    def _bytes(self, p: ConvProblem, splits: int) -> tuple[int, int]:
        """(workspace bytes of one slice's im2col rows, of the partials) for `splits` slices."""
        length = -(-p.M // splits)
        partials = splits > 1 or accumulator(p.dtype) != np.dtype(p.dtype)
        return (length * p.G * p.R * np.dtype(p.dtype).itemsize,
                splits * p.R * p.K * accumulator(p.dtype).itemsize if partials else 0)

    def splits(self, p: ConvProblem) -> Optional[int]:
        """The slice count: the one nearest the wanted count whose partials plus one slice of im2col rows
        fit the workspace bound, or None when none does."""
        if p.M == 0:
            return 1
        tiles = -(-p.R // self.tile("GEMM_BM")) * -(-p.KG // self.tile("GEMM_BN")) * p.G
        want = max(1, min(-(-self.TARGET_BLOCKS // tiles), self.MAX_SPLITS, p.M))
        bound = config.settings.cuda_workspace_bytes
        candidates = {want, p.M, 1}
        for i in range(1, 64):
            candidates |= {min(want << i, p.M), max(want >> i, 1)}
        fitting = [s for s in candidates if sum(self._bytes(p, s)) <= bound]
        if not fitting:
            return None
        s = min(fitting, key=lambda s: (abs(math.log(s / want)), s))
        return -(-p.M // -(-p.M // s))  # slices of equal length, the last one shorter: no empty slice

    def why_not(self, p: ConvProblem) -> Optional[str]:
        s = self.splits(p)
        if s is None:
            return (f"no split of the N*OH*OW={p.M} pixels fits the workspace bound of "
                    f"{config.settings.cuda_workspace_bytes} bytes (im2col rows of a slice plus one "
                    f"float partial of {p.R * p.K} elements per slice; gpuconv.set_workspace(cuda_bytes=...))")
        length = -(-p.M // s)
        ints = {"N*OH*OW": p.M, "slice length + GEMM_BK": length + self.tile("GEMM_BK"),
                "R rounded up to whole tiles": -(-p.R // self.tile("GEMM_BM")) * self.tile("GEMM_BM")}
        for what, v in ints.items():
            if v > INDEX32_LIMIT:
                return f"{what} = {v} overflows the 32-bit int indices of gemm.cuh and im2col.cu"
        gy = -(-p.KG // self.tile("GEMM_BN"))
        if gy > 65535 or min(p.G, s) > 65535:
            return f"grid ({-(-p.R // self.tile('GEMM_BM'))}, {gy}, {min(p.G, s)}) exceeds CUDA's limits"
        return None

    def plan(self, p: ConvProblem) -> tuple[int, int, int]:
        """(slices, pixels per slice, slices per im2col chunk)."""
        s = self.splits(p)
        length = -(-p.M // s)
        row_bytes, partial_bytes = self._bytes(p, s)
        per_chunk = min(s, (config.settings.cuda_workspace_bytes - partial_bytes) // row_bytes)
        return s, length, per_chunk

    def _gemm(self, p, a, b, c, length: int, z: int, a_s_g: int, b_s_g: int, c_s_g: int, bits: int) -> Launch:
        """C[r, k] = sum over `length` pixels of col[pixel][r] * dy[pixel][k], for z slices or groups."""
        vec = 4 * b.itemsize
        vec_b = p.K % 4 == 0 and p.KG % 4 == 0 and b_s_g % 4 == 0 and _address(b) % vec == 0
        q = make_struct(GEMM_PROBLEM_DTYPE, dict(
            a_s_img=0, a_s_m=1, a_s_r=p.R, a_s_g=a_s_g, b_s_r=p.K, b_s_g=b_s_g,
            c_s_img=0, c_s_m=p.K, c_s_k=1, c_s_g=c_s_g, M=p.R, KG=p.KG, R=length, G=z,
            a_mi=p.R, c_mi=p.R, c_m0=0, vec_a=0, vec_b=int(vec_b)))
        return Launch(file=self.file, kernel=entry_name("conv_gemm_splitk", p.dtype, bits),
                      grid=(-(-p.R // self.tile("GEMM_BM")), -(-p.KG // self.tile("GEMM_BN")), z),
                      block=(self.threads, 1, 1),
                      shared_mem=0, args=(q, a, b, c), defines=self.defines)

    def run(self, p: ConvProblem, x, dy, out) -> None:
        xp = self.backend.xp
        splits, length, per_chunk = self.plan(p)
        rk = p.R * p.K
        if p.layout == "NCHW":  # gemm reads dy's pixel rows with unit channel stride: one NHWC copy
            dy = xp.ascontiguousarray(dy.transpose(0, 2, 3, 1))
        dyf = dy.reshape(-1)
        col = xp.empty(p.G * per_chunk * length * p.R, self.backend.storage_dtype(p.dtype))
        direct = splits == 1 and accumulator(p.dtype) == np.dtype(p.dtype)
        parts = out.reshape(-1) if direct else xp.empty(splits * rk, accumulator(p.dtype))
        im2col_threads = self.macro("im2col", "IM2COL_THREADS")
        im2col_blocks = grid_stride_blocks(col.size, im2col_threads)
        reduce_threads = self.macro("split_k_reduce", "SPLIT_K_REDUCE_THREADS")
        reduce_blocks = grid_stride_blocks(rk, reduce_threads)
        bits = self.bits(*problem_sizes(p), col.size, parts.size,
                         grid_stride_end(col.size, im2col_blocks, im2col_threads),
                         grid_stride_end(rk, reduce_blocks, reduce_threads))
        conv = conv_problem_struct(p)
        for s0 in range(0, splits, per_chunk):
            m0 = s0 * length
            rows = min(per_chunk * length, p.M - m0)
            self.backend.launch(Launch(
                file="im2col", kernel=entry_name("conv_im2col", p.dtype, bits), grid=(im2col_blocks, 1, 1),
                block=(im2col_threads, 1, 1), shared_mem=0,
                args=(conv, x, col[:p.G * rows * p.R], np.int32(m0), np.int32(rows)), defines=self.defines))
            full, tail = divmod(rows, length)
            for first, count, n in ((0, full, length), (full, 1, tail)):
                if count == 0 or n == 0:
                    continue
                # col is [G][rows][R] for this chunk, dy [pixels][K], the partials [slice][R][K]; the grid's
                # z runs over whichever of slices and groups is longer, a loop over the other.
                if count >= p.G:
                    for g in range(p.G):
                        self.backend.launch(self._gemm(
                            p, col[(g * rows + first * length) * p.R:], dyf[(m0 + first * length) * p.K + g * p.KG:],
                            parts[(s0 + first) * rk + g * p.KG:], n, count, length * p.R, length * p.K, rk, bits))
                else:
                    for j in range(first, first + count):
                        self.backend.launch(self._gemm(
                            p, col[j * length * p.R:], dyf[(m0 + j * length) * p.K:], parts[(s0 + j) * rk:],
                            n, p.G, rows * p.R, p.KG, p.KG, bits))
        if not direct:
            self.backend.launch(Launch(
                file="split_k_reduce", kernel=entry_name("split_k_reduce", p.dtype, bits),
                grid=(reduce_blocks, 1, 1), block=(reduce_threads, 1, 1), shared_mem=0,
                args=(parts, out.reshape(-1), np.int64(rk), np.int32(splits)), defines=self.defines))


class DepthwiseFilter(CudaAlgorithm):
    name = "depthwise"
    summary = ("depthwise filter gradient: one thread per (pixel slice, tap, channel) sum into float partials, "
               "summed in slice order by a second kernel")
    file = "grad_filter_depthwise"
    TARGET_THREADS = 1 << 16   # threads over all slices: enough to fill a large GPU

    def splits(self, p: ConvProblem) -> int:
        """Slices of equal length (the last one shorter), as many as fill the GPU and fit the workspace."""
        count = p.KH * p.KW * p.K
        by_bound = config.settings.cuda_workspace_bytes // (count * accumulator(p.dtype).itemsize)
        s = max(1, min(-(-self.TARGET_THREADS // count), 65535, p.M, by_bound))
        return -(-p.M // -(-p.M // s)) if p.M else 1

    def why_not(self, p: ConvProblem) -> Optional[str]:
        if p.CG != 1:
            return f"needs one input channel per group (CG=1), got CG={p.CG}"
        count = p.KH * p.KW * p.K
        partial = count * accumulator(p.dtype).itemsize
        if partial > config.settings.cuda_workspace_bytes:
            return (f"one partial filter gradient ({partial} bytes) exceeds the workspace bound of "
                    f"{config.settings.cuda_workspace_bytes} bytes (gpuconv.set_workspace(cuda_bytes=...))")
        threads = self.macro(self.file, "GRAD_FILTER_DW_THREADS")
        end = grid_stride_end(count, grid_stride_blocks(count, threads), threads)
        if end > INDEX32_LIMIT:
            return f"KH*KW*K = {count} filter elements overflow the kernel's int index (at most {INDEX32_LIMIT})"
        return None

    def run(self, p: ConvProblem, x, dy, out) -> None:
        count = p.KH * p.KW * p.K
        splits = self.splits(p)
        length = -(-p.M // splits)
        parts = self.backend.xp.empty(splits * count, accumulator(p.dtype))
        threads = self.macro(self.file, "GRAD_FILTER_DW_THREADS")
        blocks = grid_stride_blocks(count, threads)
        reduce_threads = self.macro("split_k_reduce", "SPLIT_K_REDUCE_THREADS")
        reduce_blocks = grid_stride_blocks(count, reduce_threads)
        bits = self.bits(*problem_sizes(p), parts.size, p.M + length,
                         grid_stride_end(count, reduce_blocks, reduce_threads))
        self.backend.launch(Launch(
            file=self.file, kernel=entry_name("conv_grad_filter_dw", p.dtype, bits), grid=(blocks, splits, 1),
            block=(threads, 1, 1), shared_mem=0, args=(conv_problem_struct(p), x, dy, parts, np.int32(length)),
            defines=self.defines))
        self.backend.launch(Launch(
            file="split_k_reduce", kernel=entry_name("split_k_reduce", p.dtype, bits),
            grid=(reduce_blocks, 1, 1), block=(reduce_threads, 1, 1), shared_mem=0,
            args=(parts, out.reshape(-1), np.int64(count), np.int32(splits)), defines=self.defines))


def auto_order(algos: dict[str, CudaAlgorithm], which: str, p: ConvProblem) -> list[CudaAlgorithm]:
    """The algorithms in the order "auto" tries them for p. Emulator counters (global sector bytes per
    multiply-add, batch 1, 28x28x64, stride 2), gather vs forward-conv with its phase copies: 3x3 5.75 vs
    0.32, 1x1 5.16 vs 0.54, depthwise 3x3 11.8 vs 10.9 (its 4 phases: 12 launches against 1)."""
    order = list(algos.values())
    if which == "input" and p.CG == 1 and p.KG == 1 and not forward_conv_gradient.is_one_phase(p):
        order.sort(key=lambda a: a.name != "gather")
    return order


def make_gradient_algorithms(backend) -> dict[str, dict[str, CudaAlgorithm]]:
    """Each gradient's algorithms, in the order "auto" tries them."""
    return {"input": {a.name: a for a in (ForwardConvInput(backend), GatherInput(backend))},
            "filter": {a.name: a for a in (DepthwiseFilter(backend), ForwardConvFilter(backend),
                                           SplitKFilter(backend))}}


AUTO_RULES = {"input": INPUT_AUTO_RULE, "filter": FILTER_AUTO_RULE}
