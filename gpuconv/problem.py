"""One description of a 2-D convolution, shared by every backend, kernel, test and benchmark.

The letters are the same everywhere (Python fields, CUDA kernel parameters, README):

    N  batch            H, W    input height, width       C  input channels
    KH, KW  filter size K  output channels (filters)   G  groups
    OH, OW  output size  PT, PB, PL, PR  pads (top, bottom, left, right)
    SH, SW  strides      DH, DW  dilations
    CG = C / G  input channels per group,  KG = K / G  output channels per group

Seen as a GEMM (forward convolution): M = N*OH*OW rows, K columns, reduction R = KH*KW*CG per group.

`parse_problem` turns the arguments of `tf.nn.conv2d` into a `ConvProblem`, raising a
ValueError/TypeError that names the argument, its value and what is allowed for every invalid input.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Optional

import numpy as np

from .arg_types import DTypeLike, IntOrInts, Padding, Shape
from .dtypes import check_dtypes

DATA_FORMATS = ("NHWC", "NCHW")

# Every size, stride, dilation and pad fits a C int: the CUDA kernels take them as int fields (only
# flat offsets use 64 bits). The output may hold at most MAX_OUTPUT_BYTES, a bound no allocation can
# meet and NumPy's intp can index; below it an allocation that fails is NumPy's MemoryError.
MAX_INT = 2**31 - 1
MAX_OUTPUT_BYTES = 2**62


@dataclasses.dataclass(frozen=True)
class ConvProblem:
    N: int
    H: int
    W: int
    C: int
    KH: int
    KW: int
    K: int
    G: int
    OH: int
    OW: int
    PT: int
    PB: int
    PL: int
    PR: int
    SH: int
    SW: int
    DH: int
    DW: int
    layout: str = "NHWC"
    dtype: Any = np.dtype(np.float32)
    # "tf32": float32 inputs may be rounded to TF32 on tensor cores (gpuconv/precision.py)
    precision: str = "highest"

    @property
    def CG(self) -> int:
        return self.C // self.G

    @property
    def KG(self) -> int:
        return self.K // self.G

    @property
    def R(self) -> int:
        """Reduction length of one output value: KH*KW*CG."""
        return self.KH * self.KW * self.CG

    @property
    def M(self) -> int:
        """GEMM rows: one per output pixel."""
        return self.N * self.OH * self.OW

    @property
    def flops(self) -> int:
        return 2 * self.M * self.K * self.R

    @property
    def input_shape(self) -> tuple:
        return (self.N, self.H, self.W, self.C) if self.layout == "NHWC" else (self.N, self.C, self.H, self.W)

    @property
    def filter_shape(self) -> tuple:
        return (self.KH, self.KW, self.CG, self.K)

    @property
    def output_shape(self) -> tuple:
        return (self.N, self.OH, self.OW, self.K) if self.layout == "NHWC" else (self.N, self.K, self.OH, self.OW)

    @property
    def is_pointwise(self) -> bool:
        """1x1 filter, stride 1, no padding: the convolution is exactly a GEMM on the input."""
        return (self.KH == self.KW == 1 and self.SH == self.SW == 1
                and self.PT == self.PB == self.PL == self.PR == 0)

    @property
    def is_empty(self) -> bool:
        return self.N * self.OH * self.OW * self.K == 0

    def with_(self, **changes) -> "ConvProblem":
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        return (f"N={self.N} H={self.H} W={self.W} C={self.C} KH={self.KH} KW={self.KW} K={self.K} "
                f"G={self.G} OH={self.OH} OW={self.OW} pads=({self.PT},{self.PB},{self.PL},{self.PR}) "
                f"strides=({self.SH},{self.SW}) dilations=({self.DH},{self.DW}) {self.layout} {self.dtype}"
                + (f" precision={self.precision}" if self.precision != "highest" else ""))


def _is_int(v) -> bool:
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def _spatial_pair(name: str, value, data_format: str) -> tuple[int, int]:
    """strides/dilations: an int or a list of 1, 2 or 4 ints; the 4-form's batch/channel entries are 1."""
    allowed = (f"an int >= 1 or a list of 1, 2 or 4 ints >= 1 (4-form in {data_format} order "
               f"with batch and channel entries equal to 1)")
    if _is_int(value):
        items = [value]
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
    else:
        raise TypeError(f"{name}={value!r} is not allowed: expected {allowed}")
    if len(items) not in (1, 2, 4):
        raise ValueError(f"{name}={value!r} has {len(items)} entries; expected {allowed}")
    for v in items:
        if not _is_int(v):
            raise TypeError(f"{name}={value!r} contains {v!r}, which is not an integer; expected {allowed}")
        if v < 1:
            raise ValueError(f"{name}={value!r} contains {v}, which is not >= 1; expected {allowed}")
        if v > MAX_INT:
            raise ValueError(f"{name}={value!r} contains {v}, which is larger than the limit 2**31-1 = {MAX_INT}")
    items = [int(v) for v in items]
    if len(items) == 1:
        return items[0], items[0]
    if len(items) == 2:
        return items[0], items[1]
    h, w, n, c = (1, 2, 0, 3) if data_format == "NHWC" else (2, 3, 0, 1)
    if items[n] != 1 or items[c] != 1:
        raise ValueError(f"{name}={value!r}: the batch and channel entries must be 1 in the 4-form "
                         f"for data_format={data_format!r}")
    return items[h], items[w]


