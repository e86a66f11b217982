"""Each algorithm of the NumPy backend on its own: accuracy per dtype, exactness where the arithmetic is
exact, every padding form and layout, the workspace bound, and Winograd's transforms and accuracy
against TensorFlow's own error.

The shared conv2d suite (test_conv2d.py) runs every algorithm on the curated configurations; this file
adds what is specific to one algorithm's arithmetic and memory use.
"""
from __future__ import annotations

import tracemalloc
import warnings

import ml_dtypes
import numpy as np
import pytest

import gpuconv
from gpuconv.backends import get_backend
from gpuconv.backends.numpy import NumpyBackend, threads
from gpuconv.backends.numpy import depthwise as dw
from gpuconv.backends.numpy import gemm as gm
from gpuconv.backends.numpy import winograd as wg
from gpuconv.problem import parse_problem
from gpuconv.reference import conv2d_reference

import tolerances

ALGOS = ("pointwise", "gemm", "depthwise", "winograd")
DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "float64": np.float64}

# (id, N, H, W, C, KH, KW, CG, K, strides, padding, dilations, why)
SHAPES = [
    ("3x3_same", 2, 9, 11, 5, 3, 3, 5, 7, 1, "SAME", 1,
     "odd sizes: partial Winograd tiles at the bottom and right, C and K not multiples of anything"),
    ("3x3_valid", 1, 8, 8, 4, 3, 3, 4, 6, 1, "VALID", 1, "no padding: Winograd reads the input in place"),
    ("3x3_explicit", 2, 7, 6, 3, 3, 3, 3, 4, 1, [[0, 0], [3, 0], [1, 4], [0, 0]], 1,
     "explicit pads wider than the filter's reach: whole output rows/columns are exactly zero"),
    ("3x3_tiny", 1, 3, 3, 2, 3, 3, 2, 3, 1, "VALID", 1, "one output pixel: a single, mostly cropped tile"),
    ("grouped", 2, 10, 9, 32, 3, 3, 4, 16, 1, "SAME", 1,
     "8 groups of 4 channels: Winograd bundles groups into block-diagonal GEMMs"),
    ("grouped_odd", 1, 6, 7, 6, 3, 3, 2, 9, 1, "SAME", 1, "3 groups, no bundle reaches 32 channels"),
    ("depthwise", 2, 9, 8, 6, 3, 3, 1, 12, 1, "SAME", 1, "one channel per group, channel multiplier 2"),
    ("pointwise", 2, 5, 6, 7, 1, 1, 7, 5, 1, "VALID", 1, "1x1: a plain GEMM"),
    ("pointwise_grouped", 1, 4, 4, 8, 1, 1, 2, 8, 1, "VALID", 1, "grouped 1x1"),
    ("stem_like", 1, 15, 14, 3, 7, 7, 3, 8, 2, "SAME", 1,
     "7x7 stride 2, C = 3: im2col copies runs of KW*C values from the padded slab"),
    ("strided_dilated", 1, 13, 12, 4, 3, 3, 4, 5, 2, "SAME", 2, "stride and dilation together"),
    ("even_kernel", 2, 7, 8, 3, 2, 4, 3, 4, 1, "SAME", 1, "even filter sizes: asymmetric SAME pads"),
]


def _case(shape_id):
    return next(s for s in SHAPES if s[0] == shape_id)


def _problem(s, dtype, layout):
    _, N, H, W, C, KH, KW, CG, K, st, pad, dil, _ = s
    xs = (N, H, W, C) if layout == "NHWC" else (N, C, H, W)
    pad = pad if isinstance(pad, str) or layout == "NHWC" else [pad[0], pad[3], pad[1], pad[2]]
    p = parse_problem(xs, dtype, (KH, KW, CG, K), dtype, st, pad, layout, dil)[0]
    return p, xs, (KH, KW, CG, K), st, pad, dil


