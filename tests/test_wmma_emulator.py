"""The emulator's nvcuda::wmma (kernels/host/mma_host.h): fragments against NumPy matrix products with
each input rounding, TF32 rounding against an arithmetic reimplementation, and the checks a warp-wide
call gets (same arguments in every lane, alignment, fragment elements changed lane by lane)."""
from __future__ import annotations

import functools
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from gpuconv.backends import available_backends
from gpuconv.backends.cuda import emulator, nvrtc, sass
from gpuconv.backends.cuda.launch import Launch

from counted_runs import aligned_copy

EMULATOR_REASON = available_backends()["emulator"]
pytestmark = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")

SOURCE = Path(__file__).parent / "fixtures" / "wmma_tiles.cu"
U32 = 2.0 ** -24  # float32 unit roundoff


@functools.lru_cache(maxsize=None)
def module():
    return emulator.EmulatedModule("wmma_tiles", SOURCE.read_text())


def tf32_reference(x: np.ndarray) -> np.ndarray:
    """cvt.rna.tf32.f32 by arithmetic, not bits: round |x| to 11 significant bits (10 stored), ties away
    from zero, with subnormal spacing 2^-136 (float32's 2^-149 times 2^13); past the largest TF32 value,
    Inf; NaN as the canonical NaN."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore"):  # signalling NaNs among the edge values
        v = x.astype(np.float64)
    finite = np.isfinite(v)
    mag = np.abs(np.where(finite, v, 0.0))
    _, e = np.frexp(mag)  # mag = m 2^e, 0.5 <= m < 1
    q = np.exp2(np.maximum(e - 11, -136).astype(np.float64))
    r = np.floor(mag / q + 0.5) * q
    r = np.where(r > (2 - 2.0 ** -10) * 2.0 ** 127, np.inf, r)
    out = np.where(finite, np.copysign(r, v), v).astype(np.float32)
    bits = out.view(np.uint32).copy()
    bits[np.isnan(x)] = 0x7FFFFFFF
    return bits.view(np.float32)


def truncated(x: np.ndarray) -> np.ndarray:
    """The model for floats a kernel hands to a TF32 MMA unconverted: the low 13 mantissa bits dropped."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, bits, bits & 0xFFFFE000).astype(np.uint32).view(np.float32)


