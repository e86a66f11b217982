"""gpuconv's conv2d gradients (gpuconv/gradients.py): the adjoint identities of the forward convolution in
float64 on every curated configuration, TensorFlow's GradientTape and conv2d_transpose where TF's CPU kernels
run the case, half types within their rounding, and the argument checks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gpuconv
from gpuconv import conv2d_backprop_filter, conv2d_backprop_input, conv2d_grads, conv2d_transpose

import configs
from configs import CURATED, CURATED_IDS


def _check_adjoint(case, seed=0):
    x, w, dy = _operands(case, seed=seed)
    args = (case.strides, case.padding, case.data_format, case.dilations)
    y = gpuconv.conv2d(x, w, *args, backend="numpy")
    dx, dw = conv2d_grads(x, w, dy, *args)
    assert dx.shape == x.shape and dw.shape == w.shape and dx.dtype == dw.dtype == np.float64
    scale = np.abs(y).sum() * np.abs(dy).max() + np.abs(x).sum() * np.abs(dx).max() + 1e-300
    assert abs(np.vdot(y, dy) - np.vdot(x, dx)) <= 1e-12 * scale
    assert abs(np.vdot(y, dy) - np.vdot(w, dw)) <= 1e-12 * scale
    return x, w, dy, args, dx, dw


def _operands(case, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    y_shape = gpuconv.conv2d(x, w, case.strides, case.padding, case.data_format, case.dilations,
                             backend="numpy").shape
    dy = rng.standard_normal(y_shape).astype(dtype)
    return x, w, dy


@pytest.mark.parametrize("case", CURATED, ids=CURATED_IDS)
def test_gradients_are_the_adjoints_of_the_convolution(case):
    """<conv2d(x, w), dy> = <x, backprop_input(dy)> = <w, backprop_filter(x, dy)>: the definition of both
    gradients, exact up to float64 rounding, for every stride, padding, dilation, group and layout."""
    x, w, dy, args, dx, dw = _check_adjoint(case)
    np.testing.assert_array_equal(dx, conv2d_backprop_input(x.shape, w, dy, *args))
    np.testing.assert_array_equal(dw, conv2d_backprop_filter(x, w.shape, dy, *args))


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_gradients_are_the_adjoints_on_generated_cases(data):
    """The same identities on hypothesis-generated configurations (the forward suite's generator)."""
    case, _ = data.draw(configs.cases(configs.SCALES["numpy"], ("float64",)))
    _check_adjoint(case, seed=1)



@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_forward_conv_phases_equal_the_per_tap_gemms_on_generated_cases(data):
    """The input gradient as forward convolutions over stride phases and dy crops (strides above the
    kernel, strides sharing a factor with the dilation, padding beyond the filter) on generated cases."""
    case, _ = data.draw(configs.cases(configs.SCALES["numpy"], ("float64",)))
    x, w, dy = _operands(case, seed=3)
    args = (case.strides, case.padding, case.data_format, case.dilations)
    got = conv2d_backprop_input(x.shape, w, dy, *args, algorithm="forward-conv")
    want = conv2d_backprop_input(x.shape, w, dy, *args, algorithm="gemm")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * (np.abs(want).max() + 1e-300))


TF_CASES = [
    dict(x=(2, 9, 11, 3), w=(3, 3, 3, 4), strides=1, padding="SAME", dilations=1),
    dict(x=(2, 10, 9, 4), w=(3, 2, 4, 5), strides=2, padding="VALID", dilations=1),
    dict(x=(1, 12, 13, 3), w=(5, 5, 3, 2), strides=3, padding="SAME", dilations=1),
    dict(x=(2, 8, 7, 2), w=(2, 3, 2, 3), strides=[1, 2], padding=[[0, 0], [1, 2], [0, 1], [0, 0]], dilations=1),
]


