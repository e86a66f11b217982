"""The conv2d gradients' CUDA algorithms (forward-conv on the forward kernels, grad_input.cu,
gemm_splitk.cu + split_k_reduce.cu, grad_filter_depthwise.cu) on the emulator: each equal to the NumPy gradients and adjoint to the forward convolution in float64 on every curated
configuration and on generated ones, within rounding for every dtype, bit-identical across runs and
thread orders, and clean under the emulator's sanitizer. (The NVRTC compile and spill check of the new
kernel files is tests/test_nvrtc_report.py's, which enumerates every kernel file.)"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gpuconv
from gpuconv import conv2d_backprop_filter, conv2d_backprop_input, conv2d_grads
from gpuconv.backends import available_backends, get_backend
from gpuconv.backends.cuda.gradients import SplitKFilter
from gpuconv.dtypes import unit_roundoff
from gpuconv.problem import parse_problem

import configs
from configs import CURATED, CURATED_IDS, np_dtype

EMULATOR_REASON = available_backends()["emulator"]
pytestmark = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")


def operands(case, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape)
    w = rng.standard_normal(case.w_shape)
    dy = rng.standard_normal(gpuconv.conv2d(x, w, **case.kwargs(), backend="numpy").shape)
    return tuple(a.astype(dtype) for a in (x, w, dy))


def grads(x, w, dy, case, backend="emulator", algorithm="auto"):
    return conv2d_grads(x, w, dy, **case.kwargs(), backend=backend, algorithm=algorithm)


def input_algorithms(case, x, w) -> list[str]:
    """The emulator's input-gradient algorithms that can run the case (forward-conv: stride 1 only)."""
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, **case.kwargs())[0]
    algos = get_backend("emulator").gradient_algorithms("input")
    names = [n for n, a in algos.items() if a.why_not(p) is None]
    assert "gather" in names
    return names


def algorithm_pairs(case, x, w) -> list[tuple[str, str]]:
    """(input, filter) algorithm pairs covering every algorithm of both gradients that can run the case."""
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, **case.kwargs())[0]
    filters = [n for n, a in get_backend("emulator").gradient_algorithms("filter").items() if a.why_not(p) is None]
    inputs = input_algorithms(case, x, w)
    return [(inputs[i % len(inputs)], filters[i % len(filters)]) for i in range(max(len(inputs), len(filters)))]


@pytest.mark.parametrize("case", CURATED, ids=CURATED_IDS)
def test_kernels_match_numpy_and_are_the_adjoints(case):
    x, w, dy = operands(case)
    rx, rw = grads(x, w, dy, case, backend="numpy")
    y = gpuconv.conv2d(x, w, **case.kwargs(), backend="emulator")
    for pair in algorithm_pairs(case, x, w):
        dx, dw = grads(x, w, dy, case, algorithm=pair)
        assert dx.shape == x.shape and dw.shape == w.shape and dx.dtype == dw.dtype == np.float64
        np.testing.assert_allclose(dx, rx, rtol=1e-12, atol=1e-12 * np.abs(rx).max(), err_msg=str(pair))
        np.testing.assert_allclose(dw, rw, rtol=1e-12, atol=1e-12 * np.abs(rw).max())
        scale = np.abs(y).sum() * np.abs(dy).max() + np.abs(x).sum() * np.abs(dx).max()
        assert abs(np.vdot(y, dy) - np.vdot(x, dx)) <= 1e-12 * scale
        assert abs(np.vdot(y, dy) - np.vdot(w, dw)) <= 1e-12 * scale


