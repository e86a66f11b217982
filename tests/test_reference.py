"""The float64 reference itself: against a literal 7-deep loop that derives output sizes and pads on its
own from TensorFlow's documented formulas, and against TF in float64."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings

import configs
from configs import CURATED, CURATED_IDS
from gpuconv.problem import parse_problem
from gpuconv.reference import abs_conv_bound, conv2d_reference


def _pair(v, data_format):
    if v is None:
        return 1, 1
    if isinstance(v, int):
        return v, v
    v = list(v)
    if len(v) == 1:
        return v[0], v[0]
    if len(v) == 2:
        return v[0], v[1]
    return (v[1], v[2]) if data_format == "NHWC" else (v[2], v[3])


def _pads(size, k, s, d, mode, explicit):
    """TF's rule (tensorflow/core/framework/kernel_shape_util.cc), written out independently."""
    eff = (k - 1) * d + 1
    if mode == "SAME":
        out = math.ceil(size / s)
        total = max((out - 1) * s + eff - size, 0)
        return out, total // 2
    before, after = explicit
    return (size + before + after - eff) // s + 1, before


def naive_conv2d(x, w, strides, padding, dilations, data_format):
    """y[n,oh,ow,k] = sum_{kh,kw,c} x[n, oh*SH - PT + kh*DH, ow*SW - PL + kw*DW, g*CG + c] * w[kh,kw,c,k],
    one scalar multiply-add at a time; taps outside the input add nothing."""
    x = np.asarray(x, np.float64)
    if data_format == "NCHW":
        x = np.moveaxis(x, -3, -1)
    batch = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    N, H, W, C = x.shape
    KH, KW, CG, K = w.shape
    G = C // CG
    KG = K // G
    sh, sw = _pair(strides, data_format)
    dh, dw = _pair(dilations, data_format)
    if isinstance(padding, str):
        mode, eh, ew = padding.upper(), (0, 0), (0, 0)
    else:
        hi, wi = (1, 2) if data_format == "NHWC" else (2, 3)
        mode, eh, ew = "EXPLICIT", tuple(padding[hi]), tuple(padding[wi])
    OH, PT = _pads(H, KH, sh, dh, mode, eh)
    OW, PL = _pads(W, KW, sw, dw, mode, ew)
    y = np.zeros((N, OH, OW, K))
    for n, oh, ow, k in itertools.product(range(N), range(OH), range(OW), range(K)):
        g = k // KG
        acc = 0.0
        for kh in range(KH):
            ih = oh * sh - PT + kh * dh
            if not 0 <= ih < H:
                continue
            for kw in range(KW):
                iw = ow * sw - PL + kw * dw
                if not 0 <= iw < W:
                    continue
                for c in range(CG):
                    acc += x[n, ih, iw, g * CG + c] * w[kh, kw, c, k]
        y[n, oh, ow, k] = acc
    y = y.reshape(batch + y.shape[1:])
    return np.moveaxis(y, -1, -3) if data_format == "NCHW" else y


def _reference(case, x, w):
    p, batch = parse_problem(x.shape, x.dtype, w.shape, w.dtype, case.strides, case.padding,
                             case.data_format, case.dilations)
    y = conv2d_reference(x.reshape(p.input_shape), w, p)
    return y.reshape(tuple(batch) + y.shape[1:]), p


def _agree(case, x, w):
    got, _ = _reference(case, x, w)
    want = naive_conv2d(x, w, case.strides, case.padding, case.dilations, case.data_format)
    assert got.shape == want.shape, (case, got.shape, want.shape)
    # Both float64, different summation orders: a few ulps of the sum of magnitudes.
    scale = naive_conv2d(np.abs(x), np.abs(w), case.strides, case.padding, case.dilations, case.data_format)
    np.testing.assert_array_less(np.abs(got - want), 1e-13 * scale + 1e-300)


@pytest.mark.parametrize("case", CURATED, ids=CURATED_IDS)
def test_reference_matches_literal_loop_curated(case):
    x, w = configs.random_inputs(case, "float64", seed=31)
    _agree(case, x, w)


TINY = configs.Scale(max_n=2, max_hw=6, max_c=4, max_kernel=3, deep_hw=0, deep_k=0, examples=40)


@settings(max_examples=TINY.examples, deadline=None, derandomize=True, database=None)
@given(drawn=configs.cases(TINY))
def test_reference_matches_literal_loop_generated(drawn):
    case, _ = drawn
    x, w = configs.random_inputs(case, "float64", seed=32)
    _agree(case, x, w)


def test_abs_conv_bound_is_the_reference_of_magnitudes():
    case = next(c for c in CURATED if c.id == "dilation_stride_same")
    x, w = configs.random_inputs(case, "float64", seed=33)
    ref, p = _reference(case, x, w)
    bound = abs_conv_bound(x, w, p)
    np.testing.assert_allclose(bound, naive_conv2d(np.abs(x), np.abs(w), case.strides, case.padding,
                                                   case.dilations, case.data_format), rtol=1e-13)
    assert (np.abs(ref) <= bound * (1 + 1e-13)).all()


@pytest.mark.parametrize("padding", ["SAME", [[0, 0], [2, 1], [1, 2], [0, 0]]])
def test_reference_nonfinite_filter_tap_only_where_it_reads_input(padding):
    """Like TF (test_tensorflow.py): a tap over the padding adds no term, even when it is NaN."""
    case = configs.Case("nan_tap", (1,), 4, 5, 2, 3, 3, 2, 3, padding=padding)
    x, w = configs.random_inputs(case, "float64", seed=34)
    w[0, 0, 1, 2] = np.nan
    got, _ = _reference(case, x, w)
    want = naive_conv2d(x, w, case.strides, case.padding, case.dilations, case.data_format)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("case", CURATED, ids=CURATED_IDS)
def test_reference_matches_tensorflow_float64(case):
    pytest.importorskip("tensorflow")
    from test_tensorflow import tf_conv
    x, w = configs.random_inputs(case, "float64", seed=35)
    ref, p = _reference(case, x, w)
    t = tf_conv(case, x, w)
    assert t.shape == ref.shape
    scale = np.abs(naive_conv2d(np.abs(x), np.abs(w), case.strides, case.padding, case.dilations,
                                case.data_format))
    np.testing.assert_array_less(np.abs(t - ref), 1e-13 * scale + 1e-300)
