"""The cupy backend's own code, driven through a stand-in for CuPy that runs kernels on the emulator
(tests/fake_cupy.py): NVRTC loading, module and kernel caches, devices, bfloat16, shared-memory opt-in."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import gpuconv
from gpuconv import api
from gpuconv.backends import available_backends
from gpuconv.backends.cuda import cupy_backend, emulator
from gpuconv.backends.cuda.launch import Launch
from gpuconv.backends.cuda.params import conv_problem_struct
from gpuconv.dtypes import bfloat16

from fake_cupy import DeviceArray, make_fake_cupy

EMULATOR_REASON = available_backends()["emulator"]
pytestmark = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")


def problem(xs, ws, dtype=np.float32, padding="SAME"):
    return gpuconv.parse_problem(xs, dtype, ws, dtype, 1, padding, "NHWC", None)[0]


@pytest.fixture
def fake(monkeypatch):
    """(stand-in CuPy, its call log, a CupyBackend using it); caches cleared around the test."""
    calls = []
    cp = make_fake_cupy(calls)
    monkeypatch.setattr(cupy_backend, "_import_cupy", lambda: cp)
    cupy_backend.clear_caches()
    yield cp, calls, cupy_backend.CupyBackend()
    cupy_backend.clear_caches()


def inputs(seed=4, xs=(2, 5, 6, 8), ws=(3, 3, 8, 16)):
    rng = np.random.default_rng(seed)
    return rng.integers(-3, 4, xs).astype(np.float32), rng.integers(-3, 4, ws).astype(np.float32)


def test_launch_path_compiles_once_and_looks_kernels_up_once(fake):
    cp, calls, be = fake
    assert be.unavailable_reason() is None
    x, w = inputs()
    p = problem(x.shape, w.shape)
    for algorithm in ("direct", "gemm", "gemm"):
        y = be.run(p, x, w, algorithm)
        assert isinstance(y, DeviceArray)
        np.testing.assert_array_equal(y.get(), gpuconv.conv2d_reference(x, w, p))
    modules = [c for c in calls if c[0] == "RawModule"]
    assert len(modules) == 5, ("one module per kernel file (direct, im2col, gemm, nonfinite_zero, "
                               "nonfinite_fixup), compiled once each")
    assert all("-std=c++17" in opts and any(o.startswith("-I") for o in opts) for _, opts, _ in modules)
    lookups = [c[1] for c in calls if c[0] == "get_function"]
    assert sorted(lookups) == sorted(set(lookups)) == ["conv_direct_f32_i32", "conv_gemm_f32_i32",
                                                       "conv_im2col_f32_i32", "nonfinite_fixup_f32_i32",
                                                       "nonfinite_zero_f32_i32"]
    assert sum(c[0] == "launch" for c in calls) == 5 + 3 * 2   # + zeroing and fix-up per run
    assert any(c[0] == "launch" and c[1] == "conv_direct_f32_i32" and c[3] == (128, 1, 1) for c in calls)


def test_numpy_bfloat16_goes_through_the_host_and_comes_back_as_numpy(fake):
    cp, calls, be = fake
    x, w = inputs()
    p = problem(x.shape, w.shape, bfloat16)
    y = be.run(p, x.astype(bfloat16), w.astype(bfloat16), "gemm")
    assert type(y) is np.ndarray and y.dtype == bfloat16
    np.testing.assert_array_equal(y.astype(np.float64),
                                  gpuconv.conv2d_reference(x, w, problem(x.shape, w.shape)).astype(bfloat16))
    assert any(c[0] == "launch" and c[1] == "conv_gemm_bf16_i32" for c in calls)


def test_cupy_bfloat16_stays_on_the_device(fake, monkeypatch):
    """CuPy 14's bfloat16 arrays are viewed as uint16 in place; the result is a device bfloat16 array."""
    cp, calls, be = fake
    x, w = inputs()
    p = problem(x.shape, w.shape, bfloat16)
    xd, wd = cp.asarray(x.astype(bfloat16)), cp.asarray(w.astype(bfloat16))
    monkeypatch.setattr(DeviceArray, "get", lambda self: pytest.fail("bfloat16 data went through the host"))
    y = be.run(p, xd, wd, "direct")
    assert isinstance(y, DeviceArray) and y.dtype == bfloat16
    expected = gpuconv.conv2d_reference(x, w, problem(x.shape, w.shape)).astype(bfloat16)
    np.testing.assert_array_equal(np.asarray(y).astype(np.float64), expected.astype(np.float64))


