"""The precision switch: conv2d(precision=...), GPUCONV_PRECISION and gpuconv.set_precision."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import gpuconv
from gpuconv import config
from gpuconv.precision import resolve_precision


@pytest.fixture
def default_precision():
    """Restores the process default after a test changes it."""
    saved = config.settings.precision
    yield
    config.settings.precision = saved


def small(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, 6, 7, 8)).astype(dtype), rng.standard_normal((3, 3, 8, 16)).astype(dtype)


@pytest.mark.parametrize("value, error, match", [
    ("fast", ValueError, r"precision='fast' is not allowed: expected None or one of \['highest', 'tf32'\]"),
    ("", ValueError, r"precision='' is not allowed"),
    (32, TypeError, r"precision=32 is not allowed: expected None or one of"),
    (True, TypeError, r"precision=True is not allowed"),
])
def test_invalid_precision_is_refused_naming_the_argument(value, error, match):
    x, w = small()
    with pytest.raises(error, match=match):
        gpuconv.conv2d(x, w, backend="numpy", precision=value)
    with pytest.raises(error, match=match):
        gpuconv.set_precision(value)


def test_explicit_tf32_is_refused_for_float64():
    x, w = small(np.float64)
    with pytest.raises(ValueError, match=r"precision='tf32' is not allowed for float64 inputs"):
        gpuconv.conv2d(x, w, backend="numpy", precision="tf32")


def test_a_tf32_process_default_leaves_float64_and_half_types_at_highest(default_precision):
    gpuconv.set_precision("TF32")  # any case
    assert config.settings.precision == "tf32"
    assert resolve_precision(None, np.float32) == "tf32"
    for dtype in (np.float64, np.float16, ml_dtypes.bfloat16):
        assert resolve_precision(None, dtype) == "highest"
    x, w = small(np.float64)
    np.testing.assert_array_equal(gpuconv.conv2d(x, w, backend="numpy"),
                                  gpuconv.conv2d(x, w, backend="numpy", precision="highest"))


def test_numpy_backend_computes_full_float32_under_tf32():
    """"tf32" permits TF32 tensor cores; the NumPy backend has none and stays exact float32 (as
    PyTorch's allow_tf32 and TF's TensorFloat-32 switch leave CPU kernels alone)."""
    x, w = small()
    for algorithm in ("gemm", "winograd"):
        np.testing.assert_array_equal(gpuconv.conv2d(x, w, backend="numpy", algorithm=algorithm, precision="tf32"),
                                      gpuconv.conv2d(x, w, backend="numpy", algorithm=algorithm, precision="highest"))


@pytest.mark.parametrize("raw, expected, warns", [
    ("tf32", "tf32", False), ("HIGHEST", "highest", False), ("", "highest", False), ("fp16", "highest", True),
])
def test_environment_default(monkeypatch, raw, expected, warns):
    monkeypatch.setenv("GPUCONV_PRECISION", raw)
    if warns:
        with pytest.warns(UserWarning, match=r"GPUCONV_PRECISION='fp16' is not allowed: expected one of"):
            assert config.Settings().precision == expected
    else:
        assert config.Settings().precision == expected


def test_problem_records_the_resolved_precision():
    p, _ = gpuconv.parse_problem((1, 4, 4, 8), np.float32, (1, 1, 8, 8), np.float32)
    assert p.precision == "highest" and "precision" not in p.describe()
    assert "precision=tf32" in p.with_(precision="tf32").describe()
