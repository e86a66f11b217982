"""What conv2d accepts and returns: any NumPy memory layout, read-only and view inputs, lists, batch
shapes of any rank, empty outputs, and IEEE propagation of NaN and Inf."""
from __future__ import annotations

import numpy as np
import pytest

import configs
import gpuconv
from gpuconv.reference import conv2d_reference
from tolerances import assert_result, is_exact

CASE = configs.Case("arrays", (2,), 7, 6, 4, 3, 3, 2, 6, strides=[1, 2], padding="SAME")  # grouped, G=2


def _ints(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).integers(-3, 4, shape).astype(dtype)


def _check(target, x, w, **kw):
    """conv2d(x, w) is exactly the reference on a contiguous copy (integer values: any order is exact)."""
    y = target.conv(x, w, **kw)
    xc, wc = np.ascontiguousarray(x), np.ascontiguousarray(w)
    p = target.problem(xc, wc, **kw)
    algo = target.resolve(p)
    assert_result(y, xc, wc, p, algo, exact=is_exact(algo))
    return y


# --- memory layouts -----------------------------------------------------------------------------

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_strided_slices(data_format, target):
    big = _ints((4, 15, 13, 9), 1) if data_format == "NHWC" else _ints((4, 9, 15, 13), 1)
    x = big[::2, 1::2, ::2, :4] if data_format == "NHWC" else big[::2, :4, 1::2, ::2]
    w = _ints((3, 3, 2, 12), 2)[:, :, :, ::2]
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    _check(target, x, w, strides=[1, 2], padding="SAME", data_format=data_format)


def test_fortran_order(target):
    x = np.asfortranarray(_ints(CASE.x_shape, 3))
    w = np.asfortranarray(_ints(CASE.w_shape, 4))
    assert x.flags.f_contiguous and not x.flags.c_contiguous
    _check(target, x, w, **CASE.kwargs())


def test_read_only_inputs(target):
    x, w = _ints(CASE.x_shape, 5), _ints(CASE.w_shape, 6)
    x.flags.writeable = False
    w.flags.writeable = False
    _check(target, x, w, **CASE.kwargs())


def test_reversed_and_transposed_views(target):
    """Negative strides, and an NCHW array that is a transposed view of NHWC memory."""
    x_nhwc = _ints(CASE.x_shape, 7)
    w = _ints(CASE.w_shape, 8)[::-1, ::-1]
    _check(target, x_nhwc[:, ::-1, :, ::-1], w, **CASE.kwargs())
    x_nchw = x_nhwc.transpose(0, 3, 1, 2)
    kw = dict(CASE.kwargs(), data_format="NCHW")
    y = _check(target, x_nchw, w, **kw)
    # The same data through both layouts gives the same numbers.
    y_nhwc = target.conv(np.ascontiguousarray(x_nhwc), w, **CASE.kwargs())
    np.testing.assert_array_equal(y, y_nhwc.transpose(0, 3, 1, 2))


def test_broadcast_view_with_zero_strides(target):
    """np.broadcast_to gives a read-only view whose strides are 0 along broadcast axes."""
    row = _ints((1, 1, 6, 4), 9)
    x = np.broadcast_to(row, (2, 7, 6, 4))
    assert x.strides[0] == 0 and x.strides[1] == 0
    _check(target, x, _ints(CASE.w_shape, 10), **CASE.kwargs())


def test_inputs_are_not_modified(target):
    x, w = _ints(CASE.x_shape, 11), _ints(CASE.w_shape, 12)
    x0, w0 = x.copy(), w.copy()
    target.conv(x, w, **CASE.kwargs())
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_output_is_a_fresh_writable_array(target):
    x, w = _ints(CASE.x_shape, 13), _ints(CASE.w_shape, 14)
    y = target.conv(x, w, **CASE.kwargs())
    assert y.flags.writeable
    assert not np.shares_memory(y, x) and not np.shares_memory(y, w)


