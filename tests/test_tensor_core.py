"""The tensor-core algorithm (kernels/tensor_core_gemm.cu) on the emulator: every curated configuration
with its channels rounded up to multiples of 8, in float16, bfloat16 and float32 as TF32, against the
float64 reference; and when `auto` picks it, and why_not when it cannot run."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import gpuconv
from gpuconv.backends import available_backends, get_backend
from gpuconv.reference import conv2d_reference

from configs import CURATED, np_dtype, random_inputs
from tolerances import assert_result

EMULATOR_REASON = available_backends()["emulator"]
pytestmark = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")

# TensorFlow's own test tolerances for these types (relative to the result's scale): 1e-3 for float16
# and TF32, 1e-2 for bfloat16.
TF_TOLERANCE = {"float16": 1e-3, "bfloat16": 1e-2, "float32": 1e-3}


def up8(v: int) -> int:
    return -(-v // 8) * 8


def tensor_core_case(case):
    """The case with channels per group rounded up to multiples of 8 (what the algorithm needs)."""
    G = case.C // case.CG
    return dataclasses.replace(case, C=G * up8(case.CG), CG=up8(case.CG), K=G * up8(case.K // G))


def run(case, dtype, precision=None, algorithm="tensor_core"):
    x, w = random_inputs(case, dtype, seed=3)
    y = gpuconv.conv2d(x, w, **case.kwargs(), backend="emulator", algorithm=algorithm, precision=precision)
    p, _ = gpuconv.parse_problem(x.shape, x.dtype, w.shape, w.dtype, **case.kwargs())
    return x, w, y, p.with_(precision=precision or "highest")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", [tensor_core_case(c) for c in CURATED], ids=str)
def test_curated_configurations_within_the_rounding_bound(case, dtype):
    x, w, y, p = run(case, dtype, precision="tf32" if dtype == "float32" else None)
    ref = conv2d_reference(x.reshape(p.input_shape), w, p)
    assert_result(y, x, w, p, "tensor_core", ref=ref)
    scale = max(float(np.abs(ref).max()), np.finfo(np.float32).tiny)
    err = float(np.abs(y.astype(np.float64).reshape(ref.shape) - ref).max())
    assert err <= TF_TOLERANCE[dtype] * scale, f"error {err / scale:.3g} of the result's scale"


def test_tf32_rounds_the_inputs():
    """The TF32 result is not the float32 one: at R = 288 the inputs' rounding shows."""
    case = next(c for c in CURATED if c.id == "deeper_c32_k16")
    x, w, y, p = run(case, "float32", precision="tf32")
    exact = gpuconv.conv2d(x, w, **case.kwargs(), backend="numpy")
    assert np.abs(y - exact).max() > 1e-5


def backend_problem(shape_x, shape_w, dtype, precision="highest", **kw):
    p, _ = gpuconv.parse_problem(shape_x, np_dtype(dtype), shape_w, np_dtype(dtype), **kw)
    return p.with_(precision=precision)


@pytest.mark.parametrize("dtype, precision, picked", [
    ("float16", "highest", True), ("bfloat16", "highest", True), ("float32", "tf32", True),
    ("float32", "highest", False), ("float64", "highest", False),
])
def test_auto_picks_tensor_cores_for_half_types_and_tf32(dtype, precision, picked):
    be = get_backend("emulator")
    p = backend_problem((1, 8, 8, 16), (3, 3, 16, 32), dtype, precision, padding="SAME")
    assert (be.choose(p).name == "tensor_core") == picked


@pytest.mark.parametrize("dtype, precision, arch, match", [
    ("float32", "highest", (8, 0), "needs precision='tf32'"),
    ("float64", "highest", (8, 0), "not float64"),
    ("bfloat16", "highest", (7, 5), "bfloat16 tensor cores need sm_80 or newer; this device is sm_75"),
    ("float32", "tf32", (7, 5), "TF32 tensor cores need sm_80"),
])
def test_why_not_names_dtype_precision_and_arch(monkeypatch, dtype, precision, arch, match):
    be = get_backend("emulator")
    monkeypatch.setattr(type(be), "compute_capability", lambda self: arch)
    p = backend_problem((1, 8, 8, 16), (3, 3, 16, 32), dtype, precision)
    assert match in be.algorithms()["tensor_core"].why_not(p)


def test_fp16_runs_on_sm75(monkeypatch):
    be = get_backend("emulator")
    monkeypatch.setattr(type(be), "compute_capability", lambda self: (7, 5))
    assert be.algorithms()["tensor_core"].why_not(backend_problem((1, 8, 8, 16), (3, 3, 16, 32), "float16")) is None


def test_channels_that_are_not_multiples_of_8_are_refused_and_auto_falls_through():
    x = np.ones((1, 6, 6, 12), np.float16)
    w = np.ones((3, 3, 12, 8), np.float16)
    with pytest.raises(ValueError, match=r"algorithm='tensor_core' cannot run.*multiples of 8 \(got CG=12, KG=8\)"):
        gpuconv.conv2d(x, w, backend="emulator", algorithm="tensor_core")
    p = backend_problem(x.shape, w.shape, "float16")
    assert get_backend("emulator").choose(p).name != "tensor_core"
    np.testing.assert_array_equal(gpuconv.conv2d(x, w, backend="emulator"), np.full((1, 4, 4, 8), 108, np.float16))