def test_forward_conv_phases_partition_dx_and_auto_takes_them():
    """forward-conv on every curated case: its stride phases cover each dx pixel once, each phase's forward
    problem outputs exactly that phase's strided view, stride 1 without crops is one phase; auto takes it
    (but gather for strided depthwise layers)."""
    from gpuconv.backends import forward_conv_gradient as fcg
    algo = get_backend("emulator").gradient_algorithms("input")["forward-conv"]
    for case in CURATED:
        p = parse_problem(case.x_shape, np.float32, case.w_shape, np.float32, **case.kwargs())[0]
        strided_depthwise = p.CG == p.KG == 1 and not fcg.is_one_phase(p)
        assert algo.why_not(p) is None
        assert get_backend("emulator").choose_gradient("input", p).name == ("gather" if strided_depthwise
                                                                            else "forward-conv"), case.id
        hits = np.zeros(p.input_shape, int)
        phases = fcg.phases(p)
        for phase in phases:
            view = phase.target(p, hits)
            view += 1
            if phase.reached:
                q = phase.problem(p)
                assert q.output_shape == view.shape and (q.C, q.K, q.G) == (p.K, p.C, p.G), case.id
                assert get_backend("emulator").choose(q).why_not(q) is None
        assert (hits == 1).all(), case.id
        assert fcg.is_one_phase(p) == (len(phases) == 1 and phases[0].problem(p).input_shape == p.output_shape)
    p = parse_problem((1, 8, 8, 4), np.float32, (3, 3, 1, 4), np.float32, 2, "SAME")[0]
    assert get_backend("emulator").choose_gradient("input", p).name == "gather"


def test_filter_gradient_as_one_forward_convolution(monkeypatch):
    """forward-conv for dw: on every curated case its forward problem (G groups of N channels, CG images)
    outputs [CG, KH, KW, K] from at most the input's rows and columns, and auto takes it but for
    depthwise layers; a workspace too small for the transposed copies is refused with the reason (auto
    then takes splitk-gemm)."""
    from gpuconv.backends import forward_conv_gradient as fcg
    be = get_backend("emulator")
    algo = be.gradient_algorithms("filter")["forward-conv"]
    for case in CURATED:
        p = parse_problem(case.x_shape, np.float32, case.w_shape, np.float32, **case.kwargs())[0]
        q, (rows, cols) = fcg.filter_problem(p)
        assert q.output_shape == (p.CG, p.KH, p.KW, p.K) and (q.G, q.CG) == (p.G, p.N), case.id
        assert rows <= p.H and cols <= p.W, case.id
        assert algo.why_not(p) is None and be.choose(q).why_not(q) is None, case.id
        chosen = be.choose_gradient("filter", p).name
        assert chosen == ("depthwise" if p.CG == 1 else "forward-conv"), case.id
    p = parse_problem((2, 32, 32, 4), np.float32, (3, 3, 4, 4), np.float32, 1, "SAME")[0]
    monkeypatch.setattr(gpuconv.config.settings, "cuda_workspace_bytes", 40000)   # the copies: 65536 bytes
    assert "exceed the workspace bound of 40000 bytes" in algo.why_not(p)
    assert be.choose_gradient("filter", p).name == "splitk-gemm"


PRECISION_CASES = [c for c in CURATED if c.id in ("groups_4_stride2", "depthwise_m2_stride2", "nchw_same_stride2",
                                                  "deeper_c32_k16", "depthwise_m1")]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", PRECISION_CASES, ids=[c.id for c in PRECISION_CASES])
def test_lower_precision_is_accumulated_in_float32_and_rounded_once(case, dtype):
    """Within one rounding of the float64 gradients of the same (rounded) operands, plus float32's
    accumulation error: a second rounding of half-type partial sums would exceed it."""
    dt = np_dtype(dtype)
    x, w, dy = (a.astype(dt) for a in operands(case, seed=4))
    rx, rw = grads(*(a.astype(np.float64) for a in (x, w, dy)), case, backend="numpy")
    u = unit_roundoff(dt)
    for pair in algorithm_pairs(case, x, w):
        dx, dw = grads(x, w, dy, case, algorithm=pair)
        assert dx.dtype == dw.dtype == dt
        for got, ref in ((dx, rx), (dw, rw)):
            err = np.abs(got.astype(np.float64) - ref)
            assert (err <= u * np.abs(ref) + 1e-5 * np.abs(ref).max()).all(), (pair, err.max())


FD_CASES = [c for c in CURATED if c.id in ("same_odd_out_stride3", "dilation_stride_valid_mixed", "groups_2",
                                            "nchw_depthwise")]