def _run(algo, s, dtype, layout, x=None, w=None, seed=0):
    dt = np.dtype(DTYPES[dtype])
    p, xs, ws, st, pad, dil = _problem(s, dt, layout)
    why = get_backend("numpy").algorithms()[algo].why_not(p)
    if why is not None:
        pytest.skip(f"{algo}: {why}")
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.standard_normal(xs).astype(dt)
        w = rng.standard_normal(ws).astype(dt)
    y = gpuconv.conv2d(x, w, st, pad, layout, dil, backend="numpy", algorithm=algo)
    return y, x, w, p


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape_id", [s[0] for s in SHAPES])
@pytest.mark.parametrize("algo", ALGOS)
def test_against_reference(algo, shape_id, dtype, layout):
    """Within the dtype's bound, which grows with u * sqrt(R) * (|x| conv |w|) (tests/tolerances.py)."""
    y, x, w, p = _run(algo, _case(shape_id), dtype, layout)
    tolerances.assert_result(y, x, w, p, algorithm=algo)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("shape_id", [s[0] for s in SHAPES])
@pytest.mark.parametrize("algo", ["pointwise", "gemm", "depthwise"])
def test_exact_on_small_integers(algo, shape_id, layout):
    """Sums of products of small integers are exact in float32: any reordering gives the same bits."""
    s = _case(shape_id)
    dt = np.dtype(np.float32)
    p, xs, ws, *_ = _problem(s, dt, layout)
    m = tolerances.max_exact_magnitude(dt, p.R)
    rng = np.random.default_rng(1)
    x = rng.integers(-m, m + 1, xs).astype(dt)
    w = rng.integers(-m, m + 1, ws).astype(dt)
    y, x, w, p = _run(algo, s, "float32", layout, x, w)
    tolerances.assert_exact(y, x, w, p)


@pytest.mark.parametrize("shape_id", ["3x3_same", "3x3_explicit", "grouped", "depthwise"])
def test_winograd_f2_exact_on_small_integers(shape_id):
    """F(2x2,3x3)'s transforms have entries 0, +-1 (input, output) and 0, +-1/2, +-1/4 (filter): on
    small integers every intermediate is a short dyadic fraction, so float32 computes it exactly. F(4x4)
    (entries like 1/3) is not exact, which is why its tests use a tolerance."""
    s = _case(shape_id)
    rng = np.random.default_rng(2)
    p, xs, ws, *_ = _problem(s, np.dtype(np.float32), "NHWC")
    x = rng.integers(-3, 4, xs).astype(np.float32)
    w = rng.integers(-3, 4, ws).astype(np.float32)
    assert wg.tile_size(p) == 2
    y, x, w, p = _run("winograd", s, "float32", "NHWC", x, w)
    tolerances.assert_exact(y, x, w, p)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape_id", ["3x3_same", "grouped", "3x3_explicit"])
def test_winograd_f4_within_bound(shape_id, dtype):
    """F(4x4,3x3), forced (the rule picks it for half types only), stays within Winograd's bound."""
    s = _case(shape_id)
    dt = np.dtype(DTYPES[dtype])
    p, xs, ws, *_ = _problem(s, dt, "NHWC")
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
    y = np.empty(p.output_shape, dt)
    wg.Winograd(4).run(p, x, w, y)
    tolerances.assert_result(y, x, w, p, algorithm="winograd-f4")


def test_tile_size_rule():
    def prob(dtype, H):
        return parse_problem((1, H, H, 8), dtype, (3, 3, 8, 8), dtype, 1, "SAME")[0]
    assert wg.tile_size(prob(np.float32, 64)) == 2
    assert wg.tile_size(prob(np.float64, 64)) == 2
    assert wg.tile_size(prob(np.float16, 64)) == 4
    assert wg.tile_size(prob(ml_dtypes.bfloat16, 64)) == 4
    assert wg.tile_size(prob(np.float16, 8)) == 2          # too few tiles for F(4x4)