@pytest.mark.parametrize("c", TF_CASES, ids=[f"tf{i}" for i in range(len(TF_CASES))])
def test_gradients_match_tensorflow(c):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the test extra has it)")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(c["x"]).astype(np.float32)
    w = rng.standard_normal(c["w"]).astype(np.float32)
    args = (c["strides"], c["padding"], "NHWC", c["dilations"])
    dy = rng.standard_normal(gpuconv.conv2d(x, w, *args).shape).astype(np.float32)
    xt, wt = tf.constant(x), tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch([xt, wt])
        y = tf.nn.conv2d(xt, wt, c["strides"], c["padding"], "NHWC", c["dilations"])
    tdx, tdw = tape.gradient(y, [xt, wt], output_gradients=tf.constant(dy))
    dx, dw = conv2d_grads(x, w, dy, *args)
    np.testing.assert_allclose(dx, tdx.numpy(), rtol=1e-4, atol=1e-4 * np.abs(tdx.numpy()).max())
    np.testing.assert_allclose(dw, tdw.numpy(), rtol=1e-4, atol=1e-4 * np.abs(tdw.numpy()).max())


def test_conv2d_transpose_matches_tensorflow():
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the test extra has it)")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 6, 4)).astype(np.float32)          # the transposed conv's input
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)          # [KH, KW, out channels, in channels]
    out_shape = (2, 10, 12, 3)
    y = conv2d_transpose(x, w, out_shape, strides=2, padding="SAME")
    ty = tf.nn.conv2d_transpose(tf.constant(x), tf.constant(w), out_shape, strides=2, padding="SAME").numpy()
    np.testing.assert_allclose(y, ty, rtol=1e-4, atol=1e-4 * np.abs(ty).max())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_lower_precision_within_rounding(dtype):
    """Accumulated in float32 (float32: as is) and rounded once: close to the float64 gradients."""
    from gpuconv.dtypes import unit_roundoff
    from configs import np_dtype
    case = next(c for c in CURATED if c.data_format == "NHWC" and c.K >= 4)
    x, w, dy = _operands(case, seed=5)
    args = (case.strides, case.padding, case.data_format, case.dilations)
    dt = np_dtype(dtype)
    xl, wl, dyl = (a.astype(dt) for a in (x, w, dy))
    dx64, dw64 = conv2d_grads(*(a.astype(np.float64) for a in (xl, wl, dyl)), *args)
    dx, dw = conv2d_grads(xl, wl, dyl, *args)
    assert dx.dtype == dw.dtype == dt
    u = unit_roundoff(dt)
    for got, ref in ((dx, dx64), (dw, dw64)):
        err = np.abs(got.astype(np.float64) - ref)
        assert (err <= 2 * u * np.abs(ref) + 1e-5 * np.abs(ref).max()).all(), err.max()