@pytest.mark.parametrize("case", FD_CASES, ids=[c.id for c in FD_CASES])
def test_gradients_are_the_finite_differences_of_conv2d(case, backend):
    """d/dt <conv2d(x + t*u, w + t*v), dy> at t = 0, by central differences of the backend's own
    conv2d in float64, equals <dx, u> + <dw, v> for the backend's gradients (`backend`: every usable
    backend, from conftest.py)."""
    x, w, dy = operands(case, seed=6)
    rng = np.random.default_rng(8)
    u, v = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    xp = np
    if backend == "cupy":
        import cupy as xp
        x, w, dy, u, v = (xp.asarray(a) for a in (x, w, dy, u, v))
    loss = lambda t: float(xp.vdot(gpuconv.conv2d(x + t * u, w + t * v, **case.kwargs(), backend=backend), dy))
    h = 1e-3
    fd = (loss(h) - loss(-h)) / (2 * h)  # exact up to rounding: the loss is quadratic in t
    dx, dw = grads(x, w, dy, case, backend=backend)
    analytic = float(xp.vdot(dx, u) + xp.vdot(dw, v))
    assert abs(fd - analytic) <= 1e-8 * (abs(analytic) + float(xp.abs(dy).sum()))


@pytest.mark.parametrize("case_id,dtype", [("groups_2", "float32"), ("groups_2", "float16"),
                                           ("depthwise_m2_stride2", "float32")])
def test_bit_identical_across_runs_and_thread_orders(case_id, dtype, monkeypatch):
    """The split-K partials are added in slice order by one thread each: the same bits on repeated
    runs and whatever order the emulator runs the threads in (GPUCONV_EMULATOR_SHUFFLE)."""
    case = next(c for c in CURATED if c.id == case_id)
    x, w, dy = (a.astype(np_dtype(dtype)) for a in operands(case, seed=9))
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, **case.kwargs())[0]
    filter_algo = get_backend("emulator").gradient_algorithms("filter")["depthwise" if p.CG == 1 else "splitk-gemm"]
    splits = filter_algo.splits(p)
    assert splits > 1, "the case must split the reduction"
    runs = [grads(x, w, dy, case), grads(x, w, dy, case)]
    for seed in (3, 4):
        monkeypatch.setenv("GPUCONV_EMULATOR_SHUFFLE", str(seed))
        runs.append(grads(x, w, dy, case))
    for dx, dw in runs[1:]:
        assert dx.tobytes() == runs[0][0].tobytes() and dw.tobytes() == runs[0][1].tobytes()


@pytest.mark.parametrize("case_id,workspace,z", [("groups_4_stride2", 10368, "groups"),
                                                 ("valid_3x3_s1", 15000, "slices")])
def test_filter_gradient_within_a_small_workspace(case_id, workspace, z, monkeypatch):
    """Workspaces that force several im2col chunks (a short last slice, too, for the first), with the
    grid's z axis over groups and over slices: the result of the NumPy gradient, within the bound."""
    case = next(c for c in CURATED if c.id == case_id)
    x, w, dy = operands(case, seed=10)
    ref = grads(x, w, dy, case, backend="numpy")[1]
    monkeypatch.setattr(gpuconv.config.settings, "cuda_workspace_bytes", workspace)
    p = parse_problem(x.shape, x.dtype, w.shape, w.dtype, **case.kwargs())[0]
    algo = SplitKFilter(get_backend("emulator"))
    splits, length, per_chunk = algo.plan(p)
    assert 1 < per_chunk < splits and (per_chunk < p.G) == (z == "groups"), (splits, length, per_chunk)
    assert (p.M % length != 0) == (z == "groups")
    row_bytes, partial_bytes = algo._bytes(p, splits)
    assert per_chunk * row_bytes + partial_bytes <= workspace
    got = conv2d_backprop_filter(x, w.shape, dy, **case.kwargs(), backend="emulator")
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_filter_gradient_refuses_a_workspace_nothing_fits(monkeypatch):
    case = next(c for c in CURATED if c.id == "deeper_c32_k16")
    x, w, dy = operands(case)
    monkeypatch.setattr(gpuconv.config.settings, "cuda_workspace_bytes", 1024)
    with pytest.raises(ValueError, match=r"algorithm='splitk-gemm' cannot run this problem .*no split of the "
                                         r"N\*OH\*OW=36 pixels fits the workspace bound of 1024 bytes"):
        conv2d_backprop_filter(x, w.shape, dy, **case.kwargs(), backend="emulator", algorithm="splitk-gemm")


