"""Kernel parameter structs, built on the Python side as NumPy structured scalars.

Each struct mirrors its C definition in kernels/common.cuh field for field (a test parses the C
struct and compares). Passed by value: CuPy's RawKernel accepts structured scalars, and the emulator
passes a pointer to the same bytes.
"""
from __future__ import annotations

import numpy as np

from ...problem import ConvProblem

# long long fields first, then int: the same order, sizes and alignment as the C struct.
CONV_PROBLEM_FIELDS = (
    [(name, np.int64) for name in ("xsN", "xsH", "xsW", "xsC", "ysN", "ysH", "ysW", "ysK")]
    + [(name, np.int32) for name in ("N", "H", "W", "C", "KH", "KW", "K", "G", "OH", "OW",
                                     "PT", "PB", "PL", "PR", "SH", "SW", "DH", "DW", "CG", "KG")])
CONV_PROBLEM_DTYPE = np.dtype(CONV_PROBLEM_FIELDS, align=True)

GEMM_PROBLEM_FIELDS = (
    [(name, np.int64) for name in ("a_s_img", "a_s_m", "a_s_r", "a_s_g", "b_s_r", "b_s_g",
                                   "c_s_img", "c_s_m", "c_s_k", "c_s_g")]
    + [(name, np.int32) for name in ("M", "KG", "R", "G", "a_mi", "c_mi", "c_m0", "vec_a", "vec_b")])
GEMM_PROBLEM_DTYPE = np.dtype(GEMM_PROBLEM_FIELDS, align=True)

# C type name -> NumPy dtype, for kernel parameter checking.
STRUCTS = {"ConvProblem": CONV_PROBLEM_DTYPE, "GemmProblem": GEMM_PROBLEM_DTYPE}


def layout_strides(layout: str, N: int, H: int, W: int, C: int) -> tuple[int, int, int, int]:
    """Element strides (n, h, w, c) of a contiguous tensor in `layout`."""
    if layout == "NHWC":
        return H * W * C, W * C, C, 1
    return C * H * W, W, 1, H * W


def conv_problem_struct(p: ConvProblem) -> np.void:
    values = {f: getattr(p, f) for f, _ in CONV_PROBLEM_FIELDS if hasattr(p, f)}
    values.update(zip(("xsN", "xsH", "xsW", "xsC"), layout_strides(p.layout, p.N, p.H, p.W, p.C)))
    values.update(zip(("ysN", "ysH", "ysW", "ysK"), layout_strides(p.layout, p.N, p.OH, p.OW, p.K)))
    return make_struct(CONV_PROBLEM_DTYPE, values)


def make_struct(dtype: np.dtype, values: dict) -> np.void:
    missing = set(dtype.names) - set(values)
    if missing:
        raise ValueError(f"struct fields {sorted(missing)} have no value")
    s = np.zeros((), dtype)
    for name in dtype.names:
        info = np.iinfo(dtype.fields[name][0])
        v = int(values[name])
        if not info.min <= v <= info.max:
            raise ValueError(f"struct field {name}={v} does not fit {dtype.fields[name][0]}")
        s[name] = v
    return s[()]