def run_tile_gemm(kernel, a, b, c, a_col=False, b_col=False, cd_col=False):
    """D = A B + C through a wmma_tiles entry point; a, b, c are the logical matrices (row-major here),
    laid out in memory as the flags say."""
    M, K = a.shape
    N = b.shape[1]
    am = aligned_copy(np.ascontiguousarray(a.T if a_col else a))
    bm = aligned_copy(np.ascontiguousarray(b.T if b_col else b))
    cm = aligned_copy(np.ascontiguousarray(c.T if cd_col else c).astype(np.float32))
    d = aligned_copy(np.full(cm.shape, np.nan, np.float32))
    lda, ldb, ldc = am.shape[1], bm.shape[1], cm.shape[1]
    module().launch(Launch("wmma_tiles", kernel, (M // 16, N // 32, 1), (32, 2, 1), 0,
                           (am, bm, cm, d, np.int32(K), np.int32(lda), np.int32(ldb), np.int32(ldc),
                            np.int32(cd_col))))
    return d.T if cd_col else d


def assert_within_fma_chain_bound(d, a64, b64, c, K):
    """|d - (A B + C)| <= gamma_K (|A| |B| + |C|): K float32 roundings of a sum with exact products, in
    whatever order the hardware adds (the bound holds for any order)."""
    ref = a64 @ b64 + c
    bound = K * U32 / (1 - K * U32) * (np.abs(a64) @ np.abs(b64) + np.abs(c))
    err = np.abs(d.astype(np.float64) - ref)
    assert (err <= bound).all(), f"max error {err.max():.3g} above the bound where it is {bound[err > bound].min():.3g}"


def operands(rng, dtype, M=32, N=64, K=48):
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    c = rng.standard_normal((M, N)).astype(np.float32)
    return a, b, c


@pytest.mark.parametrize("layouts", ["rr", "rc", "cr", "cc"])
@pytest.mark.parametrize("cd_col", [False, True])
def test_f16_tiles_match_numpy(layouts, cd_col):
    rng = np.random.default_rng(1)
    a, b, c = operands(rng, np.float16)
    d = run_tile_gemm(f"wmma_f16_{layouts}", a, b, c, layouts[0] == "c", layouts[1] == "c", cd_col)
    assert_within_fma_chain_bound(d, a.astype(np.float64), b.astype(np.float64), c, a.shape[1])


def test_f16_tiles_follow_the_documented_fma_order_exactly():
    """The model: c, then one float32 FMA per k in increasing order (products of fp16 are exact in
    float32, so each step is float32(acc + p))."""
    rng = np.random.default_rng(2)
    a, b, c = operands(rng, np.float16, K=32)
    d = run_tile_gemm("wmma_f16_rr", a, b, c)
    acc = c.copy()
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    for k in range(a.shape[1]):
        acc = (acc + np.outer(a32[:, k], b32[k, :])).astype(np.float32)
    np.testing.assert_array_equal(d, acc)


@pytest.mark.parametrize("kernel", ["wmma_bf16_rr", "wmma_bf16_cc"])
def test_bf16_tiles_match_numpy(kernel):
    rng = np.random.default_rng(3)
    a, b, c = operands(rng, ml_dtypes.bfloat16)
    col = kernel.endswith("cc")
    d = run_tile_gemm(kernel, a, b, c, col, col)
    assert_within_fma_chain_bound(d, a.astype(np.float64), b.astype(np.float64), c, a.shape[1])


@pytest.mark.parametrize("kernel", ["wmma_tf32_rr", "wmma_tf32_cr"])
def test_tf32_tiles_multiply_the_rounded_inputs(kernel):
    rng = np.random.default_rng(4)
    a, b, c = operands(rng, np.float32)
    d = run_tile_gemm(kernel, a, b, c, a_col=kernel.endswith("cr"))
    a64, b64 = tf32_reference(a).astype(np.float64), tf32_reference(b).astype(np.float64)
    assert_within_fma_chain_bound(d, a64, b64, c, a.shape[1])
    # and not the float32 inputs themselves: the rounding shows at this size
    assert np.abs(d - (a.astype(np.float64) @ b.astype(np.float64) + c)).max() > 1e-4


def test_tf32_unconverted_inputs_lose_their_low_bits():
    rng = np.random.default_rng(5)
    a, b, c = operands(rng, np.float32)
    d = run_tile_gemm("wmma_tf32_raw_rr", a, b, c)
    assert_within_fma_chain_bound(d, truncated(a).astype(np.float64), truncated(b).astype(np.float64), c,
                                  a.shape[1])


def tf32_round(x: np.ndarray) -> np.ndarray:
    x = aligned_copy(x.astype(np.float32))
    y = aligned_copy(np.zeros_like(x))
    module().launch(Launch("wmma_tiles", "tf32_round", (8, 1, 1), (128, 1, 1), 0, (x, y, np.int32(x.size))))
    return y


def edge_values() -> np.ndarray:
    ulp13 = [0x0FFF, 0x1000, 0x1001, 0x3000, 0x1FFF, 0x2000]  # below, at and above ties; odd/even kept bit
    bits = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x7F7FFFFF, 0x7F7FEFFF,
            0x7F7FF000, 0x00000001, 0x80000001, 0x00000FFF, 0x00001000, 0x00001001, 0x007FFFFF, 0x007FF000,
            0x00800000]
    bits += [base | low for base in (0x3F800000, 0xBF800000, 0x00400000, 0x3F802000) for low in ulp13]
    return np.array(bits, np.uint32).view(np.float32)


def test_float_to_tf32_matches_an_arithmetic_reimplementation_on_edge_values():
    x = edge_values()
    got, want = tf32_round(x).view(np.uint32), tf32_reference(x).view(np.uint32)
    bad = got != want
    assert not bad.any(), [(hex(i), hex(g), hex(w)) for i, g, w in
                           zip(x.view(np.uint32)[bad], got[bad], want[bad])]