def _explicit_padding(value, data_format: str) -> tuple[int, int, int, int]:
    form = ("[[0,0],[top,bottom],[left,right],[0,0]]" if data_format == "NHWC"
            else "[[0,0],[0,0],[top,bottom],[left,right]]")
    allowed = f"'VALID', 'SAME' or explicit padding {form} of non-negative ints"
    try:
        rows = [list(r) for r in value]
    except TypeError:
        raise TypeError(f"padding={value!r} is not allowed: expected {allowed}") from None
    if len(rows) != 4 or any(len(r) != 2 for r in rows):
        raise ValueError(f"padding={value!r} has the wrong shape: expected 4 pairs, {allowed}")
    for r in rows:
        for v in r:
            if not _is_int(v):
                raise TypeError(f"padding={value!r} contains {v!r}, which is not an integer; expected {allowed}")
            if v < 0:
                raise ValueError(f"padding={value!r} contains {v}, which is negative; expected {allowed}")
            if v > MAX_INT:
                raise ValueError(f"padding={value!r} contains {v}, which is larger than the limit "
                                 f"2**31-1 = {MAX_INT}")
    h, w, n, c = (1, 2, 0, 3) if data_format == "NHWC" else (2, 3, 0, 1)
    if any(rows[n]) or any(rows[c]):
        raise ValueError(f"padding={value!r}: the batch and channel pads must be 0 for "
                         f"data_format={data_format!r}; expected {form}")
    return int(rows[h][0]), int(rows[h][1]), int(rows[w][0]), int(rows[w][1])


