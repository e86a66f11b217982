"""Nested lists and tuples as conv2d arguments: Python numbers become float32, as in TF and PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv.dtypes import bfloat16

X = [[[[0.5, -1.25], [2.0, 0.75], [1.0, 3.0]],
      [[-0.5, 1.5], [0.25, -2.0], [4.0, 1.0]],
      [[1.0, 1.0], [-3.0, 0.5], [2.5, -1.5]]]]          # NHWC [1, 3, 3, 2]
W = [[[[1.0, -0.5], [0.25, 2.0]], [[-1.0, 0.5], [1.5, 0.0]]],
     [[[0.5, 1.0], [-2.0, 0.25]], [[3.0, -1.0], [0.5, 0.75]]]]   # HWIO [2, 2, 2, 2]


def _tuples(v):
    return tuple(_tuples(e) for e in v) if isinstance(v, list) else v


def test_python_floats_become_float32():
    y = gpuconv.conv2d(X, W, backend="numpy")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, gpuconv.conv2d(np.float32(X), np.float32(W), backend="numpy"))
    assert gpuconv.conv2d(_tuples(X), _tuples(W), backend="numpy").dtype == np.float32


def test_python_ints_become_float32():
    xi = [[[[1, 2], [3, 4]], [[5, 6], [7, 8]]]]
    wi = [[[[1], [-1]]]]
    y = gpuconv.conv2d(xi, wi, backend="numpy")
    assert y.dtype == np.float32 and y[..., 0].tolist() == [[[-1, -1], [-1, -1]]]


@pytest.mark.parametrize("dtype", [np.float16, bfloat16, np.float32, np.float64], ids=str)
def test_arrays_keep_their_dtype_and_a_list_takes_the_arrays(dtype):
    x = np.asarray(X).astype(dtype)
    assert gpuconv.conv2d(x, np.asarray(W).astype(dtype), backend="numpy").dtype == dtype
    assert gpuconv.conv2d(x, W, backend="numpy").dtype == dtype      # TF converts the list to x's dtype
    assert gpuconv.conv2d(X, np.asarray(W).astype(dtype), backend="numpy").dtype == dtype


def test_lists_of_numpy_values_keep_numpy_dtype():
    x64 = [[[[np.float64(v) for v in px] for px in row] for row in img] for img in X]
    assert gpuconv.conv2d(x64, np.float64(W), backend="numpy").dtype == np.float64
    with pytest.raises(TypeError, match="input dtype float64 and filters dtype float32"):
        gpuconv.conv2d(x64, np.float32(W), backend="numpy")
    assert gpuconv.conv2d([np.float16(X[0])], np.float16(W), backend="numpy").dtype == np.float16


def test_bool_lists_are_refused_with_their_dtype():
    with pytest.raises(TypeError, match="input dtype bool"):
        gpuconv.conv2d([[[[True, False]] * 3] * 3], W, backend="numpy")
