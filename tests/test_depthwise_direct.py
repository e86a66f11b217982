"""The paths inside depthwise.cu and direct.cu, each hit on purpose on the emulator: 16-byte channel
vectors and the scalar fallback, interior items and the frame around them, 3x3 register windows and
runtime-shaped taps, partial pixel groups, grid-stride loops, shuffled threads, the sanitizer; and
their SASS (no spills, the hot loop's loads and FMA share) where NVRTC and nvdisasm are installed."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import gpuconv
from gpuconv.backends import available_backends
from gpuconv.backends.cuda import algorithms, emulator, nvrtc, report, sass
from gpuconv.backends.cuda.sources import kernel_dir

from configs import np_dtype

EMULATOR_REASON = available_backends()["emulator"]
pytestmark = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")
DTYPES = ["float32", "float64", "float16", "bfloat16"]


def run(algorithm, xs, ws, dtype="float32", strides=1, padding="SAME", fmt="NHWC", dil=None, seed=0,
        backend=None, offset=0):
    """conv2d of small integers (exact in every dtype) on the emulator, checked against the reference;
    returns the launches. offset > 0 moves x that many elements past an aligned address."""
    be = backend or emulator.EmulatorBackend()
    launches = []
    original = be.launch
    dt = np_dtype(dtype)
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, xs).astype(dt)
    if offset:
        moved = np.empty(x.size + offset, dt)[offset:].reshape(xs)
        moved[...] = x
        x = moved
        assert x.ctypes.data % 16 != 0
    w = rng.integers(-2, 3, ws).astype(dt)
    p, _ = gpuconv.parse_problem(xs, dt, ws, dt, strides, padding, fmt, dil)
    # the algorithm's own launches (not the backend's non-finite zeroing and fix-up around them)
    be.launch = lambda launch: (launch.file.startswith("nonfinite") or launches.append(launch), original(launch))
    try:
        y = be.run(p, x, w, algorithm)
    finally:
        del be.launch  # the class's method again
    np.testing.assert_array_equal(np.asarray(y, np.float64), gpuconv.conv2d_reference(x, w, p).astype(np.float64))
    return launches


def vec_flag(launches) -> int:
    (launch,) = launches
    return int(launch.args[-1])


# ---------------------------------------------------------------- depthwise.cu

# xs, ws, strides, padding, layout, dilations, whether 16-byte vectors may apply (NHWC, KG = 1): they do
# where the channels are a multiple of 16 bytes' worth of the dtype
DEPTHWISE_CASES = {
    "3x3_s1_interior_and_frame": ((2, 13, 21, 16), (3, 3, 1, 16), 1, "SAME", "NHWC", None, True),
    "3x3_s2": ((2, 14, 19, 16), (3, 3, 1, 16), 2, "SAME", "NHWC", None, True),
    "3x3_s2x1_valid": ((1, 12, 23, 8), (3, 3, 1, 8), (2, 1), "VALID", "NHWC", None, True),
    "ow_not_a_multiple_of_px": ((1, 9, 11, 8), (3, 3, 1, 8), 1, "VALID", "NHWC", None, True),
    "channels_6_vectors_for_float64_only": ((2, 11, 17, 6), (3, 3, 1, 6), 1, "SAME", "NHWC", None, True),
    "channels_5_no_vectors": ((2, 11, 17, 5), (3, 3, 1, 5), 2, "SAME", "NHWC", None, True),
    "depth_multiplier_2": ((2, 11, 17, 4), (3, 3, 1, 8), 1, "SAME", "NHWC", None, False),
    "dilation_2": ((1, 15, 22, 8), (3, 3, 1, 8), 1, "SAME", "NHWC", 2, True),
    "5x3_runtime_taps": ((1, 16, 25, 8), (5, 3, 1, 8), (1, 2), "SAME", "NHWC", None, True),
    "explicit_asymmetric_pads": ((1, 13, 20, 8), (3, 3, 1, 8), 1, [[0, 0], [2, 0], [0, 3], [0, 0]], "NHWC", None, True),
    "nchw_3x3": ((2, 5, 13, 22), (3, 3, 1, 5), 1, "SAME", "NCHW", None, False),
    "nchw_stride2_multiplier": ((1, 3, 14, 17), (3, 3, 1, 6), 2, "SAME", "NCHW", None, False),
    "image_smaller_than_the_filter": ((1, 2, 3, 8), (3, 3, 1, 8), 1, "SAME", "NHWC", None, True),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DEPTHWISE_CASES.values(), ids=DEPTHWISE_CASES.keys())
def test_depthwise_paths_exact(case, dtype):
    xs, ws, strides, padding, fmt, dil, vector = case
    vector = vector and xs[-1] % (16 // np_dtype(dtype).itemsize) == 0
    launches = run("depthwise", xs, ws, dtype, strides, padding, fmt, dil)
    assert vec_flag(launches) == int(vector)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_depthwise_misaligned_input_takes_the_scalar_path(dtype):
    """x one element past a 16-byte boundary: 16-byte loads would fault on a GPU, so the host picks
    the scalar path, and the aligned copy of the same problem the vector one."""
    assert vec_flag(run("depthwise", (1, 9, 14, 16), (3, 3, 1, 16), dtype, offset=1)) == 0
    assert vec_flag(run("depthwise", (1, 9, 14, 16), (3, 3, 1, 16), dtype)) == 1


@pytest.mark.parametrize("fmt,xs", [("NHWC", (3, 13, 22, 8)), ("NCHW", (3, 4, 13, 22))])
def test_depthwise_grid_stride_loops_cover_everything(monkeypatch, fmt, xs):
    """A grid far smaller than the work: each thread walks many interior items (advanced by carries
    across pixel groups, rows and images) and many frame items."""
    original = algorithms.Depthwise.plan

    def tiny(self, p, lanes=1):
        grid, block, bits = original(self, p, lanes)
        return (1, 2, 1) if fmt == "NHWC" else (2, 1, 1), block, bits
    monkeypatch.setattr(algorithms.Depthwise, "plan", tiny)
    ws = (3, 3, 1, xs[-1] if fmt == "NHWC" else xs[1])
    for strides in (1, 2):
        launches = run("depthwise", xs, ws, strides=strides, fmt=fmt)
        assert launches[0].grid in ((1, 2, 1), (2, 1, 1))


@pytest.mark.parametrize("case", ["3x3_s1_interior_and_frame", "3x3_s2", "nchw_3x3", "5x3_runtime_taps"])
def test_depthwise_same_bits_in_any_thread_order(case):
    xs, ws, strides, padding, fmt, dil, _ = DEPTHWISE_CASES[case]
    results = []
    for seed in (None, 5, 6):
        be = emulator.EmulatorBackend(seed=seed)
        dt = np.dtype(np.float32)
        rng = np.random.default_rng(1)
        x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
        p, _ = gpuconv.parse_problem(xs, dt, ws, dt, strides, padding, fmt, dil)
        results.append(be.run(p, x, w, "depthwise"))
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


# ---------------------------------------------------------------- direct.cu

DIRECT_CASES = {
    "3x3_s1_row_window": ((2, 11, 21, 5), (3, 3, 5, 12), 1, "SAME", "NHWC", None),
    "3x3_s1_kg_not_a_multiple_of_4": ((1, 9, 18, 4), (3, 3, 2, 14), 1, "SAME", "NHWC", None),
    "ow_not_a_multiple_of_4": ((1, 10, 13, 3), (3, 3, 3, 8), 1, "VALID", "NHWC", None),
    "stride_2_runtime_taps": ((2, 13, 19, 3), (3, 3, 3, 16), 2, "SAME", "NHWC", None),
    "dilation_2": ((1, 12, 20, 4), (3, 3, 4, 8), 1, "SAME", "NHWC", 2),
    "7x7_stem": ((1, 18, 21, 3), (7, 7, 3, 16), 2, "SAME", "NHWC", None),
    "groups": ((1, 9, 17, 8), (3, 3, 2, 8), 1, "SAME", "NHWC", None),
    "nchw_3x3": ((2, 5, 9, 18), (3, 3, 5, 7), 1, "SAME", "NCHW", None),
    "more_channels_than_one_step": ((1, 6, 9, 20), (3, 3, 20, 4), 1, "SAME", "NHWC", None),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DIRECT_CASES.values(), ids=DIRECT_CASES.keys())
def test_direct_paths_exact(case, dtype):
    xs, ws, strides, padding, fmt, dil = case
    if dtype in ("float16", "bfloat16") and ws[0] * ws[1] * ws[2] > 64:
        xs, ws = xs[:-1] + (2,), ws[:2] + (2,) + ws[3:]  # sums of up to 2*2*R stay exact in 8 bits
    run("direct", xs, ws, dtype, strides, padding, fmt, dil)


def test_direct_filter_slice_is_16_byte_aligned_after_any_patch(monkeypatch):
    """The patch region (rows an odd PW|1 apart) is rounded up to 4 elements, so the filter slice's
    16-byte loads stay aligned whatever CC*PH*(PW|1) is (here 6*33 = 198); memcheck checks each
    load's alignment at its width."""
    monkeypatch.setenv("GPUCONV_EMULATOR_SANITIZE", "memcheck")
    direct = emulator.EmulatorBackend().algorithms()["direct"]
    p, _ = gpuconv.parse_problem((1, 5, 37, 1), np.float32, (3, 2, 1, 4), np.float32)
    ph, pw = direct.patch_size(p)
    assert (ph, pw | 1) == (6, 33) and 6 * 33 % 4 == 2
    assert direct.shared_bytes(p, 1) == (6 * 33 + 2 + 6 * direct.TILE_K) * 4
    run("direct", (1, 5, 37, 1), (3, 2, 1, 4))