@pytest.mark.parametrize("m", [2, 4])
def test_toom_cook_matrices_compute_a_correlation(m):
    """A^T [(G g) * (B^T d)] is the 1-D correlation of d (length m + 2) with g (length 3)."""
    at, g, bt = wg.toom_cook(m, 3, wg.POINTS[m])
    rng = np.random.default_rng(4)
    for _ in range(5):
        d, f = rng.standard_normal(m + 2), rng.standard_normal(3)
        want = np.array([d[i:i + 3] @ f for i in range(m)])
        np.testing.assert_allclose(at @ ((g @ f) * (bt @ d)), want, rtol=1e-12, atol=1e-12)


def test_toom_cook_rejects_bad_points():
    with pytest.raises(ValueError, match="distinct finite points"):
        wg.toom_cook(2, 3, (0.0, 1.0, 1.0))


def test_winograd_refusals_say_why():
    algo = get_backend("numpy").algorithms()["winograd"]
    f = np.float32
    assert "3x3" in algo.why_not(parse_problem((1, 8, 8, 2), f, (5, 5, 2, 2), f, 1, "SAME")[0])
    assert "stride 1" in algo.why_not(parse_problem((1, 8, 8, 2), f, (3, 3, 2, 2), f, 2, "SAME")[0])
    assert "dilation 1" in algo.why_not(parse_problem((1, 8, 8, 2), f, (3, 3, 2, 2), f, 1, "SAME", "NHWC", 2)[0])


