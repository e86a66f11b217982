"""conv2d on every backend/algorithm against the float64 reference: exact on small integers, within
the dtype's bound on random values, and precise enough to rule out half-precision accumulation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from numpy.lib.stride_tricks import sliding_window_view

import configs
from configs import CURATED, CURATED_IDS, DTYPES
from gpuconv.problem import parse_problem
from gpuconv.reference import conv2d_reference
from tolerances import assert_result, check_close, is_exact, max_exact_magnitude


def _exact_magnitude_or_skip(case, dtype) -> int:
    m = max_exact_magnitude(configs.np_dtype(dtype), case.R)
    if m == 0:
        pytest.skip(f"R={case.R}: sums of +-1 products already exceed {dtype}'s exact integer range")
    return m


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CURATED, ids=CURATED_IDS)
def test_curated_exact_on_small_integers(case, dtype, target):
    """Every partial sum is an integer below 2**p: any correct summation order gives the exact result."""
    x, w = configs.integer_inputs(case, dtype, _exact_magnitude_or_skip(case, dtype), seed=1)
    y = target.conv(x, w, **case.kwargs())
    p = target.problem(x, w, **case.kwargs())
    algo = target.resolve(p)
    # Winograd-like algorithms divide by transform constants: bounded, not exact.
    assert_result(y, x, w, p, algo, exact=is_exact(algo))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CURATED, ids=CURATED_IDS)
def test_curated_random_within_bound(case, dtype, target):
    x, w = configs.random_inputs(case, dtype, seed=2)
    y = target.conv(x, w, **case.kwargs())
    p = target.problem(x, w, **case.kwargs())
    assert_result(y, x, w, p, target.resolve(p))


def test_generated_against_reference(target):
    """Hypothesis-generated configurations (all dtypes, both layouts, every padding form)."""
    s = target.scale

    @settings(max_examples=s.examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(data=st.data())
    def check(data):
        case, dtype = data.draw(configs.cases(s, DTYPES))
        assume(target.can_run(case, dtype) is None)
        p = target.problem(np.empty(case.x_shape, configs.np_dtype(dtype)),
                           np.empty(case.w_shape, configs.np_dtype(dtype)), **case.kwargs())
        algo = target.resolve(p)
        m = max_exact_magnitude(p.dtype, case.R)
        if m > 0 and is_exact(algo):
            x, w = configs.integer_inputs(case, dtype, m, seed=3)
            assert_result(target.conv(x, w, **case.kwargs()), x, w, p, algo, exact=True)
        x, w = configs.random_inputs(case, dtype, seed=4)
        assert_result(target.conv(x, w, **case.kwargs()), x, w, p, algo)

    check()


CURATED_SMALL_WS = [c for c in CURATED if c.id in (
    "rgb_c3_k5_same", "same_even_in_stride2", "dilation_stride_same", "groups_4_stride2",
    "depthwise_m2_stride2", "nchw_same_stride2", "nchw_groups", "rank5_batch", "pointwise",
    "nchw_pointwise", "explicit_pad_wider_than_kernel", "deeper_c32_k16")]


@pytest.mark.parametrize("case", CURATED_SMALL_WS, ids=[c.id for c in CURATED_SMALL_WS])
def test_chunked_workspace(case, target, small_workspace):
    """A 2 KiB workspace splits the output into row blocks and row segments: seams must not show."""
    x, w = configs.integer_inputs(case, "float32", 3, seed=5)
    y = target.conv(x, w, **case.kwargs())
    p = target.problem(x, w, **case.kwargs())
    algo = target.resolve(p)
    assert_result(y, x, w, p, algo, exact=is_exact(algo))


# -------------------------------------------------------------------------------------------------
# Large reductions of positive values: the case where the accumulator's precision shows.

def _deep_case(hw: int, k: int, data_format: str = "NHWC") -> configs.Case:
    return configs.Case("deep", (1,), hw, hw, 256, 3, 3, 256, k, data_format=data_format)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_r_positive_values(dtype, data_format, target):
    """R = 3*3*256 positive products: a float16 accumulator would be off by far more than the bound,
    which allows only float32 accumulation error (see test_bound_rejects_half_accumulation)."""
    case = _deep_case(target.scale.deep_hw, target.scale.deep_k, data_format)
    x, w = configs.random_inputs(case, dtype, seed=6, positive=True)
    y = target.conv(x, w, data_format=data_format)
    p = target.problem(x, w, data_format=data_format)
    assert_result(y, x, w, p, target.resolve(p))


def _sequential_sums(x, w, acc_dtype, out_dtype):
    """VALID stride-1 NHWC conv summed one product at a time, like a naive kernel's inner loop, with an
    `acc_dtype` accumulator (each step rounded once, as an FMA would) and a final rounding to out_dtype."""
    KH, KW, C, K = w.shape
    cols = sliding_window_view(x, (KH, KW), axis=(1, 2))           # N, OH, OW, C, KH, KW
    cols = cols.transpose(0, 1, 2, 4, 5, 3).reshape(-1, KH * KW * C).astype(np.float32)
    wm = w.reshape(KH * KW * C, K).astype(np.float32)
    acc = np.zeros((cols.shape[0], K), acc_dtype)
    for r in range(cols.shape[1]):
        acc = (acc.astype(np.float32) + cols[:, r, None] * wm[r]).astype(acc_dtype)
    return acc.astype(out_dtype).reshape(x.shape[0], x.shape[1] - KH + 1, x.shape[2] - KW + 1, K)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_bound_rejects_half_accumulation(dtype):
    """The large-R test can fail: its bound accepts a sequential float32 sum (the least accurate
    correct kernel) and rejects the same sum accumulated in the half type."""
    case = _deep_case(6, 8)
    x, w = configs.random_inputs(case, dtype, seed=6, positive=True)
    dt = configs.np_dtype(dtype)
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype)[0]
    ref = conv2d_reference(x, w, p)
    good = _sequential_sums(x, w, np.float32, dt)
    assert check_close(good, x, w, p, ref=ref) is None, check_close(good, x, w, p, ref=ref)
    bad = _sequential_sums(x, w, dt, dt)
    assert check_close(bad, x, w, p, ref=ref) is not None, "a half-precision accumulator passed the bound"


def test_bound_accepts_sequential_float32_sum():
    """float32 output: a sequential float32 sum over R = 2304 positive terms stays within c'."""
    case = _deep_case(6, 8)
    x, w = configs.random_inputs(case, "float32", seed=7, positive=True)
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype)[0]
    y = _sequential_sums(x, w, np.float32, np.float32)
    assert check_close(y, x, w, p) is None, check_close(y, x, w, p)
    # ... and a float16 accumulator with a float32 output is rejected as well.
    assert check_close(_sequential_sums(x, w, np.float16, np.float32), x, w, p) is not None


@pytest.mark.parametrize("dtype", DTYPES)
def test_algorithms_agree_with_auto_choice(dtype, backend):
    """What "auto" picks is one of the backend's algorithms, and it can run the problem."""
    from gpuconv.backends import get_backend
    be = get_backend(backend)
    for case in CURATED:
        dt = configs.np_dtype(dtype)
        p = parse_problem(case.x_shape, dt, case.w_shape, dt, case.strides, case.padding,
                          case.data_format, case.dilations)[0]
        chosen = be.choose(p)
        assert chosen.name in be.algorithms(), chosen.name
        assert chosen.why_not(p) is None, f"auto chose {chosen.name} for {case.id}: {chosen.why_not(p)}"