@pytest.mark.parametrize("case", ["3x3_s1_row_window", "stride_2_runtime_taps"])
def test_direct_same_bits_in_any_thread_order(case):
    xs, ws, strides, padding, fmt, dil = DIRECT_CASES[case]
    for seed in (None, 7):
        run("direct", xs, ws, "float32", strides, padding, fmt, dil, backend=emulator.EmulatorBackend(seed=seed))


# ---------------------------------------------------------------- under the sanitizer

@pytest.mark.parametrize("algorithm,case", [
    ("depthwise", DEPTHWISE_CASES["3x3_s1_interior_and_frame"]),
    ("depthwise", DEPTHWISE_CASES["nchw_stride2_multiplier"]),
    ("direct", DIRECT_CASES["3x3_s1_row_window"] + (None,)),
    ("direct", DIRECT_CASES["stride_2_runtime_taps"] + (None,)),
])
def test_sanitizer_clean(monkeypatch, algorithm, case):
    """memcheck (bounds and alignment at each access's width: the 16-byte loads included), racecheck,
    initcheck and synccheck report nothing on the vector, scalar, interior and frame paths."""
    monkeypatch.setenv("GPUCONV_EMULATOR_SANITIZE", "all")
    xs, ws, strides, padding, fmt, dil, _ = case
    run(algorithm, xs, ws, "float32", strides, padding, fmt, dil)