def test_float_to_tf32_matches_on_random_bit_patterns():
    x = np.random.default_rng(6).integers(0, 2 ** 32, 4096, dtype=np.uint64).astype(np.uint32).view(np.float32)
    np.testing.assert_array_equal(tf32_round(x).view(np.uint32), tf32_reference(x).view(np.uint32))


def test_tf32_reference_itself_on_known_values():
    """The reimplementation's own anchors: ties go away from zero, and the results have 10 mantissa bits."""
    one = np.float32(1.0)
    tie = np.array([0x3F801000, 0xBF801000], np.uint32).view(np.float32)  # 1 + 2^-11 and its negative
    np.testing.assert_array_equal(tf32_reference(tie), [one + np.float32(2.0 ** -10), -(one + np.float32(2.0 ** -10))])
    assert tf32_reference(np.float32(np.finfo(np.float32).max)) == np.inf
    rng = np.random.default_rng(7).standard_normal(1000).astype(np.float32)
    assert not (tf32_reference(rng).view(np.uint32) & 0x1FFF).any()


# ---------------------------------------------------------------- what a warp-wide call must respect

def broken_launch(kernel, block=(32, 1, 1), offset_bytes=0):
    raw = np.zeros(2 * 256 * 2 + 64, np.uint8)
    start = (-raw.ctypes.data) % 32 + offset_bytes
    a = raw[start:start + 2 * 256 * 2].view(np.float16)
    d = aligned_copy(np.zeros(256, np.float32))
    module().launch(Launch("wmma_tiles", kernel, (1, 1, 1), block, 0, (a, d)))


def test_lanes_with_different_pointers_are_reported():
    with pytest.raises(RuntimeError, match=r"synccheck: wmma::load_matrix_sync.*other arguments"):
        broken_launch("wmma_divergent_load")


def test_fragment_elements_changed_lane_by_lane_are_reported():
    with pytest.raises(RuntimeError, match="copies of a fragment element differ"):
        broken_launch("wmma_lane_dependent")


def test_misaligned_pointer_is_reported():
    with pytest.raises(RuntimeError, match="not 32-byte"):
        broken_launch("wmma_lane_dependent", offset_bytes=16)


def test_a_partial_warp_is_reported():
    with pytest.raises(RuntimeError, match="partial warp"):
        broken_launch("wmma_lane_dependent", block=(16, 1, 1))


def test_ldm_that_is_not_16_bytes_is_reported():
    a, b, c = operands(np.random.default_rng(8), np.float16, M=16, N=32, K=16)
    am = aligned_copy(np.zeros((16, 20), np.float16))  # lda = 20 halves = 40 bytes
    am[:, :16] = a
    d = aligned_copy(np.zeros((16, 32), np.float32))
    with pytest.raises(RuntimeError, match="ldm=20 is not a multiple of 16 bytes"):
        module().launch(Launch("wmma_tiles", "wmma_f16_rr", (1, 1, 1), (32, 2, 1), 0,
                               (am, aligned_copy(b), aligned_copy(c), d, np.int32(16), np.int32(20), np.int32(32),
                                np.int32(32), np.int32(0))))


# ---------------------------------------------------------------- the same source on the GPU's compiler

@pytest.mark.skipif(nvrtc.available() is not None, reason=f"NVRTC not installed: {nvrtc.available()}")
@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])  # CUDA 13's NVRTC has no sm_70 any more
def test_nvrtc_compiles_the_wmma_kernels_to_hmma(arch):
    result = nvrtc.compile(SOURCE.read_text(), "wmma_tiles.cu", arch)
    assert "0 bytes spill stores, 0 bytes spill loads" in result.log
    if sass.available() is not None:
        pytest.skip(f"no disassembler: {sass.available()}")
    functions = sass.parse_sass(sass.disassemble(result.cubin))
    wanted = [n for n in functions if n.startswith(("wmma_f16", "wmma_bf16", "wmma_tf32"))]
    assert len(wanted) == (4 if arch == "sm_75" else 9)  # bf16 and tf32 need sm_80
    for name in wanted:
        assert any(x.opcode.startswith("HMMA") for x in functions[name].instructions), f"{name}: no HMMA on {arch}"