def test_bad_arguments_name_what_is_wrong():
    x = np.zeros((1, 6, 6, 2), np.float32)
    w = np.zeros((3, 3, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"out_backprop has shape \(1, 5, 5, 4\); expected \(1, 4, 4, 4\)"):
        conv2d_backprop_input(x.shape, w, np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"filter_sizes=\[3, 3, 2\] is not allowed: expected 4 non-negative ints"):
        conv2d_backprop_filter(x, [3, 3, 2], np.zeros((1, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"input_sizes=\[1, 6, -6, 2\] is not allowed"):
        conv2d_backprop_input([1, 6, -6, 2], w, np.zeros((1, 4, 4, 4), np.float32))
    with pytest.raises(TypeError, match=r"out_backprop has dtype float64; expected float32"):
        conv2d_backprop_input(x.shape, w, np.zeros((1, 4, 4, 4), np.float64))
    with pytest.raises(ValueError, match=r"padding='FULL' is not allowed"):
        conv2d_grads(x, w, np.zeros((1, 4, 4, 4), np.float32), padding="FULL")


GRAD_WS_CASES = [((2, 40, 40, 16), (3, 3, 16, 16), 1), ((2, 40, 40, 16), (3, 3, 16, 8), 2),
                 ((2, 40, 40, 16), (3, 3, 4, 16), 1), ((2, 40, 40, 16), (3, 3, 1, 16), 1)]


@pytest.mark.parametrize("xs,ws,strides", GRAD_WS_CASES, ids=["3x3", "stride2", "grouped", "depthwise"])
def test_gradients_stay_within_the_numpy_workspace(xs, ws, strides, monkeypatch):
    """Every algorithm of both gradients splits its work into pixel blocks sized by the NumPy workspace bound:
    the peak of NumPy's allocations (tracemalloc) beyond the result stays near the bound, and the result is
    unchanged."""
    import tracemalloc
    rng = np.random.default_rng(3)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    dy = rng.standard_normal(gpuconv.conv2d(x, w, strides, "SAME").shape).astype(np.float32)
    p = gpuconv.parse_problem(xs, x.dtype, ws, w.dtype, strides, "SAME")[0]
    algos = {which: [a for a, algo in gpuconv.gradients.gradient_algorithms("numpy", which).items()
                     if algo.why_not(p) is None] for which in ("input", "filter")}
    calls = [(lambda a=a: conv2d_backprop_input(xs, w, dy, strides, "SAME", algorithm=a), x.nbytes)
             for a in algos["input"]]
    calls += [(lambda a=a: conv2d_backprop_filter(x, ws, dy, strides, "SAME", algorithm=a), w.nbytes)
              for a in algos["filter"]]
    unbounded = [f() for f, _ in calls]
    budget = 64 << 10
    monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", budget)
    for (f, result_bytes), expected in zip(calls, unbounded):
        f()
        tracemalloc.start()
        try:
            got = f()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
        # Beyond the bound: the result, the filters' re-arranged copy and NumPy's fixed-size iterator buffers.
        allowed = budget + result_bytes + 2 * w.nbytes + (128 << 10)
        assert peak <= allowed, f"peak {peak} bytes > {allowed} (bound {budget} + result {result_bytes})"


NUMPY_GRADIENT_ALGORITHMS = [(which, name) for which in ("input", "filter")
                             for name in gpuconv.gradients.gradient_algorithms("numpy", which) if name != "gemm"]


@pytest.mark.parametrize("which,name", NUMPY_GRADIENT_ALGORITHMS,
                         ids=[f"{w}-{n}" for w, n in NUMPY_GRADIENT_ALGORITHMS])
@pytest.mark.parametrize("case", CURATED, ids=CURATED_IDS)
def test_numpy_gradient_algorithms_equal_the_per_tap_gemms(case, which, name):
    """Every NumPy gradient algorithm (col2im, im2col, depthwise, the stride-1 input gradient as a forward
    convolution) gives the per-tap GEMMs' result: groups, depthwise multipliers, strides, dilations,
    asymmetric padding, NCHW."""
    x, w, dy = _operands(case, seed=4)
    args = (case.strides, case.padding, case.data_format, case.dilations)
    algo = gpuconv.gradients.gradient_algorithms("numpy", which)[name]
    p = gpuconv.parse_problem(x.shape, x.dtype, w.shape, w.dtype, *args)[0]
    if algo.why_not(p) is not None:
        pytest.skip(f"{name}: {algo.why_not(p)}")
    grad = conv2d_backprop_input if which == "input" else conv2d_backprop_filter
    a = w if which == "input" else x
    shape = x.shape if which == "input" else w.shape
    got = grad(*((shape, a) if which == "input" else (a, shape)), dy, *args, algorithm=name)
    want = grad(*((shape, a) if which == "input" else (a, shape)), dy, *args, algorithm="gemm")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())
    # bit-identical when repeated (worker threads' partial sums are added in batch order)
    np.testing.assert_array_equal(got, grad(*((shape, a) if which == "input" else (a, shape)), dy, *args,
                                            algorithm=name))


def test_input_gradient_auto_rule():
    """auto takes the forward convolution where it is one stride-1 convolution run as Winograd, pointwise
    or depthwise, col2im for few ungrouped, padded channels, else the per-tap GEMMs; forward-conv runs
    strided and over-padded layers too (as stride phases and dy crops), but auto does not take it there."""
    from gpuconv.gradients import _pick

    def picked(xs, ws, strides=1, padding="SAME"):
        dt = np.float32
        p = gpuconv.parse_problem(xs, dt, ws, dt, strides, padding)[0]
        return _pick("input", "numpy", "auto", p, ())[1].name
    assert picked((8, 28, 28, 64), (3, 3, 64, 64)) == "forward-conv"      # Winograd
    assert picked((8, 14, 14, 64), (1, 1, 64, 256)) == "forward-conv"     # pointwise
    assert picked((8, 28, 28, 32), (3, 3, 1, 32)) == "forward-conv"       # depthwise
    assert picked((8, 56, 56, 128), (3, 3, 4, 128)) == "forward-conv"    # ResNeXt: Winograd, groups bundled
    assert picked((8, 7, 7, 512), (3, 3, 512, 512)) == "gemm"             # forward would be im2col + GEMM
    assert picked((8, 32, 32, 3), (3, 3, 3, 16), padding="VALID") == "gemm"  # not Winograd on 3 channels
    assert picked((8, 32, 32, 3), (3, 3, 3, 16)) == "col2im"                 # padded: per-tap would copy dy
    assert picked((8, 224, 224, 3), (7, 7, 3, 64), strides=2) == "col2im"     # the stem
    assert picked((8, 56, 56, 16), (3, 3, 16, 16), strides=2) == "gemm"       # 16 channels
    assert picked((8, 56, 56, 8), (3, 3, 2, 16), strides=2) == "gemm"         # grouped
    assert picked((8, 28, 28, 64), (3, 3, 64, 64), strides=2) == "gemm"
    assert picked((8, 56, 56, 32), (3, 3, 1, 32), strides=2) == "gemm"       # depthwise, strided
    algo = gpuconv.gradients.gradient_algorithms("numpy", "input")["forward-conv"]
    for strides, padding in ((2, "VALID"), (1, [[0, 0], [3, 3], [3, 3], [0, 0]])):
        p = gpuconv.parse_problem((1, 6, 6, 2), np.float32, (3, 3, 2, 4), np.float32, strides, padding)[0]
        assert algo.why_not(p) is None and "strided or cropped" in algo.slower(p)


def test_filter_gradient_auto_rule():
    """auto: depthwise for one channel per group, im2col for larger-than-1x1 filters over >= 28x28 outputs,
    else the per-tap GEMMs."""
    def picked(xs, ws, strides=1):
        p = gpuconv.parse_problem(xs, np.float32, ws, np.float32, strides, "SAME")[0]
        return gpuconv.gradients._pick("filter", "numpy", "auto", p, ())[1].name
    assert picked((8, 56, 56, 32), (3, 3, 1, 32)) == "depthwise"
    assert picked((8, 56, 56, 32), (3, 3, 1, 64), strides=2) == "depthwise"
    assert picked((8, 224, 224, 3), (7, 7, 3, 64), strides=2) == "im2col"
    assert picked((8, 56, 56, 128), (3, 3, 4, 128)) == "im2col"
    assert picked((8, 28, 28, 128), (3, 3, 128, 128)) == "im2col"
    assert picked((8, 14, 14, 256), (3, 3, 256, 256)) == "gemm"
    assert picked((8, 56, 56, 256), (1, 1, 256, 64)) == "gemm"


COL2IM_CASES = [((2, 11, 13, 16), (3, 3, 16, 8), 2, 1, "NHWC"), ((2, 24, 11, 13), (3, 3, 6, 8), 2, 1, "NCHW"),
                ((2, 12, 10, 20), (3, 2, 20, 6), 1, 2, "NHWC"), ((2, 3, 23, 21), (7, 7, 3, 8), 2, 1, "NCHW"),
                ((1, 30, 29, 2), (5, 3, 1, 4), 3, 2, "NHWC")]


@pytest.mark.parametrize("budget", [None, 4 << 10], ids=["whole-images", "row-segments"])
@pytest.mark.parametrize("xs,ws,strides,dilations,layout", COL2IM_CASES)
def test_col2im_paths_equal_the_per_tap_gemms(xs, ws, strides, dilations, layout, budget, monkeypatch):
    """Both col2im paths, channels innermost (C >= 16: strides, groups, dilation, NCHW) and planar stride
    phases (C < 16), over whole images and, under a tiny workspace, over segments of one output row."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    args = (strides, "SAME", layout, dilations)
    dy = rng.standard_normal(gpuconv.conv2d(x, w, *args).shape)
    if budget is not None:
        monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", budget)
    got = conv2d_backprop_input(x.shape, w, dy, *args, algorithm="col2im")
    want = conv2d_backprop_input(x.shape, w, dy, *args, algorithm="gemm")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def _input_gradient_by_definition(x_shape, w, dy, p) -> np.ndarray:
    """dx in float64 by the definition's scatter, NHWC: every product of a real dy value with a filter tap
    that lands inside the image, and nothing else (as TensorFlow's Conv2DBackpropInput adds them)."""
    dx = np.zeros((p.N, p.H, p.W, p.C))
    w5 = w.astype(np.float64).reshape(p.KH, p.KW, p.CG, p.G, p.KG)
    for oh in range(p.OH):
        for ow in range(p.OW):
            for kh in range(p.KH):
                for kw in range(p.KW):
                    ih, iw = oh * p.SH + kh * p.DH - p.PT, ow * p.SW + kw * p.DW - p.PL
                    if 0 <= ih < p.H and 0 <= iw < p.W:
                        g = dy[:, oh, ow].astype(np.float64).reshape(p.N, p.G, p.KG)
                        dx[:, ih, iw] += np.einsum("ngk,cgk->ngc", g, w5[kh, kw]).reshape(p.N, p.C)
    return dx


@pytest.mark.parametrize("xs,ws,strides,padding", [((2, 6, 7, 2), (3, 3, 2, 3), 1, "SAME"),
                                                   ((2, 6, 7, 2), (3, 3, 2, 3), 1, "VALID"),
                                                   ((2, 7, 6, 2), (3, 3, 2, 3), 2, "SAME"),
                                                   ((1, 6, 6, 4), (3, 3, 1, 4), 1, "SAME")])
def test_input_gradient_of_non_finite_filters_adds_only_real_products(xs, ws, strides, padding):
    """inf and NaN filter values: every input-gradient algorithm of every usable backend gives NaN/inf
    exactly where the definition does (a zero dy value times inf is NaN; a tap landing in the padding adds
    nothing) and the definition's values elsewhere. NumPy's planar col2im once added its zero-padded dy
    columns times inf into real pixels."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    w[0, 0, 0, 1], w[2, 1, -1, 0] = np.inf, np.nan
    p = gpuconv.parse_problem(xs, x.dtype, ws, w.dtype, strides, padding)[0]
    dy = rng.standard_normal(p.output_shape).astype(np.float32)
    dy[0, 0, 0] = 0
    want = _input_gradient_by_definition(xs, w, dy, p)
    assert np.isnan(want).any() and np.isfinite(want).any()
    usable = [b for b, why in gpuconv.backends.available_backends().items() if why is None and b != "cupy"]
    ran = []
    for backend in usable:
        for name, algo in gpuconv.gradients.gradient_algorithms(backend, "input").items():
            if algo.why_not(p) is not None:
                continue
            got = conv2d_backprop_input(xs, w, dy, strides, padding, backend=backend, algorithm=name)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{backend}:{name}")
            np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{backend}:{name}")
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5, err_msg=f"{backend}:{name}")
            ran.append(f"{backend}:{name}")
    assert {"numpy:gemm", "numpy:col2im"} <= set(ran)


def _filter_gradient_by_definition(x, dy, p) -> np.ndarray:
    """dw in float64 (HWIO) by the definition: for each tap, the products of dy with the input pixels the tap
    reads inside the image; a tap on the padding adds nothing (no 0 * dy term)."""
    dw = np.zeros((p.KH, p.KW, p.CG, p.G, p.KG))
    x5 = x.astype(np.float64).reshape(p.N, p.H, p.W, p.G, p.CG)
    for oh in range(p.OH):
        for ow in range(p.OW):
            g = dy[:, oh, ow].astype(np.float64).reshape(p.N, p.G, p.KG)
            for kh in range(p.KH):
                for kw in range(p.KW):
                    ih, iw = oh * p.SH + kh * p.DH - p.PT, ow * p.SW + kw * p.DW - p.PL
                    if 0 <= ih < p.H and 0 <= iw < p.W:
                        dw[kh, kw] += np.einsum("ngc,ngk->cgk", x5[:, ih, iw], g)
    return dw.reshape(p.KH, p.KW, p.CG, p.K)


@pytest.mark.parametrize("xs,ws,strides,padding", [((2, 6, 7, 2), (3, 3, 2, 3), 1, "SAME"),
                                                   ((2, 7, 6, 2), (3, 3, 2, 3), 2, "SAME"),
                                                   ((2, 30, 29, 2), (3, 3, 2, 3), 1, "SAME"),  # auto: im2col
                                                   ((1, 6, 6, 4), (3, 3, 1, 4), 1, "SAME"),
                                                   ((2, 8, 8, 4), (3, 3, 2, 4), 1, [[0, 0], [2, 1], [0, 3], [0, 0]])])
def test_filter_gradient_of_non_finite_dy_adds_only_real_products(xs, ws, strides, padding):
    """inf and NaN in dy: every filter-gradient algorithm of every usable backend but CUDA's splitk-gemm
    (which multiplies its im2col's padding zeros, as TF with oneDNN and PyTorch do) gives NaN/inf exactly
    where the definition does (a tap on the padding adds nothing) and its values elsewhere. NumPy's im2col
    and depthwise algorithms once multiplied their zero-padded copies by them (0 * inf = NaN)."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal(xs).astype(np.float32)
    p = gpuconv.parse_problem(xs, x.dtype, ws, x.dtype, strides, padding)[0]
    dy = rng.standard_normal(p.output_shape).astype(np.float32)
    dy[0, 0, 0, 1], dy[-1, -1, 2, 0], dy[0, 2, -1, -1] = np.inf, np.nan, -np.inf
    want = _filter_gradient_by_definition(x, dy, p)
    assert np.isnan(want).any() and np.isfinite(want).any()
    usable = [b for b, why in gpuconv.backends.available_backends().items() if why is None and b != "cupy"]
    ran = []
    for backend in usable:
        for name, algo in gpuconv.gradients.gradient_algorithms(backend, "filter").items():
            if algo.why_not(p) is not None or (backend, name) == ("emulator", "splitk-gemm"):
                continue
            got = conv2d_backprop_filter(x, ws, dy, strides, padding, backend=backend, algorithm=name)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{backend}:{name}")
            np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{backend}:{name}")
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5 * np.abs(want[finite]).max(),
                                       err_msg=f"{backend}:{name}")   # float32 sums of up to 1740 terms
            ran.append(f"{backend}:{name}")
    assert {"numpy:gemm", "numpy:im2col"} <= set(ran)
    if p.CG == 1:
        assert "numpy:depthwise" in ran


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 4),
       st.integers(0, 4), st.sampled_from(["NHWC", "NCHW"]))
def test_the_non_finite_dy_check_looks_at_every_pixel_whose_taps_read_padding(h, k, s, d, pt, pb, layout):
    """An Inf at each dy pixel in turn: the NumPy check sends the problem to the per-tap GEMMs exactly when
    some tap of that pixel reads padding (brute force over the taps), rows and columns alike."""
    from gpuconv.backends.numpy.gradients import _padding_meets_nonfinite
    pads = [[0, 0], [pt, pb], [pb, pt], [0, 0]]
    xs = (1, h, h + 1, 2)
    try:
        p = gpuconv.parse_problem(xs, np.float32, (k, k, 2, 1), np.float32, s,
                                  pads if layout == "NHWC" else [pads[0], pads[3], pads[1], pads[2]],
                                  layout, d)[0]
    except ValueError:
        return
    if p.OH <= 0 or p.OW <= 0:
        return
    for oh in range(p.OH):
        for ow in range(p.OW):
            dy = np.zeros(p.output_shape, np.float32)
            dy[(0, oh, ow, 0) if layout == "NHWC" else (0, 0, oh, ow)] = np.inf
            reads_padding = any(not (0 <= oh * p.SH + kh * p.DH - p.PT < p.H
                                     and 0 <= ow * p.SW + kw * p.DW - p.PL < p.W)
                                for kh in range(p.KH) for kw in range(p.KW))
            assert _padding_meets_nonfinite(p, dy) == reads_padding, (oh, ow, p.describe())