def _output_size(dim: str, size: int, k: int, s: int, d: int, pad: tuple[int, int] | None):
    """Returns (out, pad_before, pad_after). pad=None means SAME."""
    eff = (k - 1) * d + 1
    if pad is None:
        out = -(-size // s)
        total = max((out - 1) * s + eff - size, 0)
        pad = (total // 2, total - total // 2)
    padded = size + pad[0] + pad[1]
    if max(eff, padded) > MAX_INT:   # the kernels' int offsets oh*SH - PT + kh*DH stay below both
        raise ValueError(f"along {dim}, the dilated filter size {eff} ((filter {k} - 1) * dilation {d} + 1) "
                         f"and the padded input size {padded} (input {size} + pads {pad[0]}+{pad[1]}) must "
                         f"be at most 2**31-1 = {MAX_INT}")
    # TF's formula, (padded - eff + s) / s in C's division, which truncates toward zero: a padded input
    # smaller than the filter gives an empty output while the shortfall eff - padded is below 2 * stride
    # (below 2 for stride 1), and an error beyond.
    q = padded - eff + s
    out = q // s if q >= 0 else -(-q // s)
    if out < 0:
        raise ValueError(
            f"Computed output size would be negative along {dim}: padded input size {padded} "
            f"(input {size} + pads {pad[0]}+{pad[1]}) is smaller than the dilated filter size {eff} "
            f"((filter {k} - 1) * dilation {d} + 1) by {eff - padded}, which stride {s} does not cover "
            f"(TF's output size (padded - filter + stride) / stride, truncated toward zero, is {out})")
    return out, pad[0], pad[1]


def parse_problem(x_shape: Shape, x_dtype: DTypeLike, w_shape: Shape, w_dtype: DTypeLike, strides: IntOrInts = 1,
                  padding: Padding = "VALID", data_format: str = "NHWC", dilations: Optional[IntOrInts] = None
                  ) -> tuple[ConvProblem, tuple[int, ...]]:
    """Validate the arguments of conv2d; returns the problem and the leading batch shape of the input."""
    if not isinstance(data_format, str) or data_format.upper() not in DATA_FORMATS:
        raise ValueError(f"data_format={data_format!r} is not allowed: expected one of {DATA_FORMATS}")
    data_format = data_format.upper()
    dtype = check_dtypes(x_dtype, w_dtype)
    x_shape, w_shape = tuple(int(v) for v in x_shape), tuple(int(v) for v in w_shape)
    if len(x_shape) < 4:
        raise ValueError(f"input has shape {x_shape} (rank {len(x_shape)}); expected rank >= 4: "
                         f"batch dims followed by {data_format[1:]}")
    if len(w_shape) != 4:
        raise ValueError(f"filters has shape {w_shape} (rank {len(w_shape)}); expected rank 4: "
                         f"[filter_height, filter_width, in_channels / groups, out_channels] (HWIO)")
    batch_shape = x_shape[:-3]
    N = math.prod(batch_shape)
    if data_format == "NHWC":
        H, W, C = x_shape[-3:]
    else:
        C, H, W = x_shape[-3:]
    KH, KW, CG, K = w_shape
    for arg, shape in (("input", x_shape), ("filters", w_shape)):
        if any(v > MAX_INT for v in shape):
            raise ValueError(f"{arg} has shape {shape}: every dimension must be at most 2**31-1 = {MAX_INT}")
    if N > MAX_INT:
        raise ValueError(f"input has shape {x_shape}: the batch dimensions hold {N} images, more than the "
                         f"limit 2**31-1 = {MAX_INT}")
    if CG <= 0 or C < CG or C % CG != 0:
        raise ValueError(f"input has {C} channels and filters has in_channels {CG} (filters shape {w_shape}); "
                         f"the input channels must be a positive multiple of the filters' in_channels "
                         f"(equal for an ordinary convolution, a multiple G for G groups)")
    G = C // CG
    if K % G != 0:
        raise ValueError(f"filters has {K} out_channels, which is not divisible by the {G} groups implied by "
                         f"input channels {C} / filter in_channels {CG}")
    if KH <= 0 or KW <= 0:
        raise ValueError(f"filters has shape {w_shape}: filter height and width must be >= 1")
    SH, SW = _spatial_pair("strides", strides, data_format)
    DH, DW = _spatial_pair("dilations", 1 if dilations is None else dilations, data_format)
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            raise ValueError(f"padding={padding!r} is not allowed: expected 'VALID', 'SAME' (any case) "
                             f"or an explicit list of 4 [before, after] pairs")
        same = padding.upper() == "SAME"
        pads_h = None if same else (0, 0)
        pads_w = None if same else (0, 0)
    else:
        PT, PB, PL, PR = _explicit_padding(padding, data_format)
        pads_h, pads_w = (PT, PB), (PL, PR)
    OH, PT, PB = _output_size("height", H, KH, SH, DH, pads_h)
    OW, PL, PR = _output_size("width", W, KW, SW, DW, pads_w)
    out_shape = tuple(batch_shape) + ((OH, OW, K) if data_format == "NHWC" else (K, OH, OW))
    out_bytes = math.prod(out_shape) * dtype.itemsize
    if out_bytes > MAX_OUTPUT_BYTES:
        raise ValueError(f"the output would have shape {out_shape}, {out_bytes} bytes: more than the limit "
                         f"of 2**62 bytes")
    p = ConvProblem(N=N, H=H, W=W, C=C, KH=KH, KW=KW, K=K, G=G, OH=OH, OW=OW, PT=PT, PB=PB, PL=PL, PR=PR,
                    SH=SH, SW=SW, DH=DH, DW=DW, layout=data_format, dtype=dtype)
    return p, batch_shape
