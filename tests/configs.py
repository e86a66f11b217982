"""Test configurations as data: the curated list, per-backend size limits and hypothesis strategies.

Every curated configuration says why it is in the list. Shapes are kept small so that the same list
runs on the "emulator" backend (CUDA kernels executed on CPU fibers, 10-500 ms per call).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import strategies as st


@dataclasses.dataclass(frozen=True)
class Case:
    """One conv2d call: shapes plus the tf.nn.conv2d arguments, exactly as passed."""
    id: str
    batch: tuple          # leading batch shape of the input (rank 4 input: one entry)
    H: int
    W: int
    C: int
    KH: int
    KW: int
    CG: int               # filters' in_channels (C / groups)
    K: int
    strides: Any = 1
    padding: Any = "VALID"
    dilations: Any = None
    data_format: str = "NHWC"
    why: str = ""

    @property
    def x_shape(self) -> tuple:
        tail = (self.H, self.W, self.C) if self.data_format == "NHWC" else (self.C, self.H, self.W)
        return tuple(self.batch) + tail

    @property
    def w_shape(self) -> tuple:
        return (self.KH, self.KW, self.CG, self.K)

    @property
    def R(self) -> int:
        return self.KH * self.KW * self.CG

    def kwargs(self) -> dict:
        return dict(strides=self.strides, padding=self.padding, data_format=self.data_format,
                    dilations=self.dilations)

    def __str__(self) -> str:
        return self.id


def _c(id, batch, H, W, C, KH, KW, CG, K, why, **kw) -> Case:
    return Case(id, tuple(batch), H, W, C, KH, KW, CG, K, why=why, **kw)


CURATED = [
    _c("rgb_c3_k5_same", (2,), 7, 7, 3, 3, 3, 3, 5, padding="SAME",
       why="channels not a multiple of any tile (RGB input, 5 filters)"),
    _c("c17_k9_valid", (1,), 6, 7, 17, 3, 3, 17, 9,
       why="prime channel counts on both sides: every vector/tile path has a remainder"),
    _c("same_even_in_stride2", (1,), 8, 8, 4, 3, 3, 4, 4, strides=2, padding="SAME",
       why="asymmetric SAME: even input, stride 2 -> total pad 1, all of it at the bottom/right"),
    _c("same_odd_out_stride3", (1,), 8, 10, 3, 3, 3, 3, 4, strides=3, padding="SAME",
       why="asymmetric SAME with stride 3: pad totals differ between H (1) and W (2)"),
    _c("even_kernel_2x2_same", (2,), 5, 6, 3, 2, 2, 3, 4, padding="same",
       why="even kernel, SAME: pad 0 on top/left, 1 on bottom/right (lower-case padding string)"),
    _c("even_kernel_4x4_same", (1,), 7, 6, 2, 4, 4, 2, 3, padding="SAME",
       why="even 4x4 kernel, SAME: pads 1/2, the odd pixel on the bottom/right"),
    _c("stride_gt_kernel", (1,), 9, 8, 3, 2, 2, 3, 4, strides=3,
       why="stride larger than the kernel: input pixels that no output reads"),
    _c("stride_gt_kernel_1x1", (1,), 7, 9, 4, 1, 1, 4, 3, strides=[2, 3],
       why="1x1 with strides (2, 3): not a pointwise GEMM, subsamples the input"),
    _c("dilation_stride_same", (1,), 9, 9, 3, 3, 3, 3, 4, strides=2, dilations=2, padding="SAME",
       why="dilation together with stride (tf.nn.conv2d allows it; tf.keras does not)"),
    _c("dilation_stride_valid_mixed", (2,), 9, 8, 2, 2, 3, 2, 3, strides=[1, 2], dilations=[3, 2],
       why="different dilations and strides per axis, VALID"),
    _c("groups_2", (1,), 6, 6, 8, 3, 3, 4, 6, padding="SAME",
       why="grouped convolution G=2 (input channels 2x the filters' in_channels)"),
    _c("groups_4_stride2", (2,), 7, 7, 8, 3, 3, 2, 8, strides=2,
       why="grouped convolution G=4 with stride"),
    _c("depthwise_m1", (1,), 7, 7, 6, 3, 3, 1, 6, padding="SAME",
       why="depthwise (CG=1, G=C), channel multiplier 1"),
    _c("depthwise_m2_stride2", (1,), 8, 7, 5, 3, 3, 1, 10, strides=2, padding="SAME",
       why="depthwise with channel multiplier 2 and stride 2"),
    _c("depthwise_dilated", (1,), 9, 9, 4, 3, 3, 1, 4, dilations=2,
       why="depthwise with dilation"),
    _c("nchw_same_stride2", (1,), 8, 7, 3, 3, 3, 3, 4, strides=2, padding="SAME", data_format="NCHW",
       why="NCHW layout with asymmetric SAME"),
    _c("nchw_4form", (2,), 7, 8, 4, 3, 2, 4, 5, strides=[1, 1, 2, 1], dilations=[1, 1, 1, 2],
       data_format="NCHW", why="NCHW with 4-form strides/dilations in NCHW order"),
    _c("nchw_groups", (1,), 6, 6, 6, 3, 3, 3, 4, padding="SAME", data_format="NCHW",
       why="grouped convolution in NCHW"),
    _c("nchw_depthwise", (1,), 6, 5, 4, 3, 3, 1, 8, padding="SAME", data_format="NCHW",
       why="depthwise in NCHW"),
    _c("nchw_explicit_pad", (1,), 5, 6, 3, 3, 3, 3, 4, padding=[[0, 0], [0, 0], [2, 0], [1, 3]],
       data_format="NCHW", why="explicit padding in its NCHW form"),
    _c("nchw_pointwise", (2,), 4, 5, 6, 1, 1, 6, 7, data_format="NCHW",
       why="1x1 stride 1 in NCHW: a GEMM on the channel-major image"),
    _c("rank5_batch", (2, 3), 5, 5, 3, 3, 3, 3, 4, padding="SAME",
       why="rank-5 input: a batch shape of two dims is flattened and restored"),
    _c("pointwise", (2,), 5, 6, 7, 1, 1, 7, 5,
       why="1x1 stride 1 VALID: the plain GEMM path"),
    _c("pointwise_groups", (1,), 4, 4, 8, 1, 1, 4, 6,
       why="1x1 grouped: a batched GEMM over groups"),
    _c("kernel_as_large_as_input", (2,), 5, 4, 3, 5, 4, 3, 4,
       why="kernel covers the whole input: 1x1 output, every tap used once"),
    _c("kernel_as_large_as_input_same", (1,), 5, 5, 2, 5, 5, 2, 3, padding="SAME",
       why="kernel as large as the input with SAME: most taps fall in the padding"),
    _c("explicit_pad_asym", (1,), 5, 6, 3, 3, 3, 3, 4, padding=[[0, 0], [1, 2], [0, 3], [0, 0]],
       why="explicit asymmetric padding, zero on one side"),
    _c("explicit_pad_wider_than_kernel", (1,), 4, 4, 2, 3, 3, 2, 3, padding=[[0, 0], [4, 4], [4, 4], [0, 0]],
       why="pads larger than the kernel: whole border rows/cols of outputs read only zeros"),
    _c("explicit_pad_stride_dilation", (1,), 7, 6, 3, 3, 2, 3, 2, strides=2, dilations=[2, 3],
       padding=[[0, 0], [3, 1], [2, 2], [0, 0]], why="explicit padding with stride and dilation"),
    _c("non_square_1x3", (2,), 5, 11, 4, 1, 3, 4, 5, strides=[1, 2],
       why="non-square kernel and input, strides differing per axis"),
    _c("one_pixel_input", (3,), 1, 1, 5, 1, 1, 5, 4,
       why="1x1 input image"),
    _c("one_pixel_input_same_3x3", (1,), 1, 1, 4, 3, 3, 4, 3, padding="SAME",
       why="1x1 input with a 3x3 SAME kernel: only the centre tap is inside"),
    _c("deeper_c32_k16", (1,), 6, 6, 32, 3, 3, 32, 16, padding="SAME",
       why="more channels than one tile / one BLAS block, 3x3 stride 1 (the Winograd shape)"),
    _c("valid_3x3_s1", (2,), 6, 5, 4, 3, 3, 4, 4,
       why="plain 3x3 stride-1 VALID, the most common layer"),
]

CURATED_IDS = [c.id for c in CURATED]


# ---------------------------------------------------------------------------------------------------
# Per-backend sizes. The emulator runs every CUDA thread as a fiber on the CPU: keep problems tiny.

@dataclasses.dataclass(frozen=True)
class Scale:
    max_n: int        # product of the batch shape
    max_hw: int       # input height / width
    max_c: int        # input channels (and output channels)
    max_kernel: int   # filter height / width
    deep_hw: int      # spatial size of the large-R (3x3x256) accuracy tests
    deep_k: int       # output channels of those tests
    examples: int     # hypothesis max_examples per test


SCALES = {
    "numpy": Scale(max_n=3, max_hw=12, max_c=16, max_kernel=5, deep_hw=10, deep_k=16, examples=30),
    "cupy": Scale(max_n=3, max_hw=16, max_c=24, max_kernel=5, deep_hw=12, deep_k=32, examples=30),
    "emulator": Scale(max_n=2, max_hw=8, max_c=8, max_kernel=3, deep_hw=5, deep_k=4, examples=12),
}
DEFAULT_SCALE = SCALES["emulator"]     # a backend we do not know yet: assume slow


DTYPES = ("float16", "bfloat16", "float32", "float64")


def np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


# ---------------------------------------------------------------------------------------------------
# Hypothesis: valid, non-empty configurations. A "family" is drawn first so that algorithms with a
# narrow domain (pointwise, depthwise, 3x3 stride-1) still see many examples they can run.

def _pair_arg(draw, a: int, b: int, data_format: str, allow_none: bool = False):
    """An int, a 1-, 2- or 4-list (4-form in data_format order), or None when a == b == 1."""
    forms = ["int", "list1", "list2", "list4"] + (["none"] if allow_none else [])
    form = draw(st.sampled_from(forms))
    if form == "none" and a == b == 1:
        return None
    if form in ("int", "list1") and a == b:
        return a if form == "int" else [a]
    if form == "list4":
        return [1, a, b, 1] if data_format == "NHWC" else [1, 1, a, b]
    return [a, b]


@st.composite
def cases(draw, scale: Scale, dtypes=("float32",)):
    """(Case, dtype name) for a valid conv2d call with a non-empty output."""
    family = draw(st.sampled_from(["general", "general", "pointwise", "depthwise", "3x3s1"]))
    data_format = draw(st.sampled_from(["NHWC", "NCHW"]))
    kmax = scale.max_kernel
    if family == "pointwise":
        KH = KW = 1
        sh = sw = dh = dw = 1
    elif family == "3x3s1":
        KH = KW = 3
        sh = sw = dh = dw = 1
    else:
        KH, KW = draw(st.integers(1, kmax)), draw(st.integers(1, kmax))
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        dh = draw(st.integers(1, 3)) if KH > 1 else 1
        dw = draw(st.integers(1, 3)) if KW > 1 else 1
    if family == "depthwise":
        G = draw(st.integers(1, scale.max_c))
        CG, KG = 1, draw(st.integers(1, 2))
    else:
        G = draw(st.sampled_from([1, 1, 2, 3, 4]))
        CG = draw(st.integers(1, max(1, scale.max_c // G)))
        KG = draw(st.integers(1, max(1, scale.max_c // G)))
    C, K = G * CG, G * KG
    if family == "pointwise":
        padding = draw(st.sampled_from(["VALID", "valid", "explicit0"]))
    else:
        padding = draw(st.sampled_from(["VALID", "SAME", "same", "explicit"]))
    pads = (0, 0, 0, 0)
    if padding == "explicit":
        pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    if padding.startswith("explicit"):
        pt, pb, pl, pr = pads
        padding = ([[0, 0], [pt, pb], [pl, pr], [0, 0]] if data_format == "NHWC"
                   else [[0, 0], [0, 0], [pt, pb], [pl, pr]])
    eff_h, eff_w = (KH - 1) * dh + 1, (KW - 1) * dw + 1
    same = isinstance(padding, str) and padding.upper() == "SAME"
    min_h = 1 if same else max(1, eff_h - pads[0] - pads[1])
    min_w = 1 if same else max(1, eff_w - pads[2] - pads[3])
    H = draw(st.integers(min_h, max(min_h, scale.max_hw)))
    W = draw(st.integers(min_w, max(min_w, scale.max_hw)))
    batch = draw(st.sampled_from([(1,), (2,), (scale.max_n,), (1, 2), (2, 1, 1)]))
    if int(np.prod(batch)) > scale.max_n:
        batch = (1,)
    strides = _pair_arg(draw, sh, sw, data_format)
    dilations = _pair_arg(draw, dh, dw, data_format, allow_none=True)
    dtype = draw(st.sampled_from(list(dtypes)))
    case = Case(f"hyp-{family}", batch, H, W, C, KH, KW, CG, K, strides=strides, padding=padding,
                dilations=dilations, data_format=data_format)
    return case, dtype


# ---------------------------------------------------------------------------------------------------
# Inputs

def random_inputs(case: Case, dtype, seed: int = 0, positive: bool = False):
    """Normal (or uniform [0, 1) when positive) inputs, rounded to dtype."""
    rng = np.random.default_rng(seed)
    draw = (lambda s: rng.random(s)) if positive else (lambda s: rng.standard_normal(s))
    return draw(case.x_shape).astype(np_dtype(dtype)), draw(case.w_shape).astype(np_dtype(dtype))


def integer_inputs(case: Case, dtype, magnitude: int, seed: int = 0):
    """Small-integer-valued float inputs in [-magnitude, magnitude]."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-magnitude, magnitude + 1, case.x_shape).astype(np_dtype(dtype))
    w = rng.integers(-magnitude, magnitude + 1, case.w_shape).astype(np_dtype(dtype))
    return x, w
