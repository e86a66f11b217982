"""The tensor-core algorithm (kernels/tensor_core_gemm.cu) on the emulator: every curated configuration
with its channels rounded up to multiples of 8, in float16, bfloat16 and float32 as TF32, against the
float64 reference; and when `auto` picks it, and why_not when it cannot run."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import gpuconv
from gpuconv.backends import available_backends, get_backend
from gpuconv.backends.cuda import emulator, nvrtc, report, sources
from gpuconv.backends.cuda.tensor_core import TensorCoreGemm
from gpuconv.reference import conv2d_reference

from configs import CURATED, np_dtype, random_inputs
from counted_runs import aligned_empty, counted
from launch_recorder import Recorder
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


def counted_float16_run(monkeypatch, y_offset: int):
    """A float16 NHWC layer (M = 192: a partial block tile) on the emulator under memcheck, x and y 256-byte
    aligned (y `y_offset` elements past it); checks the result, returns y's (requests, sectors, bytes)."""
    rng = np.random.default_rng(5)
    x = aligned_empty((2, 8, 12, 16), np.float16)
    x[...] = rng.integers(-2, 3, x.shape)
    w = rng.integers(-2, 3, (3, 3, 16, 32)).astype(np.float16)
    p = backend_problem(x.shape, w.shape, "float16", padding="SAME")
    y = aligned_empty(p.output_shape, np.float16, offset=y_offset)
    per_argument = counted(monkeypatch, lambda: get_backend("emulator").algorithms()["tensor_core"].run(p, x, w, y))
    np.testing.assert_array_equal(y, conv2d_reference(x, w, p))       # small integers: exact in float16
    return per_argument["y"]


def test_epilogue_stores_four_columns_at_once(monkeypatch):
    """NHWC y, KG % 4 == 0, aligned: each lane writes 4 columns of a fragment row per store, a warp's store
    8 rows x 32 bytes (whole sectors) where the element-wise stores took 4 requests for the same bytes;
    y one element off its alignment takes those element-wise stores (each row's 32 bytes across two
    sectors there)."""
    requests, sectors, nbytes = counted_float16_run(monkeypatch, 0)
    assert requests > 0 and nbytes == 32 * sectors == 2 * 2 * 8 * 12 * 32     # every output once, whole sectors
    scalar_requests, scalar_sectors, scalar_bytes = counted_float16_run(monkeypatch, 1)
    assert scalar_bytes == nbytes and scalar_requests == 4 * requests and 32 * scalar_sectors > 1.5 * nbytes


# The three modules of tensor_core_gemm.cu, as TC_VEC: NHWC groups of 32 channels (2 tap tiles, 16-byte
# loader chunks; M = 99 rows: a partial tile), 8 channels (the vector module: CG % BK != 0) and NCHW (the
# general one); each in every input type, exact on small integers (sums far below 2**8, exact in bfloat16).
MODULE_CASES = [
    (dict(x=(1, 9, 11, 64), w=(3, 3, 32, 16), strides=(1, 1), padding="SAME", data_format="NHWC"), 2),
    (dict(x=(2, 7, 5, 8), w=(3, 3, 8, 24), strides=(2, 1), padding="VALID", data_format="NHWC"), 1),
    (dict(x=(1, 16, 6, 7), w=(3, 3, 8, 16), strides=(1, 1), padding="SAME", data_format="NCHW"), 0),
]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case, module", MODULE_CASES, ids=["tap_tiles", "vector", "general"])
def test_each_module_is_exact_on_small_integers(monkeypatch, case, module, dtype):
    be = emulator.EmulatorBackend()
    rec = Recorder(monkeypatch, be)
    rng = np.random.default_rng(6)
    x = aligned_empty(case["x"], np_dtype(dtype))             # 256-byte aligned: the module follows shapes
    x[...] = rng.integers(-1, 2, x.shape)
    w = aligned_empty(case["w"], np_dtype(dtype))
    w[...] = rng.integers(-1, 2, w.shape)
    p = backend_problem(x.shape, w.shape, dtype, "tf32" if dtype == "float32" else "highest", strides=case["strides"],
                        padding=case["padding"], data_format=case["data_format"])
    y = np.empty(p.output_shape, np_dtype(dtype))
    be.algorithms()["tensor_core"].run(p, x, w, y)
    ref = conv2d_reference(x, w, p).astype(np.float64)
    np.testing.assert_array_equal(y.astype(np.float64), ref)
    (launch,) = rec.launches
    assert dict(launch.defines).get("TC_VEC", 2) == module
    if module == 2:   # sm_75's pipeline (a register double buffer: the loaders' fetch and stash), as exact
        rec.launches.clear()
        sm75_pipeline = TensorCoreGemm(be, stages=2)            # what the host sizes for sm_75
        sm75_pipeline.defines += (("TC_ASYNC", 0),)
        sm75_pipeline.run(p, x, w, y)
        np.testing.assert_array_equal(y.astype(np.float64), ref)
        assert ("TC_ASYNC", 0) in rec.launches[0].defines
    if module == 2:   # x 8 bytes off 16-byte alignment: the vector module for halves (4-element copies
        # still aligned), the general one for float32; as exact
        rec.launches.clear()
        x8 = aligned_empty(case["x"], np_dtype(dtype), offset=8 // x.itemsize)
        x8[...] = x
        be.algorithms()["tensor_core"].run(p, x8, w, y)
        np.testing.assert_array_equal(y.astype(np.float64), ref)
        assert dict(rec.launches[0].defines).get("TC_VEC", 2) == (1 if x.itemsize == 2 else 0)


@pytest.mark.skipif(nvrtc.available() is not None, reason=f"NVRTC not installed: {nvrtc.available()}")
@pytest.mark.parametrize("module", [2, 1, 0])
def test_every_module_compiles_without_spills(module):
    reports = report.compile_report([sources.kernel_path("tensor_core_gemm")], ("sm_75", "sm_80", "sm_90"),
                                    defines=[] if module == 2 else [f"TC_VEC={module}"])
    assert report.problems(reports) == []
    assert sum(f.entry for r in reports for f in r.functions) == 2 + 6 + 6   # fp16 on sm_75; all three on sm_80+