SANITIZE_CASES = [c for c in CURATED if c.id in ("nchw_groups", "depthwise_m2_stride2", "nchw_depthwise")]


@pytest.mark.parametrize("case", SANITIZE_CASES, ids=[c.id for c in SANITIZE_CASES])
def test_sanitizer_finds_nothing(case, monkeypatch):
    """memcheck, racecheck, initcheck and synccheck on every gradient launch (im2col, the split-K GEMM,
    the reduction, the gather): a report would raise."""
    x, w, dy = operands(case, np.float32, seed=11)
    for pair in algorithm_pairs(case, x, w):
        monkeypatch.delenv("GPUCONV_EMULATOR_SANITIZE", raising=False)
        ref = grads(x, w, dy, case, algorithm=pair)
        monkeypatch.setenv("GPUCONV_EMULATOR_SANITIZE", "all")
        got = grads(x, w, dy, case, algorithm=pair)
        for a, b in zip(got, ref):
            assert a.tobytes() == b.tobytes()


def test_index64_variants_give_the_same_bits(monkeypatch):
    case = next(c for c in CURATED if c.id == "nchw_groups")
    x, w, dy = operands(case, np.float32, seed=12)
    ref = grads(x, w, dy, case)
    monkeypatch.setattr(gpuconv.config.settings, "cuda_force_index64", True)
    for a, b in zip(grads(x, w, dy, case), ref):
        assert a.tobytes() == b.tobytes()


def test_backend_and_algorithm_arguments():
    case = CURATED[0]
    x, w, dy = operands(case, np.float32)
    with pytest.raises(ValueError, match=r"algorithm='gather' is not allowed for the filter gradient on backend "
                                         r"'emulator': expected 'auto' or one of \['depthwise', 'forward-conv', 'splitk-gemm'\]"):
        conv2d_backprop_filter(x, w.shape, dy, **case.kwargs(), backend="emulator", algorithm="gather")
    with pytest.raises(ValueError, match=r"algorithm='splitk-gemm' is not allowed for the input gradient on "
                                         r"backend 'numpy': expected 'auto' or one of \['col2im', 'forward-conv', 'gemm'\]"):
        conv2d_backprop_input(x.shape, w, dy, **case.kwargs(), backend="numpy", algorithm="splitk-gemm")
    with pytest.raises(ValueError, match=r"backend='tpu' is not allowed: expected 'auto' or one of"):
        conv2d_backprop_input(x.shape, w, dy, **case.kwargs(), backend="tpu")
    with pytest.raises(TypeError, match=r"algorithm=3 is not allowed: expected 'auto' or one of \['forward-conv', 'gather'\]"):
        conv2d_backprop_input(x.shape, w, dy, **case.kwargs(), backend="emulator", algorithm=3)
    with pytest.raises(ValueError, match=r"algorithm='gemm' is not allowed: expected 'auto' or a pair"):
        conv2d_grads(x, w, dy, **case.kwargs(), algorithm="gemm")
    dx, dw = conv2d_grads(x, w, dy, **case.kwargs(), backend="emulator", algorithm=("gather", "splitk-gemm"))
    assert isinstance(dx, np.ndarray) and dx.shape == x.shape and dw.shape == w.shape
    assert set(gpuconv.gradients.gradient_algorithms("emulator", "input")) == {"forward-conv", "gather"}
    with pytest.raises(ValueError, match=r"which='bias' is not allowed: expected 'input' or 'filter'"):
        gpuconv.gradients.gradient_algorithms("numpy", "bias")


def test_empty_problem_gives_zeros():
    x = np.zeros((0, 5, 5, 3), np.float32)
    w = np.ones((3, 3, 3, 4), np.float32)
    dy = np.zeros((0, 3, 3, 4), np.float32)
    dx, dw = conv2d_grads(x, w, dy, backend="emulator")
    assert dx.shape == x.shape and dw.shape == w.shape and not dw.any()