def test_winograd_keeps_nan_and_inf_in_their_receptive_field():
    """A tile mixes all its inputs; with a NaN/Inf input Winograd takes the exact path instead."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 3)).astype(np.float32)
    x[0, 2, 2, 1] = np.nan
    x[0, 6, 6, 0] = np.inf
    y = gpuconv.conv2d(x, w, 1, "SAME", backend="numpy", algorithm="winograd")
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "SAME")[0]
    ref = conv2d_reference(x, w, p)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
    assert np.isnan(y[0, 1:4, 1:4]).all() and np.isfinite(y[0, :1]).all()


def test_winograd_float16_finiteness_check_does_not_overflow(monkeypatch):
    """Post-ReLU float16 data whose float16 sum overflows is finite: Winograd must run (not fall back to
    gemm) and no NumPy overflow warning may reach the caller."""
    rng = np.random.default_rng(6)
    x = (np.abs(rng.standard_normal((2, 16, 16, 16))) * 300).astype(np.float16)
    w = rng.standard_normal((3, 3, 16, 8)).astype(np.float16)
    with np.errstate(over="ignore"):
        assert not np.isfinite(x.sum())        # the case is real: a float16 sum overflows

    def no_fallback(*args):
        raise AssertionError("Winograd fell back to gemm on finite input")
    monkeypatch.setattr(gm.Im2colGemm, "run", no_fallback)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = gpuconv.conv2d(x, w, 1, "SAME", backend="numpy", algorithm="winograd")
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "SAME")[0]
    tolerances.assert_result(y, x, w, p, algorithm="winograd")


def test_auto_rule():
    be = get_backend("numpy")

    def pick(x_shape, w_shape, strides=1, dilations=None):
        return be.choose(parse_problem(x_shape, np.float32, w_shape, np.float32, strides, "SAME",
                                       "NHWC", dilations)[0]).name
    assert pick((1, 8, 8, 64), (1, 1, 64, 64)) == "pointwise"
    assert pick((1, 8, 8, 32), (3, 3, 1, 32)) == "depthwise"
    assert pick((2, 32, 32, 64), (3, 3, 64, 64)) == "winograd"
    assert pick((2, 32, 32, 128), (3, 3, 4, 128)) == "winograd"   # ResNeXt groups, bundled
    assert pick((8, 7, 7, 512), (3, 3, 512, 512)) == "gemm"      # 7x7: tiles round up to 8x8
    assert pick((1, 14, 14, 256), (3, 3, 256, 256)) == "gemm"    # 49 tiles: too few
    assert pick((6, 14, 14, 256), (3, 3, 256, 256)) == "winograd"
    assert pick((1, 8, 8, 3), (3, 3, 3, 16)) == "gemm"            # C = 3: reduction too short
    assert pick((1, 8, 8, 64), (3, 3, 64, 64), strides=2) == "gemm"
    assert pick((1, 8, 8, 64), (3, 3, 64, 64), dilations=2) == "gemm"


# ---- workspace bound ------------------------------------------------------------------------------------

WS_CASES = [
    # (algorithm, input NHWC, filter HWIO, strides, (module, attribute) whose calls count the blocks)
    # each needs several times the bound without chunking (im2col alone: 1.1 MB in the first case)
    ("gemm", (2, 48, 40, 8), (3, 3, 8, 16), 1, (gm, "output_blocks")),
    ("gemm", (1, 60, 56, 3), (7, 7, 3, 16), 2, (gm, "output_blocks")),
    ("depthwise", (2, 48, 40, 16), (3, 3, 1, 16), 1, (dw, "output_blocks")),
    ("pointwise", (2, 48, 40, 32), (1, 1, 32, 16), 1, None),
    ("winograd", (2, 48, 40, 16), (3, 3, 16, 24), 1, (wg, "_chunks")),
    ("winograd", (2, 48, 40, 32), (3, 3, 4, 32), 1, (wg, "_chunks")),
]


@pytest.mark.parametrize("algo,xs,ws,st,counter", WS_CASES, ids=[f"{c[0]}-{c[2]}" for c in WS_CASES])
def test_workspace_bound(algo, xs, ws, st, counter, monkeypatch):
    """With a small workspace the result is still right, the work is split into many blocks, and the
    peak of NumPy's allocations (tracemalloc sees them) beyond the output stays near the bound."""
    budget = 64 << 10
    monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", budget)
    rng = np.random.default_rng(6)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    blocks = []
    if counter is not None:
        module, counter = counter
        real = getattr(module, counter)

        def counting(*args, **kwargs):
            for b in real(*args, **kwargs):
                blocks.append(b)
                yield b
        monkeypatch.setattr(module, counter, counting)
    gpuconv.conv2d(x, w, st, "SAME", backend="numpy", algorithm=algo)       # warm caches (transforms)
    blocks.clear()
    tracemalloc.start()
    try:
        y = gpuconv.conv2d(x, w, st, "SAME", backend="numpy", algorithm=algo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    p = parse_problem(xs, np.float32, ws, np.float32, st, "SAME")[0]
    tolerances.assert_result(y, x, w, p, algorithm=algo)
    if counter is not None:
        assert len(blocks) >= 4, f"{len(blocks)} blocks: the workspace bound did not split the work"
    # The output, the filters' re-arranged copy and NumPy's own iterator buffers (ufuncs on strided
    # views allocate up to ~85 KB, a fixed size however large the arrays) come on top of the bound.
    allowed = budget + y.nbytes + 2 * w.nbytes + (128 << 10)
    assert peak <= allowed, f"peak {peak} bytes > {allowed} (bound {budget} + output {y.nbytes} + filters)"


WS_PATHS = [
    # (id, algorithm, input NHWC, input dtype, filter HWIO, filter dtype): the paths whose temporaries
    # once went uncounted, each measured at a 1 MiB bound (NumPy's fixed ~100 KiB of buffers is small)
    ("pointwise-grouped", "pointwise", (4, 64, 64, 64), "<f4", (1, 1, 16, 64), "<f4"),
    ("half-filters", "gemm", (1, 8, 8, 512), "<f2", (3, 3, 512, 512), "<f2"),
    ("big-endian-input", "gemm", (4, 64, 64, 32), ">f4", (3, 3, 32, 16), ">f4"),
    ("winograd-filter-blocks", "winograd", (1, 14, 14, 512), "<f4", (3, 3, 512, 512), "<f4"),
    ("winograd-half", "winograd", (8, 28, 28, 128), "<f2", (3, 3, 128, 128), "<f2"),
]


@pytest.mark.parametrize("algo,xs,xdt,ws,wdt", [c[1:] for c in WS_PATHS], ids=[c[0] for c in WS_PATHS])
def test_workspace_bound_covers_every_temporary(algo, xs, xdt, ws, wdt, monkeypatch):
    """The bound covers everything beyond input, output and one copy of the filters in the accumulator
    type (half or non-native filters, grouped filters re-arranged); float32 filters of one group get no
    copy at all. Peak of NumPy's allocations, traced by tracemalloc."""
    budget = 1 << 20
    monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", budget)
    rng = np.random.default_rng(8)
    x = np.abs(rng.standard_normal(xs)).astype(xdt)
    w = rng.standard_normal(ws).astype(wdt)
    gpuconv.conv2d(x, w, 1, "SAME", backend="numpy", algorithm=algo)         # warm caches (transforms)
    tracemalloc.start()
    try:
        y = gpuconv.conv2d(x, w, 1, "SAME", backend="numpy", algorithm=algo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    ct = np.dtype(np.float64 if w.dtype.itemsize == 8 else np.float32)
    grouped = ws[2] != xs[3]
    filter_copy = w.size * ct.itemsize if (w.dtype != ct or grouped) else 0
    allowed = budget + y.nbytes + filter_copy + (128 << 10)
    assert peak <= allowed, (f"peak {peak} bytes > {allowed} (bound {budget} + output {y.nbytes} + "
                             f"filter copy {filter_copy} + NumPy's buffers)")


def test_winograd_splits_filter_transform_when_workspace_is_tiny(monkeypatch):
    """Transformed filters larger than half the workspace are processed in output-channel blocks."""
    monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", 16 << 10)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 6, 6, 32)).astype(np.float32)
    w = rng.standard_normal((3, 3, 32, 40)).astype(np.float32)        # U: 16*32*40*4 = 80 KiB
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "SAME")[0]
    blocks = list(wg.Winograd._filter_blocks(p, 1, 4 * 16, 8 << 10))
    assert len(blocks) > 1
    y = gpuconv.conv2d(x, w, 1, "SAME", backend="numpy", algorithm="winograd")
    tolerances.assert_result(y, x, w, p, algorithm="winograd")


# ---- the accuracy "auto" promises ------------------------------------------------------------------------

@pytest.mark.parametrize("relu", [False, True], ids=["signed", "post_relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_auto_within_bound_on_a_deep_layer(dtype, relu):
    """On a deep ResNet layer (R = 2304), and on post-ReLU inputs whose terms do not cancel, what auto
    picks stays within the bound tolerances.py derives for that algorithm (Winograd's amplification
    included). The bound depends on the inputs only: TF's error, which depends on the host's kernels,
    is reported by the benchmark instead."""
    dt = np.dtype(DTYPES[dtype])
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 14, 14, 256))   # 294 output tiles: enough for auto's Winograd
    x = (np.maximum(x, 0) if relu else x).astype(dt)
    w = (rng.standard_normal((3, 3, 256, 256)) / 48).astype(dt)
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "SAME")[0]
    algo = get_backend("numpy").choose(p).name
    assert algo == "winograd"        # the layer auto speeds up with Winograd: the case this guards
    y = gpuconv.conv2d(x, w, 1, "SAME", backend="numpy")
    tolerances.assert_result(y, x, w, p, algorithm=algo)