@pytest.fixture
def api_on_fake(fake, monkeypatch):
    """gpuconv.conv2d(backend="cupy") using the stand-in."""
    cp, calls, be = fake
    monkeypatch.setattr(api, "unusable_reason", lambda name: None)
    monkeypatch.setattr(api, "get_backend", lambda name: be)
    return fake


def test_runs_on_the_inputs_device_not_the_current_one(api_on_fake):
    cp, calls, be = api_on_fake
    x, w = inputs()
    xd, wd = cp.on(1, x), cp.on(1, w)
    assert cp.state.current == 0
    y = gpuconv.conv2d(xd, wd, padding="SAME", backend="cupy", algorithm="gemm")
    np.testing.assert_array_equal(y.get(), gpuconv.conv2d_reference(x, w, problem(x.shape, w.shape)))
    assert y.device.id == 1
    assert {c[5] for c in calls if c[0] == "launch"} == {1}
    assert {c[2] for c in calls if c[0] == "RawModule"} == {1}
    assert not [c for c in calls if c[0] == "copy"], "no array was copied between devices"
    # a NumPy input goes to the filters' device
    gpuconv.conv2d(x, wd, padding="SAME", backend="cupy", algorithm="direct")
    assert {c[5] for c in calls if c[0] == "launch"} == {1}


def test_inputs_on_two_devices_are_refused(api_on_fake):
    cp, calls, be = api_on_fake
    x, w = inputs()
    with pytest.raises(ValueError, match=r"different devices are not allowed: input on GPU 0, filters on GPU 1"):
        gpuconv.conv2d(cp.on(0, x), cp.on(1, w), backend="cupy")
    assert not [c for c in calls if c[0] in ("copy", "launch")]


def direct_launch(p, shared_mem):
    x, w = inputs(xs=p.input_shape, ws=p.filter_shape)
    out = np.zeros(p.output_shape, np.float32)
    direct = emulator.EmulatorBackend().algorithms()["direct"]
    return Launch("direct", "conv_direct_f32_i32", direct.grid(p), (direct.threads, 1, 1), shared_mem,
                  (conv_problem_struct(p), x, w, out, np.int32(4))), out


def test_more_than_48k_dynamic_shared_memory_is_opted_in(fake):
    cp, calls, be = fake
    p = problem((1, 8, 8, 4), (3, 3, 4, 16))
    launch, out = direct_launch(p, 64 * 1024)
    with pytest.raises(ValueError, match="exceed the 49152 bytes a block may use on this device"):
        emulator.EmulatorBackend().launch(launch)
    launch = Launch(launch.file, launch.kernel, launch.grid, launch.block, launch.shared_mem,
                    tuple(cp.asarray(a) if isinstance(a, np.ndarray) else a for a in launch.args))
    be.launch(launch)  # the stand-in refuses it, as the driver would, unless the attribute was set
    np.testing.assert_array_equal(launch.args[3].get(), gpuconv.conv2d_reference(*inputs(xs=p.input_shape,
                                                                                         ws=p.filter_shape), p))
    too_big = Launch(launch.file, launch.kernel, launch.grid, launch.block, 228 * 1024, launch.args)
    with pytest.raises(ValueError, match=r"0 bytes of static \+ 233472 of dynamic shared memory exceed the "
                                         r"232448 bytes a block may use on this device"):
        be.launch(too_big)


