"""gpuconv against tf.nn.conv2d (TensorFlow CPU), the definition of the semantics we copy.

Both results are held to the same reference-based bound (tolerances.py), so |ours - TF| is at most
twice that bound, and TF's own agreement with the float64 reference proves the reference's semantics.
Nothing here compares with TF's measured error: which kernels TF runs (oneDNN or Eigen, AVX-512 or
AVX2) depends on the host, so its error is a figure the benchmark reports, not a bound.
TF is never called with inputs whose handling depends on its build (empty outputs, rank-3 input, batch
padding): those are tested against our own rules in test_errors.py / test_arrays.py. Where a test says
how TF behaves, it probes this TF build first and skips, naming what it saw, where TF differs.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

tf = pytest.importorskip("tensorflow")

import configs
from configs import CURATED, CURATED_IDS
from gpuconv.reference import conv2d_reference
import gpuconv
from tolerances import assert_close, assert_result, error_bound

# Two threads at most: the test machine's cores are shared.
try:
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # already initialised by an earlier import in this process
    pass


def _to_nhwc_padding(padding):
    if isinstance(padding, str):
        return padding
    return [padding[0], padding[2], padding[3], padding[1]]


def _to_nhwc_pair(v):
    return [v[0], v[2], v[3], v[1]] if isinstance(v, (list, tuple)) and len(v) == 4 else v


def tf_conv(case: configs.Case, x, w) -> np.ndarray:
    """tf.nn.conv2d on the case's arguments. NCHW runs natively where TF's CPU kernels allow it, else
    through NHWC transposes (the definition of NCHW) with the 4-form arguments reordered."""
    # gpuconv accepts padding strings in any case; TF only upper case.
    padding = case.padding.upper() if isinstance(case.padding, str) else case.padding
    kw = dict(strides=case.strides, padding=padding, dilations=case.dilations)
    if case.data_format == "NHWC":
        return tf.nn.conv2d(x, w, data_format="NHWC", **kw).numpy()
    try:
        return tf.nn.conv2d(x, w, data_format="NCHW", **kw).numpy()
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        xt = np.moveaxis(x, -3, -1)
        y = tf.nn.conv2d(xt, w, strides=_to_nhwc_pair(case.strides), padding=_to_nhwc_padding(padding),
                         dilations=_to_nhwc_pair(case.dilations), data_format="NHWC").numpy()
        return np.moveaxis(y, -1, -3)


_TF_CACHE: dict = {}


def _curated_tf(case, dtype, seed):
    """TF's result for a curated case, computed once per session (every target compares with it)."""
    key = (case.id, dtype, seed)
    if key not in _TF_CACHE:
        x, w = configs.random_inputs(case, dtype, seed=seed)
        _TF_CACHE[key] = (x, w, tf_conv(case, x, w))
    return _TF_CACHE[key]


def _compare(target, case, x, w, t):
    p = target.problem(x, w, **case.kwargs())
    y = target.conv(x, w, **case.kwargs())
    assert y.shape == t.shape, f"{case.id}: shape {y.shape}, TensorFlow {t.shape}"
    ref = conv2d_reference(x.reshape(p.input_shape), w, p)
    assert_close(t, x, w, p, "tensorflow", ref=ref)  # the reference means what TF means
    assert_result(y, x, w, p, target.resolve(p), ref=ref)


@pytest.mark.parametrize("case", CURATED, ids=CURATED_IDS)
def test_curated_float32(case, target):
    x, w, t = _curated_tf(case, "float32", 11)
    _compare(target, case, x, w, t)


DTYPE_CASES = [c for c in CURATED if c.id in ("rgb_c3_k5_same", "groups_2", "depthwise_m2_stride2",
                                               "nchw_same_stride2", "dilation_stride_same")]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
