"""The CUDA algorithms: each says whether it can run a problem, and builds its launches.

Written once for both CUDA backends: `self.backend.xp` allocates (NumPy or CuPy) and
`self.backend.launch` runs a Launch (emulated on the CPU, or on the GPU through CuPy).
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import numpy as np

from ... import config
from ...dtypes import accumulator
from ...problem import ConvProblem
from ..base import Algorithm
from .launch import Launch, entry_name, grid_stride_end, index_bits, launch_limit_reason
from .params import GEMM_PROBLEM_DTYPE, conv_problem_struct, layout_strides, make_struct
from .sources import default_macros, load_source, source_hash

# Static + dynamic shared memory a block may use without opting in (all of sm_75 .. sm_90).
MAX_SHARED_BYTES = 48 * 1024

AUTO_RULE = ("tensor_core first for float16 and bfloat16, and for float32 with precision='tf32', where the "
             "device has them and channels per group are multiples of 8; then depthwise for one input channel "
             "per group; direct when a group is small (reduction R = KH*KW*CG < 64, or fewer than 16 output "
             "channels per group: first layers, small groups), the filter is not 1x1, and it is not a long "
             "reduction (R >= 256) over less than a wave (132 blocks) of direct's tiles, which only "
             "implicit_gemm's split-K spreads over the GPU; implicit_gemm otherwise: it reads the input in place "
             "as gemm1x1 does (im2col-gemm writes and reads KH*KW times the input through a workspace) and "
             "loads each staged element for 8 FMAs in 128x128 tiles (4 in gemm.cu's 64x64), its tiles and "
             "split-K chosen by the problem's shape (ImplicitGemm.rule); gemm1x1 and im2col-gemm remain for what "
             "it refuses (more than 2^31 output pixels: im2col-gemm works in row blocks); each falls through to "
             "the next that can run the problem")


def direct_blocks(p: ConvProblem) -> int:
    """direct.cu's grid size with its default tiles."""
    m = default_macros("direct")
    return (p.N * -(-p.OH // m["DIRECT_TILE_OH"]) * -(-p.OW // m["DIRECT_TILE_OW"])
            * p.G * -(-p.KG // m["DIRECT_TILE_K"]))


def auto_order(p: ConvProblem) -> list[str]:
    gemms = ["implicit_gemm"] + (["gemm1x1"] if p.is_pointwise else []) + ["gemm"]
    # direct cannot split a reduction: with less than a wave of blocks and a reduction long enough for
    # two split-K slices, implicit_gemm keeps more of the GPU busy (the filter gradient's forward problem:
    # few outputs, OH*OW taps)
    long_few = (p.R >= 2 * IGEMM_MIN_SPLIT_TILES * IGEMM_TILES["128x32"]["BK"]
                and direct_blocks(p) < IGEMM_FILL_BLOCKS)
    small = (p.R < 64 or p.KG < 16) and not p.is_pointwise and not long_few
    order = ["direct", *gemms] if small else [*gemms, "direct"]
    tensor = np.dtype(p.dtype).itemsize == 2 or (p.dtype == np.float32 and p.precision == "tf32")
    return (["tensor_core"] if tensor else []) + (["depthwise"] if p.CG == 1 else []) + order


def problem_sizes(p: ConvProblem) -> tuple[int, int, int]:
    """Elements of the input, filters and output: the arrays every kernel indexes."""
    return math.prod(p.input_shape), math.prod(p.filter_shape), math.prod(p.output_shape)


def grid_stride_blocks(total: int, threads: int) -> int:
    """Blocks for a grid-stride loop over `total` items: enough to fill any GPU, never past CUDA's limit."""
    return max(1, min(-(-total // threads), 1 << 20))


class CudaAlgorithm(Algorithm):
    file = ""
    files: tuple[str, ...] = ()   # every kernel file it launches: their sources key the autotuner's cache
    # -D overrides of tile macros for every kernel file this algorithm launches (macro names carry the
    # file's prefix); grids and shared memory below are computed from the same values.
    defines: tuple[tuple[str, int], ...] = ()

    def __init__(self, backend):
        self.backend = backend

    def macro(self, file: str, name: str) -> int:
        """A tile parameter as the kernel is compiled: the -D override, else the #ifndef default."""
        return dict(self.defines).get(name, default_macros(file)[name])

    def defines_for(self, file: str) -> tuple[tuple[str, int], ...]:
        """The overrides of `file`'s own macros: another file's tile sizes must not make a second build."""
        own = default_macros(file)
        return tuple((k, v) for k, v in self.defines if k in own)

    def configured(self, **macros: int) -> "CudaAlgorithm":
        """A copy of this algorithm compiled with these tile macros (the others keep their values)."""
        clone = copy.copy(self)
        merged = dict(self.defines)
        merged.update(macros)
        clone.defines = tuple(sorted(merged.items()))
        return clone

    def variants(self, p: ConvProblem) -> list["CudaAlgorithm"]:
        """Configured instances worth timing on p, each able to run it; the first is what `auto` uses
        without tuning. Subclasses with tile or launch parameters list theirs."""
        return [self]

    def source_hash(self) -> str:
        """A hash of the kernel sources it launches (our headers inlined): a tuning result holds only
        for the kernels it timed."""
        return source_hash(*(load_source(f) for f in self.files))

    @property
    def variant_key(self) -> str:
        """A stable name of the configuration (the autotuner's cache stores it)."""
        return ",".join(f"{k}={v}" for k, v in self.defines) or "default"

    def _runnable(self, p: ConvProblem, configs: list[dict]) -> list["CudaAlgorithm"]:
        """[self] + each configuration of `configs` that can run p, without repeats."""
        out, keys = [self], {self.variant_key}
        for macros in configs:
            v = self.configured(**macros)
            if v.variant_key not in keys and v.why_not(p) is None:
                out.append(v)
                keys.add(v.variant_key)
        return out

    def bits(self, *spans: int) -> int:
        return index_bits(*spans, force64=config.settings.cuda_force_index64)


class Direct(CudaAlgorithm):
    name = "direct"
    summary = ("direct convolution: input patch + filter slice staged in shared memory, each thread 4 pixels "
               "of a row x 4 channels in registers (a register row window for 3x3 stride 1)")
    file = "direct"
    files = ("direct",)
    MAX_CC = 16  # input channels staged per step, at most
    # Tiles worth timing beside the default 4x32 pixels x 16 channels: narrower channel tiles (128
    # threads each) for groups with few output channels, where 16 leaves threads computing channels
    # that do not exist. None spills on sm_75..sm_90 (NVRTC 13).
    TUNING = (dict(DIRECT_TILE_OH=8, DIRECT_TILE_K=8), dict(DIRECT_TILE_OH=16, DIRECT_TILE_K=4))

    @property
    def TILE_OH(self) -> int:
        return self.macro("direct", "DIRECT_TILE_OH")

    @property
    def TILE_OW(self) -> int:
        return self.macro("direct", "DIRECT_TILE_OW")

    @property
    def TILE_K(self) -> int:
        return self.macro("direct", "DIRECT_TILE_K")

    @property
    def threads(self) -> int:
        return (self.TILE_OH * (self.TILE_OW // self.macro("direct", "DIRECT_THREAD_OW"))
                * (self.TILE_K // self.macro("direct", "DIRECT_THREAD_K")))

    def patch_size(self, p: ConvProblem) -> tuple[int, int]:
        return ((self.TILE_OH - 1) * p.SH + (p.KH - 1) * p.DH + 1,
                (self.TILE_OW - 1) * p.SW + (p.KW - 1) * p.DW + 1)

    def shared_bytes(self, p: ConvProblem, cc: int) -> int:
        ph, pw = self.patch_size(p)
        # rows an odd number of elements apart (fewer bank conflicts), the whole rounded up so that the
        # filter slice starts 16-byte aligned
        patch = -(-cc * ph * (pw | 1) // 4) * 4
        return (patch + p.KH * p.KW * cc * self.TILE_K) * accumulator(p.dtype).itemsize

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

    def variants(self, p: ConvProblem) -> list[CudaAlgorithm]:
        return self._runnable(p, list(self.TUNING))

    def run(self, p, x, w, out):
        cc = self.channels_per_step(p)
        bits = self.bits(x.size, w.size, out.size)
        self.backend.launch(Launch(
            file=self.file, kernel=entry_name("conv_direct", p.dtype, bits), grid=self.grid(p),
            block=(self.threads, 1, 1), shared_mem=self.shared_bytes(p, cc),
            args=(conv_problem_struct(p), x, w, out, np.int32(cc)), defines=self.defines_for(self.file)))


def _address(a) -> int:
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def loader_modes(p: ConvProblem, x, w, tap_tiles: bool) -> tuple[bool, bool, int]:
    """The modes of igemm_tiles.cuh's loaders for one launch of implicit_gemm.cu or tensor_core_gemm.cu:
    vec_a (4-element copies of x: NHWC-like, CG % 4 == 0, x aligned to 4 elements), vec_b (of w: K and
    KG multiples of 4, w aligned) and the module: 2, the tap-tile one, where both hold and `tap_tiles`
    (every A tile within one tap, and what else the kernel's tap-tile module needs); 1, the vector-only
    one, where both hold; else 0, the general one."""
    vec = 4 * x.itemsize
    vec_a = p.layout == "NHWC" and p.CG % 4 == 0 and _address(x) % vec == 0
    vec_b = p.K % 4 == 0 and p.KG % 4 == 0 and _address(w) % vec == 0
    return vec_a, vec_b, 0 if not (vec_a and vec_b) else 2 if tap_tiles else 1


class GemmLaunches(CudaAlgorithm):
    """Builds launches of gemm.cu, with its tile sizes as compiled."""

    # Tiles the autotuner tries beside the default 64x64x16 with 4x4 per thread: 128x128 with 8x8 per
    # thread (more reuse per load), 128x64 with 512 threads for many output pixels, 32x64 for small M.
    # Static shared memory stays below 17 KB (float64); none spills on sm_75..sm_90 (nvcc 13, ptxas -v),
    # which ruled out 128x64 with 8x4 and 64x128 with 4x8 per thread.
    TUNING = (dict(GEMM_BM=128, GEMM_BN=128, GEMM_BK=8, GEMM_TM=8, GEMM_TN=8),
              dict(GEMM_BM=128, GEMM_BN=64, GEMM_BK=16, GEMM_TM=4, GEMM_TN=4),
              dict(GEMM_BM=32, GEMM_BN=64, GEMM_BK=16, GEMM_TM=2, GEMM_TN=4))

    def variants(self, p: ConvProblem) -> list[CudaAlgorithm]:
        return self._runnable(p, list(self.TUNING))

    @property
    def BM(self) -> int:
        return self.macro("gemm", "GEMM_BM")

    @property
    def BN(self) -> int:
        return self.macro("gemm", "GEMM_BN")

    @property
    def threads(self) -> int:
        return self.BM // self.macro("gemm", "GEMM_TM") * (self.BN // self.macro("gemm", "GEMM_TN"))

    def gemm_launch(self, p: ConvProblem, a, w, out, M: int, a_strides: dict, c_m0: int, bits: int) -> Launch:
        """a_strides: a_mi, a_s_img, a_s_m, a_s_r, a_s_g. The output side comes from p's layout."""
        ysN, _, ysW, ysK = layout_strides(p.layout, p.N, p.OH, p.OW, p.K)
        vec = 4 * a.itemsize
        vec_a = (a_strides["a_s_r"] == 1 and p.R % 4 == 0 and _address(a) % vec == 0
                 and all(a_strides[s] % 4 == 0 for s in ("a_s_img", "a_s_m", "a_s_g")))
        vec_b = p.K % 4 == 0 and p.KG % 4 == 0 and _address(w) % vec == 0
        q = make_struct(GEMM_PROBLEM_DTYPE, dict(
            a_strides, b_s_r=p.K, b_s_g=p.KG, c_s_img=ysN, c_s_m=ysW, c_s_k=ysK, c_s_g=p.KG * ysK,
            M=M, KG=p.KG, R=p.R, G=p.G, c_mi=p.OH * p.OW, c_m0=c_m0, vec_a=int(vec_a), vec_b=int(vec_b)))
        return Launch(file="gemm", kernel=entry_name("conv_gemm", p.dtype, bits),
                      grid=(-(-M // self.BM), -(-p.KG // self.BN), p.G),
                      block=(self.threads, 1, 1), shared_mem=0, args=(q, a, w, out), defines=self.defines_for("gemm"))

    def grid_reason(self, p: ConvProblem, M: int) -> Optional[str]:
        gx, gy = -(-M // self.BM), -(-p.KG // self.BN)
        # gemm.cu's row, column and reduction indices are int in both index variants: the last tile's
        # row (m_tile + ml, up to M rounded up to whole tiles), the output row c_m0 + m (< N*OH*OW)
        # and the reduction step r0 + GEMM_BK must all fit.
        ints = {"rows of whole tiles": gx * self.BM, "N*OH*OW": p.M,
                "columns of whole tiles": gy * self.BN, "R + GEMM_BK": p.R + self.macro("gemm", "GEMM_BK")}
        return launch_limit_reason((gx, gy, p.G), ints, "gemm")


class PointwiseGemm(GemmLaunches):
    name = "gemm1x1"
    files = ("gemm",)
    summary = "1x1 stride-1 unpadded: the hand-written GEMM on the input itself, no im2col"

    def why_not(self, p: ConvProblem) -> Optional[str]:
        if not p.is_pointwise:
            return "needs a 1x1 filter with stride 1 and no padding"
        return self.grid_reason(p, p.M)

    def run(self, p, x, w, out):
        sN, _, sW, sC = layout_strides(p.layout, p.N, p.H, p.W, p.C)
        a_strides = dict(a_mi=p.H * p.W, a_s_img=sN, a_s_m=sW, a_s_r=sC, a_s_g=p.CG * sC)
        self.backend.launch(self.gemm_launch(p, x, w, out, p.M, a_strides, 0, self.bits(x.size, w.size, out.size)))


class Im2colGemm(GemmLaunches):
    name = "gemm"
    files = ("im2col", "gemm")
    summary = ("im2col of bounded blocks of output pixels into a workspace, then the hand-written tiled "
               "GEMM, batched over groups, writing straight into the output layout")

    def rows_per_chunk(self, p: ConvProblem) -> int:
        row_bytes = p.G * p.R * np.dtype(p.dtype).itemsize
        return min(max(p.M, 1), config.settings.cuda_workspace_bytes // row_bytes, 2 ** 31 - 1)

    def why_not(self, p: ConvProblem) -> Optional[str]:
        if self.rows_per_chunk(p) < 1:
            return (f"one im2col row ({p.G}x{p.R} elements) exceeds the workspace bound of "
                    f"{config.settings.cuda_workspace_bytes} bytes (gpuconv.set_workspace(cuda_bytes=...))")
        return self.grid_reason(p, self.rows_per_chunk(p))

    def plan(self, p: ConvProblem) -> tuple[int, int, int, int]:
        """Rows per chunk, im2col blocks and threads, and the index width for every launch."""
        mc = self.rows_per_chunk(p)
        total = p.G * mc * p.R  # the workspace, which the largest chunk fills
        threads = self.macro("im2col", "IM2COL_THREADS")
        blocks = grid_stride_blocks(total, threads)
        return mc, blocks, threads, self.bits(*problem_sizes(p), total, grid_stride_end(total, blocks, threads))

    def run(self, p, x, w, out):
        mc, blocks, threads, bits = self.plan(p)
        col = self.backend.xp.empty(p.G * mc * p.R, self.backend.storage_dtype(p.dtype))
        conv = conv_problem_struct(p)
        im2col = entry_name("conv_im2col", p.dtype, bits)
        for m0 in range(0, p.M, mc):
            rows = min(mc, p.M - m0)
            a = col[:p.G * rows * p.R]
            self.backend.launch(Launch(
                file="im2col", kernel=im2col, grid=(blocks, 1, 1),
                block=(threads, 1, 1), shared_mem=0, args=(conv, x, a, np.int32(m0), np.int32(rows)),
                defines=self.defines_for("im2col")))
            a_strides = dict(a_mi=rows, a_s_img=0, a_s_m=p.R, a_s_r=1, a_s_g=rows * p.R)
            self.backend.launch(self.gemm_launch(p, a, w, out, rows, a_strides, m0, bits))


# implicit_gemm.cu's tile configurations (its macros without the IGEMM_ prefix): 128xBN block tiles of
# 8x8 register tiles, BN = 128 or 64 by the output channels per group (a wider tile would multiply
# zeros); 128x32 (8x4 register tiles) for at most 32; 64x64 (8x4) where the others leave a large GPU
# idle; 128x128 with BK=8 as the autotuner's alternative. Stages: as many (up to STAGES) as the
# device's shared memory allows: 128x128 with BK=16 takes 18 KiB per float stage (4 stages: 72 KiB
# with the opt-in; 2 within the portable 48 KiB).
IGEMM_TILES = {
    "128x128": dict(BM=128, BN=128, BK=16, WM=32, WN=64, TM=8, TN=8, STAGES=4),
    "128x64": dict(BM=128, BN=64, BK=16, WM=32, WN=64, TM=8, TN=8, STAGES=4),
    "128x32": dict(BM=128, BN=32, BK=16, WM=32, WN=32, TM=8, TN=4, STAGES=4),
    "64x64": dict(BM=64, BN=64, BK=16, WM=32, WN=32, TM=8, TN=4, STAGES=4),
    "128x128k8": dict(BM=128, BN=128, BK=8, WM=32, WN=64, TM=8, TN=8, STAGES=4),
}
# Blocks that fill a large GPU once (132 SMs on an H100 SXM, one 128x128 block each): fewer 128xBN
# blocks than this take 64x64 tiles, and fewer than half of it split the reduction.
IGEMM_FILL_BLOCKS = 132
IGEMM_MAX_SPLIT = 16
IGEMM_MIN_SPLIT_TILES = 8   # reduction tiles per split-K slice, at least


class ImplicitGemm(CudaAlgorithm):
    """implicit_gemm.cu: A read from the input itself through the analytic iterator (igemm_tiles.cuh).

    The registered instance (tiles=None) runs `variants(p)[0]`, the documented rule's choice;
    `variants(p)` lists configured instances (tiles, split-K factor) for the autotuner."""
    name = "implicit_gemm"
    summary = ("implicit GEMM: the input's receptive fields read straight into warp-tiled 8x8 register "
               "tiles through a multi-stage cp.async pipeline, no workspace; split-K for small M*KG")
    file = "implicit_gemm"

    def __init__(self, backend, tiles: Optional[str] = None, split: int = 1, stages: Optional[int] = None):
        super().__init__(backend)
        if tiles is not None and tiles not in IGEMM_TILES:
            raise ValueError(f"tiles={tiles!r} is not allowed: expected one of {sorted(IGEMM_TILES)}")
        if not isinstance(split, int) or isinstance(split, bool) or not 1 <= split <= 65535:
            raise ValueError(f"split={split!r} is not allowed: expected an int from 1 to 65535")
        self.tiles, self.split = tiles, split
        cfg = IGEMM_TILES.get(tiles, {})
        if stages is not None and not (isinstance(stages, int) and 2 <= stages <= 4):
            raise ValueError(f"stages={stages!r} is not allowed: expected 2, 3 or 4")
        self.stages = stages if stages is not None else cfg.get("STAGES")
        self.defines = tuple((f"IGEMM_{k}", v if k != "STAGES" else self.stages) for k, v in cfg.items())

    def configured(self, tiles: str, split: int, p: ConvProblem) -> "ImplicitGemm":
        """An instance of `tiles` and `split` with the most stages (2 to 4) that fit shared memory; half
        types always take 2 (their register double buffer uses no more)."""
        most = 2 if np.dtype(p.dtype).itemsize < 4 else IGEMM_TILES[tiles]["STAGES"]
        for stages in range(most, 1, -1):
            algo = ImplicitGemm(self.backend, tiles, split, stages)
            if algo.shared_bytes(p) <= self.backend.shared_limit():
                return algo
        return ImplicitGemm(self.backend, tiles, split, 2)

    @property
    def variant_key(self) -> str:
        if self.tiles is None:
            return "auto"
        return ",".join([f"{k[len('IGEMM_'):]}={v}" for k, v in self.defines] + [f"SPLIT_K={self.split}"])

    def tile(self, name: str) -> int:
        return self.macro(self.file, f"IGEMM_{name}")

    @property
    def threads(self) -> int:
        return 32 * (self.tile("BM") // self.tile("WM")) * (self.tile("BN") // self.tile("WN"))

    def reduction_tiles(self, p: ConvProblem) -> int:
        return -(-p.R // self.tile("BK"))

    def splits(self, p: ConvProblem) -> tuple[int, int]:
        """(split_tiles, slices): reduction tiles per slice and the slices that makes (<= self.split)."""
        tiles = self.reduction_tiles(p)
        per = -(-tiles // min(self.split, max(tiles, 1)))
        return per, -(-tiles // per)

    def shared_bytes(self, p: ConvProblem) -> int:
        """Dynamic shared memory: the stages the kernel's pipeline uses, in the accumulator type."""
        bk = self.tile("BK")
        stage = self.tile("BM") * (bk + self.tile("PAD")) + bk * self.tile("BN")
        return self.tile("STAGES") * stage * accumulator(p.dtype).itemsize

    def grid(self, p: ConvProblem) -> tuple[int, int, int]:
        return -(-p.M // self.tile("BM")), -(-p.KG // self.tile("BN")), p.G * self.splits(p)[1]

    def blocks(self, p: ConvProblem) -> int:
        return math.prod(self.grid(p))

    def workspace_elements(self, p: ConvProblem) -> int:
        slices = self.splits(p)[1]
        return slices * p.G * p.M * p.KG if slices > 1 else 1

    def why_not(self, p: ConvProblem) -> Optional[str]:
        if self.tiles is None:
            return self.variants_or_reason(p)[1]
        gx, gy, gz = self.grid(p)
        # row, column and reduction indices are int in both index variants
        ints = {"rows of whole tiles": gx * self.tile("BM"), "columns of whole tiles": gy * self.tile("BN"),
                "R + IGEMM_BK": p.R + self.tile("BK")}
        why = launch_limit_reason((gx, gy, gz), ints, self.file)
        if why is not None:
            return why
        smem, limit = self.shared_bytes(p), self.backend.shared_limit()
        if smem > limit:
            return f"{smem} bytes of shared memory for tiles {self.tiles}, more than the {limit} a block may use"
        ws = self.workspace_elements(p) * accumulator(p.dtype).itemsize
        if self.split > 1 and ws > config.settings.cuda_workspace_bytes:
            return (f"split-K partial sums take {ws} bytes, more than the workspace bound of "
                    f"{config.settings.cuda_workspace_bytes} bytes (gpuconv.set_workspace(cuda_bytes=...))")
        return None

    def rule(self, p: ConvProblem) -> tuple[str, int]:
        """The documented choice without tuning: tiles by the problem's shape, then a split of the
        reduction when even those tiles leave most of a large GPU idle."""
        tiles = "128x32" if p.KG <= 32 else "128x64" if p.KG <= 64 else "128x128"
        if tiles != "128x32" and ImplicitGemm(self.backend, tiles).blocks(p) < IGEMM_FILL_BLOCKS:
            tiles = "64x64"
        blocks = ImplicitGemm(self.backend, tiles).blocks(p)
        tiles_r = ImplicitGemm(self.backend, tiles).reduction_tiles(p)
        split = 1
        while (split * 2 <= IGEMM_MAX_SPLIT and blocks * split * 2 <= IGEMM_FILL_BLOCKS
               and tiles_r // (split * 2) >= IGEMM_MIN_SPLIT_TILES):
            split *= 2
        return tiles, split

    def variants_or_reason(self, p: ConvProblem) -> tuple[list["ImplicitGemm"], Optional[str]]:
        tiles, split = self.rule(p)
        order = [(tiles, split), (tiles, 1)] + [(t, 1) for t in IGEMM_TILES if t != tiles]
        order += [(tiles, s) for s in (2, 4, 8, 16) if s != split]
        order = list(dict.fromkeys(order))
        found, reasons, slices_seen = [], [], set()
        for t, s in order:
            algo = self.configured(t, s, p)
            slices = algo.splits(p)[1]
            if (s > 1 and slices < 2) or (t, slices) in slices_seen:
                continue  # too few reduction tiles to split, or the same slices as a smaller split
            slices_seen.add((t, slices))
            why = algo.why_not(p)
            if why is None:
                found.append(algo)
            else:
                reasons.append(f"{algo.variant_key}: {why}")
        return found, None if found else "no tile configuration can run it (" + "; ".join(reasons) + ")"

    def variants(self, p: ConvProblem) -> list["ImplicitGemm"]:
        """Configured instances worth trying on p, the rule's choice first (see rule)."""
        if self.tiles is not None:
            return [self] if self.why_not(p) is None else []
        return self.variants_or_reason(p)[0]

    def index_spans(self, p: ConvProblem) -> tuple[int, ...]:
        """Element offsets the kernel forms: the arrays, the split-K workspace, and a row's base offset
        (the top-left tap of an output pixel, which padding may put outside the input)."""
        sN, sH, sW, sC = layout_strides(p.layout, p.N, p.H, p.W, p.C)
        top = max(p.PT, (p.OH - 1) * p.SH - p.PT)
        left = max(p.PL, (p.OW - 1) * p.SW - p.PL)
        row = (p.N - 1) * sN + top * sH + left * sW + p.C * sC
        return (*problem_sizes(p), self.workspace_elements(p), row)

    def run(self, p, x, w, out):
        if self.tiles is None:
            return self.variants(p)[0].run(p, x, w, out)
        xp = self.backend.xp
        per, slices = self.splits(p)
        acc = accumulator(p.dtype)
        part = xp.empty(self.workspace_elements(p), acc)
        # the tap-tile module where every A tile lies within one tap (the common case)
        vec_a, vec_b, mode = loader_modes(p, x, w, tap_tiles=p.CG % self.tile("BK") == 0)
        defines = self.defines + (() if mode == 2 else (("IGEMM_VEC", mode),))
        conv = conv_problem_struct(p)
        threads = self.macro("splitk_reduce", "SPLITK_THREADS")
        total = p.G * p.M * p.KG
        blocks = grid_stride_blocks(total, threads)
        bits = self.bits(*self.index_spans(p), grid_stride_end(total, blocks, threads) if slices > 1 else 0)
        self.backend.launch(Launch(
            file=self.file, kernel=entry_name("conv_igemm", p.dtype, bits), grid=self.grid(p),
            block=(self.threads, 1, 1), shared_mem=self.shared_bytes(p),
            args=(conv, x, w, out, part, np.int32(vec_a), np.int32(vec_b), np.int32(per)), defines=defines))
        if slices > 1:
            self.backend.launch(Launch(
                file="splitk_reduce", kernel=entry_name("conv_splitk_reduce", p.dtype, bits), grid=(blocks, 1, 1),
                block=(threads, 1, 1), shared_mem=0, args=(conv, part, out, np.int32(slices))))


class Depthwise(CudaAlgorithm):
    name = "depthwise"
    files = ("depthwise",)
    summary = ("one input channel per group: each thread PX output pixels x 16 bytes of channels (NHWC, "
               "aligned) from a register window of input columns, no bounds checks inside the image")
    file = "depthwise"
    # Beside the default (4 pixels per thread, 256-thread blocks): 2 pixels per thread (twice the
    # threads, for small images) and 128-thread blocks. None spills on sm_75..sm_90 (NVRTC 13).
    TUNING = (dict(DEPTHWISE_PX=2), dict(DEPTHWISE_THREADS=128))

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None if p.CG == 1 else f"needs one input channel per group (CG=1), got CG={p.CG}"

    def pixels_per_thread(self, p: ConvProblem, lanes: int) -> int:
        """DEPTHWISE_PX, halved for 8-lane half vectors (the kernel's PixelsPerThread)."""
        px = self.macro("depthwise", "DEPTHWISE_PX")
        return max(px // 2, 1) if lanes > 1 and np.dtype(p.dtype).itemsize == 2 else px

    @staticmethod
    def lanes(p: ConvProblem, x, w, out) -> int:
        """Channels per 16-byte access when the kernel may use them (NHWC, one output channel per input
        channel, K a multiple of the lane count, every array 16-byte aligned), else 1."""
        itemsize = np.dtype(p.dtype).itemsize
        v = 16 // itemsize
        ok = (p.layout == "NHWC" and p.KG == 1 and p.K % v == 0
              and all(_address(a) % 16 == 0 for a in (x, w, out)))
        return v if ok else 1

    def plan(self, p: ConvProblem, lanes: int = 1) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
        """Grid, block and index width for `lanes` channels per access. NHWC puts lanes on channel groups
        (blocks as wide as the channel groups, up to the whole block), NCHW on pixel groups along rows."""
        threads = self.macro("depthwise", "DEPTHWISE_THREADS")
        groups = -(-p.OW // self.pixels_per_thread(p, lanes))
        items = p.N * p.OH * groups
        channel_groups = p.K // lanes
        if p.layout == "NHWC":
            bx = min(1 << max(channel_groups - 1, 0).bit_length(), threads)
            by = threads // bx
            grid = (-(-channel_groups // bx), min(-(-items // by), 65535), 1)
            end = grid_stride_end(items, grid[1], by)
        else:
            bx, by = threads, 1
            grid = (grid_stride_blocks(items, threads), min(channel_groups, 65535), 1)
            end = grid_stride_end(items, grid[0], bx)
        return grid, (bx, by, 1), self.bits(*problem_sizes(p), end)

    def variants(self, p: ConvProblem) -> list[CudaAlgorithm]:
        return self._runnable(p, list(self.TUNING))

    def run(self, p, x, w, out):
        lanes = self.lanes(p, x, w, out)
        grid, block, bits = self.plan(p, lanes)
        self.backend.launch(Launch(
            file=self.file, kernel=entry_name("conv_depthwise", p.dtype, bits),
            grid=grid, block=block, shared_mem=0,
            args=(conv_problem_struct(p), x, w, out, np.int32(lanes > 1)), defines=self.defines_for(self.file)))


def make_algorithms(backend) -> dict[str, CudaAlgorithm]:
    from .tensor_core import TensorCoreGemm
    return {a.name: a for a in (Direct(backend), Depthwise(backend), Im2colGemm(backend), PointwiseGemm(backend),
                                ImplicitGemm(backend), TensorCoreGemm(backend))}