@pytest.mark.parametrize("batch", [(3,), (2, 3), (1, 2, 2)])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_batch_shape_ranks(batch, data_format, target):
    """Rank 4, 5 and 6 inputs: the batch shape is flattened and restored."""
    tail = (5, 6, 4) if data_format == "NHWC" else (4, 5, 6)
    x = _ints(batch + tail, 15)
    w = _ints((3, 3, 4, 3), 16)
    y = _check(target, x, w, padding="SAME", data_format=data_format)
    # Batch entries are independent: each equals the rank-4 call on its own image.
    flat = target.conv(x.reshape((-1,) + tail), w, padding="SAME", data_format=data_format)
    np.testing.assert_array_equal(y.reshape(flat.shape), flat)


# --- other input types --------------------------------------------------------------------------

def test_float_lists(backend):
    """Lists of Python floats are float32, as in TF and PyTorch (more: tests/test_list_inputs.py)."""
    x, w = _ints(CASE.x_shape, 17, np.float32), _ints(CASE.w_shape, 18, np.float32)
    y = gpuconv.conv2d(x.tolist(), w.tolist(), **CASE.kwargs(), backend=backend)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_array_equal(y, gpuconv.conv2d(x, w, **CASE.kwargs(), backend=backend))


@pytest.mark.parametrize("dtype", configs.DTYPES)
def test_default_backend_returns_numpy_in_input_dtype(dtype):
    x, w = _ints(CASE.x_shape, 19, configs.np_dtype(dtype)), _ints(CASE.w_shape, 20, configs.np_dtype(dtype))
    y = gpuconv.conv2d(x, w, **CASE.kwargs())
    assert type(y) is np.ndarray and y.dtype == configs.np_dtype(dtype)


# --- empty outputs: correctly shaped, input's dtype (TF 2.21 returns the input's shape instead) -----

EMPTY = [
    ("batch_0", (0, 5, 5, 4), (3, 3, 4, 2), dict(padding="SAME"), (0, 5, 5, 2)),
    ("batch_0_rank5", (2, 0, 5, 5, 4), (3, 3, 4, 2), {}, (2, 0, 3, 3, 2)),
    ("out_channels_0", (2, 5, 5, 4), (3, 3, 4, 0), dict(strides=2), (2, 2, 2, 0)),
    ("out_channels_0_grouped", (1, 5, 5, 4), (3, 3, 2, 0), {}, (1, 3, 3, 0)),
    ("same_zero_height", (2, 0, 5, 4), (3, 3, 4, 2), dict(padding="SAME"), (2, 0, 5, 2)),
    ("same_zero_width_nchw", (1, 4, 5, 0), (3, 3, 4, 2), dict(padding="SAME", data_format="NCHW"),
     (1, 2, 5, 0)),
    ("batch_0_nchw_explicit", (0, 4, 5, 5), (3, 3, 4, 2),
     dict(data_format="NCHW", padding=[[0, 0], [0, 0], [1, 1], [2, 0]]), (0, 2, 5, 5)),
]


@pytest.mark.parametrize("dtype", configs.DTYPES)
@pytest.mark.parametrize("name, xs, ws, kw, want", EMPTY, ids=[e[0] for e in EMPTY])
def test_empty_outputs(name, xs, ws, kw, want, dtype, target):
    dt = configs.np_dtype(dtype)
    y = target.conv(np.ones(xs, dt), np.ones(ws, dt), **kw)
    assert type(y) is np.ndarray
    assert (y.shape, y.dtype) == (want, dt)


def test_empty_reduction_is_not_an_error_for_empty_batch(target):
    """Batch 0 with a kernel that fits: no work, no error, no reading of the (absent) input."""
    y = target.conv(np.empty((0, 3, 3, 2), np.float32), np.ones((3, 3, 2, 5), np.float32))
    assert y.shape == (0, 1, 1, 5)


# --- NaN and Inf --------------------------------------------------------------------------------

NONFINITE_CASES = [c for c in configs.CURATED if c.id in (
    "rgb_c3_k5_same", "same_even_in_stride2", "dilation_stride_same", "groups_2", "depthwise_m2_stride2",
    "nchw_groups", "pointwise", "explicit_pad_stride_dilation", "deeper_c32_k16", "valid_3x3_s1")]