@pytest.mark.parametrize("case", DTYPE_CASES, ids=[c.id for c in DTYPE_CASES])
def test_curated_other_dtypes(case, dtype, target):
    """Shape and dtype as TF's; values against the reference with that dtype's bound (TF-CPU's own
    half-precision accumulation is not what we promise, so only float64 TF values are bounded)."""
    x, w, t = _curated_tf(case, dtype, 12)
    p = target.problem(x, w, **case.kwargs())
    y = target.conv(x, w, **case.kwargs())
    assert (y.shape, y.dtype) == (t.shape, t.dtype)
    ref = conv2d_reference(x.reshape(p.input_shape), w, p)
    if dtype == "float64":
        assert_close(t, x, w, p, "tensorflow", ref=ref)
    assert_result(y, x, w, p, target.resolve(p), ref=ref)


def test_generated_float32(target):
    """Hypothesis-generated configurations against TF."""
    if target.algorithm == "tensor_core":
        pytest.skip("tensor_core runs float32 only as TF32 (precision='tf32'), whose error TF's float32 bound "
                    "does not cover; test_tensor_core.py checks it against its own bound")
    s = target.scale

    @settings(max_examples=max(6, s.examples // 2), deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(data=st.data())
    def check(data):
        case, dtype = data.draw(configs.cases(s, ("float32",)))
        assume(target.can_run(case, dtype) is None)
        x, w = configs.random_inputs(case, dtype, seed=13)
        _compare(target, case, x, w, tf_conv(case, x, w))

    check()


def test_deep_layer_within_bound(target):
    """A deep layer (R = 2304), where accumulation error is largest: every NumPy algorithm, and what
    "auto" picks, stays within the bound tolerances.py derives for it (host-independent; TF's error on
    the same inputs is reported by the benchmark)."""
    if target.backend != "numpy":
        pytest.skip(f"a 0.9 GFLOP layer is too slow for {target.backend}; its kernels are held to the same "
                    f"bound on the curated cases")
    case = configs.Case("deep_layer", (2,), 14, 14, 256, 3, 3, 256, 64, padding="SAME")
    x, w = configs.random_inputs(case, "float32", seed=14)
    p = target.problem(x, w, **case.kwargs())
    y = target.conv(x, w, **case.kwargs())
    assert_result(y, x, w, p, target.resolve(p))


def _tf_skips_padding_taps() -> bool:
    """Whether this TF build gives a NaN filter tap that falls on padding no term (oneDNN's AVX-512
    kernels) or multiplies it by the padding's zero (Eigen's, oneDNN's AVX2 ones: NaN everywhere)."""
    x = np.ones((1, 3, 3, 1), np.float32)
    w = np.ones((3, 3, 1, 1), np.float32)
    w[0, 0, 0, 0] = np.nan
    return bool(np.isfinite(tf.nn.conv2d(x, w, 1, "SAME").numpy()[0, 0, 0, 0]))


def test_nonfinite_filter_taps_on_padding_as_tensorflow(backend):
    """Where TF gives a padded tap no term (not 0 * NaN), gpuconv agrees with it element for element:
    the same NaN/Inf pattern and the same finite values. Every backend gives padded taps no term on any
    host (test_arrays.py); this checks that it is TF's meaning where TF's kernels make it observable."""
    if not _tf_skips_padding_taps():
        pytest.skip("this TF build multiplies a NaN filter tap by the padding's zeros (NaN in all 9 outputs: "
                    "its Eigen or oneDNN-AVX2 kernel), so TF's result does not show which meaning it has")
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    w[0, 0, 1, 2] = np.nan
    w[2, 1, 0, 0] = np.inf
    w[1, 2, 2, 3] = -np.inf
    t = tf.nn.conv2d(x, w, 1, "SAME").numpy()
    y = gpuconv.conv2d(x, w, 1, "SAME", backend=backend)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(t))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(t))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(t))
    p = gpuconv.parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "SAME")[0]
    ref = conv2d_reference(x, w, p)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(t), finite)
    bound = error_bound(x, np.where(np.isfinite(w), w, 0), p, np.where(finite, ref, 0))
    for name, got in (("TF", t), ("gpuconv", y)):
        err = np.abs(got[finite].astype(np.float64) - ref[finite])
        assert (err <= bound[finite]).all(), f"{name}: max error {err.max():.3g} beyond the bound"