def test_unavailable_when_nvrtc_does_not_load(monkeypatch):
    cp = make_fake_cupy([], nvrtc_error=RuntimeError("libnvrtc.so.12: cannot open shared object file"))
    monkeypatch.setattr(cupy_backend, "_import_cupy", lambda: cp)
    monkeypatch.setattr(cupy_backend, "_preload_nvrtc", lambda: "cuda-pathfinder did not find NVRTC (nope)")
    why = cupy_backend.CupyBackend().unavailable_reason()
    assert "NVRTC (libnvrtc) could not be loaded" in why and 'pip install "gpuconv[cuda12]"' in why
    assert "libnvrtc.so.12: cannot open" in why and "cuda-pathfinder did not find NVRTC" in why


def test_nvrtc_is_loaded_through_pathfinder_before_cupy(monkeypatch):
    """CuPy 13 dlopens libnvrtc.so.12 by name, which pip's wheel does not satisfy unless it is loaded."""
    order = []
    pathfinder = types.ModuleType("cuda.pathfinder")
    pathfinder.load_nvidia_dynamic_lib = lambda name: order.append(("load", name))
    monkeypatch.setitem(sys.modules, "cuda.pathfinder", pathfinder)
    monkeypatch.setattr(cupy_backend, "_import_cupy", lambda: order.append("import cupy"))
    cupy_backend.clear_caches()
    try:
        cupy_backend._cupy()
        cupy_backend._cupy()
    finally:
        cupy_backend.clear_caches()
    assert order == [("load", "nvrtc"), "import cupy", "import cupy"]


def test_gradients_run_on_the_inputs_device_and_stay_there(fake, monkeypatch):
    """conv2d_grads on CuPy arrays ("auto" picks cupy): the gradient kernels launch on the arrays' GPU,
    the results are device arrays there, equal to the NumPy backend's (small integers: exact in float32)."""
    from gpuconv import gradients
    cp, calls, be = fake
    monkeypatch.setattr(gradients, "unusable_reason", lambda name: None)
    real = gradients.get_backend
    monkeypatch.setattr(gradients, "get_backend", lambda name: be if name == "cupy" else real(name))
    x, w = inputs()
    dy = np.random.default_rng(5).integers(-3, 4, (2, 3, 3, 16)).astype(np.float32)
    xd, wd, dyd = (cp.on(1, a) for a in (x, w, dy))
    dx, dw = gpuconv.conv2d_grads(xd, wd, dyd, strides=2, padding="SAME")
    assert isinstance(dx, DeviceArray) and isinstance(dw, DeviceArray) and dx.device.id == dw.device.id == 1
    rx, rw = gpuconv.conv2d_grads(x, w, dy, strides=2, padding="SAME", backend="numpy")
    np.testing.assert_array_equal(dx.get(), rx)
    np.testing.assert_array_equal(dw.get(), rw)
    launched = {c[1] for c in calls if c[0] == "launch"}
    # both gradients as forward convolutions (forward-conv) on the forward kernels
    assert "nonfinite_fixup_f32_i32" in launched
    assert not launched & {"conv_grad_input_f32_i32", "conv_im2col_f32_i32", "conv_gemm_splitk_f32_i32"}
    assert {c[5] for c in calls if c[0] == "launch"} == {1}
    assert not [c for c in calls if c[0] == "copy"], "no array was copied between devices"
    # NumPy bfloat16 in: through the device and back as NumPy bfloat16
    dwb = gpuconv.conv2d_backprop_filter(x.astype(bfloat16), w.shape, dy.astype(bfloat16), 2, "SAME", backend="cupy")
    assert type(dwb) is np.ndarray and dwb.dtype == bfloat16
    np.testing.assert_array_equal(dwb.astype(np.float64), rw.astype(bfloat16).astype(np.float64))