# ---------------------------------------------------------------- the compiled code

needs_nvrtc = pytest.mark.skipif(nvrtc.available() is not None, reason=f"NVRTC not installed: {nvrtc.available()}")


@functools.lru_cache(maxsize=None)
def compiled(file: str, arch: str) -> report.KernelReport:
    return report.compile_one(kernel_dir() / f"{file}.cu", arch)  # 10-30 s each: once per session


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
@pytest.mark.parametrize("file", ["depthwise", "direct"])
def test_compiles_without_spills(file, arch):
    rep = compiled(file, arch)
    assert rep.error is None, rep.error
    entries = [f for f in rep.functions if f.entry]
    assert len(entries) == 8
    spilling = [(f.name, f.spill_stores, f.spill_loads) for f in entries if f.spill_stores or f.spill_loads]
    assert not spilling


@needs_nvrtc
@pytest.mark.skipif(sass.available() is not None, reason=f"nvdisasm not installed: {sass.available()}")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_hot_loops_use_wide_loads_and_mostly_fma(arch):
    """direct.cu's f32 hot loop: 128-bit filter loads and at least 60% FFMA (issue 10's target);
    depthwise.cu's: 128-bit global loads across channels."""
    rows = {}
    for file in ("direct", "depthwise"):
        rep = compiled(file, arch)
        rows.update({r.function: r.loop for r in sass.analyse(rep.file, arch, rep.cubin)})
    direct = rows["conv_direct_f32_i32"].mix
    assert direct.fma_share >= 0.6, direct
    assert any(sass.load_bits(op) == 128 for op in direct.shared_loads), direct.shared_loads
    depthwise = rows["conv_depthwise_f32_i32"].mix
    assert set(map(sass.load_bits, depthwise.global_loads)) == {128}, depthwise.global_loads


# ---------------------------------------------------------------- tile variants

@pytest.mark.parametrize("algorithm,xs,ws,keys", [
    ("direct", (1, 9, 21, 8), (3, 3, 2, 16), 3),    # G=4, KG=4: the default and two narrower channel tiles
    ("depthwise", (2, 11, 18, 8), (3, 3, 1, 8), 3),
])
def test_variants_run_the_problem_exactly(monkeypatch, algorithm, xs, ws, keys):
    """Each variant (the default first) can run the problem, launches with its own macros and blocks,
    and gives the exact result."""
    be = emulator.EmulatorBackend()
    algo = be.algorithms()[algorithm]
    p, _ = gpuconv.parse_problem(xs, np.float32, ws, np.float32)
    variants = algo.variants(p)
    assert variants[0] is algo and len(variants) == keys
    assert len({v.defines for v in variants}) == keys
    for v in variants:
        assert v.why_not(p) is None
        monkeypatch.setitem(be._algos, algorithm, v)
        launches = run(algorithm, xs, ws, backend=be)
        assert {launch.defines for launch in launches} == {v.defines}