# ---- batch split over worker threads ---------------------------------------------------------------------

@pytest.mark.parametrize("algo,xs,ws", [
    ("depthwise", (5, 9, 10, 6), (3, 3, 1, 12)),      # uneven split, channel multiplier 2
    ("winograd", (3, 12, 10, 16), (3, 3, 4, 16)),     # groups: Winograd splits when G > 1
    ("gemm", (3, 11, 9, 3), (3, 3, 3, 8)),             # the seed case's shape of GEMM: K = 8, R = 27
])
def test_worker_split_matches_one_thread(algo, xs, ws, monkeypatch):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    be = NumpyBackend()
    p = parse_problem(xs, np.float32, ws, np.float32, 1, "SAME")[0]
    algorithm = be.algorithms()[algo]
    if threads.cpu_workers() < 2:
        monkeypatch.setattr(threads, "cpu_workers", lambda: 2)
    assert algorithm.workers(p) >= 2 or not threads.can_limit_blas()
    split = be.run(p, x, w, algo)
    monkeypatch.setattr(type(algorithm), "workers", lambda self, p: 1)
    whole = be.run(p, x, w, algo)
    tolerances.assert_result(split, x, w, p, algorithm=algo)
    if algo == "depthwise":   # the same arithmetic per image, whichever thread runs it
        np.testing.assert_array_equal(split, whole)