def _field(case, p, where) -> np.ndarray:
    """Outputs whose receptive field contains a True element of `where` (reference on an indicator)."""
    ones = np.ones(case.w_shape)
    return conv2d_reference(where.reshape(p.input_shape).astype(np.float64), ones, p) > 0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", NONFINITE_CASES, ids=[c.id for c in NONFINITE_CASES])
def test_nan_inf_in_input_propagate_only_to_their_receptive_field(case, dtype, target):
    dt = configs.np_dtype(dtype)
    rng = np.random.default_rng(21)
    x = rng.uniform(0.5, 1.0, case.x_shape).astype(dt)
    w = (rng.uniform(0.5, 1.0, case.w_shape) * rng.choice([-1, 1], case.w_shape)).astype(dt)  # no zeros
    flat = x.reshape(-1)
    nan_at, inf_at = rng.choice(flat.size, 2, replace=False)
    flat[nan_at], flat[inf_at] = np.nan, np.inf
    y = target.conv(x, w, **case.kwargs())
    p = target.problem(x, w, **case.kwargs())
    y = y.reshape(p.output_shape)
    nan_field = _field(case, p, np.isnan(x))
    inf_field = _field(case, p, np.isinf(x)) & ~nan_field
    np.testing.assert_array_equal(np.isnan(y), nan_field, err_msg="NaN outputs differ from the NaN's field")
    np.testing.assert_array_equal(np.isinf(y), inf_field, err_msg="Inf outputs differ from the Inf's field")
    # Each Inf output is one +Inf input times one filter tap: its sign is that tap's.
    ref = conv2d_reference(x.reshape(p.input_shape), w, p)
    np.testing.assert_array_equal(y[inf_field], ref[inf_field])
    finite = ~(nan_field | inf_field)
    xz = np.where(np.isfinite(x), x, 0).astype(dt)
    assert_result(np.where(finite, y, 0).astype(dt), xz.reshape(p.input_shape),
                  w, p, target.resolve(p), ref=np.where(finite, conv2d_reference(xz.reshape(p.input_shape), w, p), 0))


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_nonfinite_filter_tap(value, padding, target):
    """A non-finite filter tap reaches exactly the outputs for which that tap reads an input pixel
    (TF's meaning: a tap in the padding adds no term, it is not 0 * w; see test_tensorflow.py)."""
    x = np.random.default_rng(22).uniform(0.5, 1.0, (1, 5, 6, 3)).astype(np.float32)
    w = np.random.default_rng(23).uniform(0.5, 1.0, (3, 3, 3, 4)).astype(np.float32)
    w[0, 2, 1, 1] = value                   # top-right tap, input channel 1, output channel 1
    y = target.conv(x, w, padding=padding)
    p = target.problem(x, w, padding=padding)
    # Tap (0, 2) reads input row oh - PT, column ow - PL + 2.
    rows = np.arange(p.OH) - p.PT
    cols = np.arange(p.OW) - p.PL + 2
    hit = ((rows >= 0) & (rows < p.H))[:, None] & ((cols >= 0) & (cols < p.W))[None, :]
    y1 = y[0, :, :, 1]
    np.testing.assert_array_equal(~np.isfinite(y1), hit, err_msg="non-finite outputs differ from the tap's reach")
    if np.isnan(value):
        assert np.isnan(y1[hit]).all()
    else:
        assert np.isposinf(y1[hit]).all(), "+Inf times positive inputs must stay +Inf (no 0 * Inf = NaN)"
    assert np.isfinite(np.delete(y, 1, axis=3)).all(), "other output channels must stay finite"