@pytest.mark.parametrize("nonfinite", [False, True])
def test_stride_1_input_gradient_runs_the_forward_kernels_on_the_device(fake, monkeypatch, nonfinite):
    """forward-conv on CuPy arrays: the flipped filters are made on the device and the forward pass's
    kernels (with its on-device non-finite handling) compute dx there: no gather kernel, nothing read
    back or waited for, the NumPy backend's result."""
    from gpuconv import gradients
    cp, calls, be = fake
    monkeypatch.setattr(gradients, "unusable_reason", lambda name: None)
    real = gradients.get_backend
    monkeypatch.setattr(gradients, "get_backend", lambda name: be if name == "cupy" else real(name))
    x, w = inputs()
    if nonfinite:
        w[0, 0, 1, 2], w[2, 1, 0, 5] = np.inf, np.nan
    dy = np.random.default_rng(6).integers(-3, 4, (2, 5, 6, 16)).astype(np.float32)
    wd, dyd = cp.asarray(w), cp.asarray(dy)
    del calls[:]
    dx = gpuconv.conv2d_backprop_input(x.shape, wd, dyd, 1, "SAME")
    assert isinstance(dx, DeviceArray)
    assert [c for c in calls if c[0] in ("d2h", "sync")] == []
    launched = [c[1] for c in calls if c[0] == "launch"]
    assert "conv_grad_input_f32_i32" not in launched and "nonfinite_fixup_f32_i32" in launched
    np.testing.assert_array_equal(dx.get(), gpuconv.conv2d_backprop_input(x.shape, w, dy, 1, "SAME", backend="numpy"))


@pytest.mark.parametrize("nonfinite", [False, True])
def test_a_conv2d_call_reads_nothing_back_and_waits_for_nothing(api_on_fake, nonfinite):
    """Issue 10 item 6: a call on device arrays only enqueues work; non-finite filters are handled on
    the device too (a flag the fix-up kernel reads there), with the host backend's results."""
    cp, calls, be = api_on_fake
    x, w = inputs()
    if nonfinite:
        w[1, 1, 2, 3], w[0, 2, 5, 0] = np.inf, np.nan
        x[0, 1, 1, 2] = -np.inf          # meets the Inf tap: an output recomputed from the definition
    xd, wd = cp.asarray(x), cp.asarray(w)
    del calls[:]
    y = gpuconv.conv2d(xd, wd, padding="SAME", backend="cupy", algorithm="gemm")
    assert [c for c in calls if c[0] in ("d2h", "sync")] == []
    launched = [c[1] for c in calls if c[0] == "launch"]
    assert launched[0] == "nonfinite_zero_f32_i32" and launched[-1] == "nonfinite_fixup_f32_i32"
    np.testing.assert_array_equal(y.get(), gpuconv.conv2d(x, w, padding="SAME", backend="numpy",
                                                          algorithm="gemm"))


@pytest.mark.parametrize("cc, dtype, precision, kernel", [
    ("90", np.float16, "highest", "conv_tc_f16_i32"),
    ("90", np.float32, "tf32", "conv_tc_f32_i32"),
    ("90", np.float32, "highest", None),
    ("75", np.float16, "highest", "conv_tc_f16_i32"),
    ("75", bfloat16, "highest", None),        # bf16 tensor cores need sm_80
])
def test_auto_takes_tensor_cores_by_the_devices_compute_capability(fake, cc, dtype, precision, kernel):
    cp, calls, be = fake
    cp.state.compute_capability = cc
    x, w = inputs()
    p = problem(x.shape, w.shape, dtype).with_(precision=precision)
    y = be.run(p, x.astype(dtype), w.astype(dtype), "auto")
    launched = [c[1] for c in calls if c[0] == "launch"]
    assert (kernel in launched) if kernel else not any(k.startswith("conv_tc") for k in launched)
    np.testing.assert_array_equal(np.asarray(y.get() if hasattr(y, "get") else y, np.float64),
                                  gpuconv.conv2d_reference(x, w, p))  # small integers: exact in every path