def test_worker_share_of_the_workspace(monkeypatch):
    seen = []
    real = dw.output_blocks

    def spy(p, per_pixel, budget):
        seen.append(budget)
        return real(p, per_pixel, budget)
    monkeypatch.setattr(dw, "output_blocks", spy)
    monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", 1 << 20)
    monkeypatch.setattr(threads, "cpu_workers", lambda: 2)
    x = np.ones((4, 8, 8, 4), np.float32)
    gpuconv.conv2d(x, np.ones((3, 3, 1, 4), np.float32), padding="SAME", backend="numpy", algorithm="depthwise")
    assert seen and all(b <= (1 << 20) // 2 for b in seen), seen
    assert gpuconv.config.numpy_workspace_bytes() == 1 << 20   # the share ends with the call


def test_gemm_wide_dilated_filter_keeps_the_workspace_bound(monkeypatch):
    """A 9x9 filter at dilation 6 over blocks of a few output rows: the input slab of a block would be
    many times the block's own size, so gemm must fall back to per-tap copies to stay in the bound."""
    budget = 96 << 10
    monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", budget)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 48, 48, 16)).astype(np.float32)
    w = rng.standard_normal((9, 9, 16, 4)).astype(np.float32)
    gpuconv.conv2d(x, w, 1, "SAME", dilations=6, backend="numpy", algorithm="gemm")
    tracemalloc.start()
    try:
        y = gpuconv.conv2d(x, w, 1, "SAME", dilations=6, backend="numpy", algorithm="gemm")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    p = parse_problem(x.shape, np.float32, w.shape, np.float32, 1, "SAME", "NHWC", 6)[0]
    tolerances.assert_result(y, x, w, p, algorithm="gemm")
    allowed = budget + y.nbytes + 2 * w.nbytes + (128 << 10)
    assert peak <= allowed, f"peak {peak} bytes > {allowed}"


def test_depthwise_wide_dilated_filter_keeps_the_workspace_bound(monkeypatch):
    """A 5x5 depthwise filter at dilation 7 over blocks of a few output pixels: a block's input slab
    would be far larger than the bound, so those blocks must take the per-tap multiply-adds, and both
    paths must agree with the reference (float16 in, float32 accumulation, channel multiplier 2)."""
    budget = 16 << 10
    monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", budget)
    monkeypatch.setattr(threads, "cpu_workers", lambda: 1)
    fallbacks = []
    real = dw.Depthwise._multiply_adds

    def spy(*args):
        fallbacks.append(args[3])
        return real(*args)
    monkeypatch.setattr(dw.Depthwise, "_multiply_adds", staticmethod(spy))
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 40, 36, 24)).astype(np.float16)
    w = rng.standard_normal((5, 5, 1, 48)).astype(np.float16)
    y = gpuconv.conv2d(x, w, 1, "SAME", dilations=7, backend="numpy", algorithm="depthwise")
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "SAME", "NHWC", 7)[0]
    tolerances.assert_result(y, x, w, p, algorithm="depthwise")
    assert fallbacks, "no block took the multiply-adds: the case does not exercise the fallback"


def test_concurrent_calls_leave_blas_threads_as_they_were():
    """The BLAS limit of the worker split is process-wide: calls from several threads at once must
    restore the original thread count when the last one ends."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from concurrent.futures import ThreadPoolExecutor
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 12, 12, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 8)).astype(np.float32)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: gpuconv.conv2d(x, w, padding="SAME", backend="numpy", algorithm="depthwise"),
                      range(16)))
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert after == before