INF_MEETS_INF = [  # (input NHWC, filters HWIO, conv2d kwargs)
    ((2, 6, 7, 4), (3, 3, 4, 5), dict(padding="SAME")),
    ((2, 6, 7, 4), (3, 3, 2, 6), dict(padding="VALID")),                         # 2 groups
    ((1, 8, 8, 4), (3, 3, 1, 4), dict(padding="SAME", strides=2)),               # depthwise
    ((2, 5, 6, 4), (1, 1, 4, 3), dict()),                                        # pointwise
    ((1, 7, 7, 4), (3, 2, 4, 3), dict(padding=[[0, 0], [1, 2], [2, 0], [0, 0]], dilations=2)),
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("xs,ws,kw", INF_MEETS_INF, ids=["same", "grouped", "depthwise", "pointwise", "explicit"])
def test_inf_input_meets_inf_filter_tap(xs, ws, kw, data_format, dtype, target):
    """Each output is the IEEE value of the exact sum of its terms: an Inf input under an Inf filter tap
    gives +-Inf (not the NaN of Inf * 0 in a GEMM on zeroed filters), NaN where Inf - Inf or 0 * Inf
    occur among its terms; compared with the float64 reference on every backend and algorithm."""
    dt = configs.np_dtype(dtype)
    rng = np.random.default_rng(24)
    x = rng.uniform(0.5, 1.0, xs)
    w = rng.uniform(0.5, 1.0, ws) * rng.choice([-1, 1], ws)            # no zeros: 0 * Inf only where put
    x[0, 2, 3, 1] = x[-1, -2, -3, 3] = np.inf
    x[0, 0, 0, 0] = -np.inf
    x[-1, 1, 1, 1] = 0.0                                                # 0 under an Inf tap: NaN
    cg, kg = ws[2], ws[3] // (xs[3] // ws[2])
    w[:, :, 1 % cg, (1 // cg) * kg] = np.inf                            # every tap on channel 1's +Inf
    w[:, :, 3 % cg, (3 // cg + 1) * kg - 1] = -np.inf                   # and on channel 3's: -Inf
    x, w = x.astype(dt), w.astype(dt)
    if data_format == "NCHW":
        x = x.transpose(0, 3, 1, 2).copy()
        pad = kw.get("padding", "VALID")
        kw = dict(kw, padding=pad if isinstance(pad, str) else [pad[i] for i in (0, 3, 1, 2)])
    y = target.conv(x, w, data_format=data_format, **kw)
    p = target.problem(x, w, data_format=data_format, **kw)
    ref = conv2d_reference(x, w, p)
    meets = conv2d_reference(~np.isfinite(x), ~np.isfinite(w), p) > 0
    assert meets.any() and np.isinf(ref[meets]).any()                  # the case is real
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref), err_msg="NaN outputs differ from IEEE's")
    np.testing.assert_array_equal(y[np.isinf(ref)], ref[np.isinf(ref)], err_msg="+-Inf outputs differ")
    finite = np.isfinite(ref)
    xz, wz = (np.where(np.isfinite(a), a, 0).astype(dt) for a in (x, w))
    assert_result(np.where(finite, y, 0).astype(dt), xz, wz, p, target.resolve(p),
                  ref=np.where(finite, conv2d_reference(xz, wz, p), 0))


def test_big_endian_inputs_are_converted(target):
    """Byte order is storage: '>f4' data gives the same result as native float32."""
    rng = np.random.default_rng(31)
    x = rng.integers(-3, 4, (1, 5, 6, 3)).astype(np.float32)
    w = rng.integers(-3, 4, (3, 3, 3, 4)).astype(np.float32)
    y = target.conv(x.astype(">f4"), w.astype(">f4"), padding="SAME")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, target.conv(x, w, padding="SAME"))


@pytest.mark.parametrize("dtype", [">f4", ">f2", ">f8"])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("w_shape", [(1, 1, 8, 6), (1, 1, 4, 6), (3, 3, 1, 8), (3, 3, 8, 16), (3, 3, 2, 8)],
                         ids=["pointwise", "pointwise-grouped", "depthwise", "3x3", "3x3-grouped"])
def test_big_endian_on_every_algorithm(target, w_shape, data_format, dtype):
    """A non-native input reaches the NumPy backend unconverted (it converts block by block): every
    algorithm must read it as the values it holds."""
    rng = np.random.default_rng(32)
    shape = (2, 7, 6, 8) if data_format == "NHWC" else (2, 8, 7, 6)
    x = rng.integers(-3, 4, shape).astype(dtype)
    w = rng.integers(-3, 4, w_shape).astype(dtype)
    native = np.dtype(dtype).newbyteorder("=")
    y = target.conv(x, w, padding="SAME", data_format=data_format)
    assert y.dtype == native
    np.testing.assert_array_equal(y, target.conv(x.astype(native), w.astype(native), padding="SAME",
                                                 data_format=data_format))
