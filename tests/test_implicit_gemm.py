"""The implicit-GEMM algorithm (kernels/implicit_gemm.cu, igemm_tiles.cuh, splitk_reduce.cu): every tile
configuration and split-K factor on every dtype and index width on the emulator, exact on small integers;
its variants, rule, shared-memory sizing and launches; the pipeline under the sanitizer and in shuffled
thread order; NVRTC compiles of every configuration without spills."""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import config
from gpuconv.backends import available_backends
from gpuconv.backends.cuda import emulator, nvrtc, report, sources
from gpuconv.backends.cuda.algorithms import IGEMM_TILES, ImplicitGemm
from gpuconv.backends.cuda.launch import DeviceLimits
from gpuconv.dtypes import bfloat16

from counted_runs import aligned_empty, counted
from launch_recorder import Recorder

EMULATOR_REASON = available_backends()["emulator"]
needs_emulator = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")
DTYPES = [np.float32, np.float64, np.float16, bfloat16]


def problem(xs, ws, strides=1, padding="SAME", fmt="NHWC", dil=None, dtype=np.float32):
    return gpuconv.parse_problem(xs, dtype, ws, dtype, strides, padding, fmt, dil)[0]


# Three problems per configuration: NHWC with CG and KG multiples of 4 (the vector-only module where
# CG % BK != 0), NCHW with odd channel counts, groups, stride, dilation and asymmetric padding (the
# general module), and NHWC groups of 16 channels (the tap-tile module: 2 groups, stride, dilation,
# M = 110 rows so that 128-row tiles have rows past M in their second pass, 64-row tiles two blocks).
# R = 72, 45 and 144 reduction elements: several BK tiles, a partial last one, and room for split-K.
CASES = [
    dict(xs=(2, 7, 9, 8), ws=(3, 3, 8, 12), strides=1, padding="SAME", fmt="NHWC", dil=None),
    dict(xs=(1, 10, 6, 11), ws=(3, 3, 5, 6), strides=(1, 2), padding=[[0, 0], [0, 0], [2, 1], [0, 3]],
         fmt="NCHW", dil=(2, 1)),
    dict(xs=(2, 9, 11, 32), ws=(3, 3, 16, 16), strides=(2, 1), padding="SAME", fmt="NHWC", dil=(1, 2)),
]
CASE_IDS = ["nhwc_vector", "nchw_general", "nhwc_tap_tiles"]


def expected_module(case, bk: int) -> int:
    """IGEMM_VEC of the module a float case takes: 2 tap tiles, 1 vector, 0 general."""
    return 0 if case["fmt"] != "NHWC" else 2 if case["ws"][2] % bk == 0 else 1


def run_exact(be, algo, case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, case["xs"]).astype(dtype)   # |sums| <= R < 256: exact in every dtype
    w = rng.integers(-1, 2, case["ws"]).astype(dtype)
    p = problem(case["xs"], case["ws"], case["strides"], case["padding"], case["fmt"], case["dil"], dtype)
    y = be.xp.empty(p.output_shape, dtype)
    algo.run(p, x, w, y)
    np.testing.assert_array_equal(y.astype(np.float64), gpuconv.conv2d_reference(x, w, p).astype(np.float64))
    return p


@needs_emulator
@pytest.mark.parametrize("tiles", list(IGEMM_TILES))
@pytest.mark.parametrize("split", [1, 3])
def test_every_configuration_and_split_is_exact_on_every_dtype(monkeypatch, tiles, split):
    be = emulator.EmulatorBackend()
    rec = Recorder(monkeypatch, be)
    base = be.algorithms()["implicit_gemm"]
    for dtype in DTYPES:
        for case in CASES:
            p = problem(case["xs"], case["ws"], case["strides"], case["padding"], case["fmt"], case["dil"], dtype)
            algo = base.configured(tiles, split, p)
            why = algo.why_not(p)
            if why is not None:  # BK=16 in doubles: 2 stages need 56-72 KiB, over the emulator's 48
                assert "shared memory" in why and np.dtype(dtype) == np.float64 and tiles in ("128x128", "128x64")
                continue
            rec.launches.clear()
            run_exact(be, algo, case, dtype)
            files = [launch.file for launch in rec.launches]
            assert files == (["implicit_gemm", "splitk_reduce"] if split > 1 else ["implicit_gemm"])
            mode = dict(rec.launches[0].defines).get("IGEMM_VEC", 2)
            if np.dtype(dtype).itemsize <= 4:  # malloc's 16-byte alignment holds 4 elements (doubles need 32)
                assert mode == expected_module(case, IGEMM_TILES[tiles]["BK"])


@needs_emulator
@pytest.mark.parametrize("force64", [False, True])
def test_index_width_of_both_kernels(monkeypatch, force64):
    be = emulator.EmulatorBackend()
    rec = Recorder(monkeypatch, be)
    monkeypatch.setattr(config.settings, "cuda_force_index64", force64)
    base = be.algorithms()["implicit_gemm"]
    for dtype in DTYPES:
        for case in (CASES[0], CASES[2]):  # the vector and the tap-tile modules
            p = problem(case["xs"], case["ws"], case["strides"], case["padding"], case["fmt"], case["dil"], dtype)
            run_exact(be, base.configured("64x64", 2, p), case, dtype)
    assert {launch.kernel.rsplit("_", 1)[1] for launch in rec.launches} == {"i64" if force64 else "i32"}
    assert {launch.file for launch in rec.launches} == {"implicit_gemm", "splitk_reduce"}


@needs_emulator
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_pipeline_is_race_free_in_any_thread_order(case):
    """Four stages in flight and split-K partials: every thread order between barriers gives the same bits."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(case["xs"]).astype(np.float32)
    w = rng.standard_normal(case["ws"]).astype(np.float32)
    p = problem(case["xs"], case["ws"], case["strides"], case["padding"], case["fmt"], case["dil"])
    runs = []
    for seed in (None, 5, 6):
        be = emulator.EmulatorBackend(seed=seed)
        algo = be.algorithms()["implicit_gemm"].configured("128x32", 2, p)
        assert algo.tile("STAGES") == 4
        y = be.xp.empty(p.output_shape, np.float32)
        algo.run(p, x, w, y)
        runs.append(np.asarray(y))
    for r in runs[1:]:
        np.testing.assert_array_equal(runs[0], r)
    assert np.abs(runs[0] - gpuconv.conv2d_reference(x, w, p)).max() < 1e-4


@needs_emulator
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_sanitizer_finds_nothing(monkeypatch, dtype):
    """memcheck, racecheck, initcheck and synccheck over the cp.async pipeline (float) and the register
    double buffer (half), with split-K and both modules."""
    monkeypatch.setenv("GPUCONV_EMULATOR_SANITIZE", "all")
    be = emulator.EmulatorBackend()
    for case in CASES:
        p = problem(case["xs"], case["ws"], case["strides"], case["padding"], case["fmt"], case["dil"], dtype)
        run_exact(be, be.algorithms()["implicit_gemm"].configured("64x64", 2, p), case, dtype)


# ---------------------------------------------------------------- variants, rule and launch geometry

class FakeBackend:
    """What ImplicitGemm asks of a backend, with a device's shared-memory limit."""

    def __init__(self, shared=48 * 1024):
        self.shared = shared

    def shared_limit(self):
        return self.shared


def test_variants_put_the_rule_first_and_all_can_run():
    algo = ImplicitGemm(FakeBackend())
    p = problem((8, 56, 56, 128), (3, 3, 128, 128))           # M = 25088: 196 blocks of 128x128
    vs = algo.variants(p)
    assert (vs[0].tiles, vs[0].split) == algo.rule(p) == ("128x128", 1)
    assert all(v.why_not(p) is None for v in vs)
    keys = [v.variant_key for v in vs]
    assert len(set(keys)) == len(keys)
    assert keys[0] == "BM=128,BN=128,BK=16,WM=32,WN=64,TM=8,TN=8,STAGES=2,SPLIT_K=1"
    # a key looked up again names the same configuration
    assert [v.variant_key for v in algo.variants(p)] == keys


def test_rule_tiles_and_split_follow_the_shape():
    algo = ImplicitGemm(FakeBackend())
    assert algo.rule(problem((8, 56, 56, 128), (3, 3, 128, 128))) == ("128x128", 1)
    assert algo.rule(problem((8, 56, 56, 64), (3, 3, 64, 64))) == ("128x64", 1)      # resnet 3x3 @56
    assert algo.rule(problem((8, 28, 28, 128), (3, 3, 128, 128))) == ("64x64", 1)    # 49 blocks of 128x128
    assert algo.rule(problem((8, 56, 56, 16), (3, 3, 16, 32))) == ("128x32", 1)      # few output channels
    # 4 blocks of 64x64, 36 reduction tiles: 4 slices of 9 tiles (8 would leave fewer than 8 each)
    assert algo.rule(problem((1, 14, 14, 64), (3, 3, 64, 64))) == ("64x64", 4)
    # resnet stage 4, batch 1: 8 blocks of 64x64, R = 4608 in 288 tiles: 16 slices of 18
    assert algo.rule(problem((1, 7, 7, 512), (3, 3, 512, 512))) == ("64x64", 16)


def test_stages_fit_the_device_and_large_ones_need_the_opt_in():
    p = problem((8, 28, 28, 128), (3, 3, 128, 128))
    portable = ImplicitGemm(FakeBackend()).configured("128x128", 1, p)
    h100 = ImplicitGemm(FakeBackend(227 * 1024)).configured("128x128", 1, p)
    assert (portable.tile("STAGES"), portable.shared_bytes(p)) == (2, 2 * (128 * 20 + 16 * 128) * 4)
    assert (h100.tile("STAGES"), h100.shared_bytes(p)) == (4, 73728)
    half = ImplicitGemm(FakeBackend(227 * 1024)).configured("128x128", 1, problem(p.input_shape, p.filter_shape,
                                                                                    dtype=np.float16))
    assert half.tile("STAGES") == 2   # the register double buffer uses two stages


@needs_emulator
def test_launch_geometry_and_opt_in(monkeypatch):
    be = emulator.EmulatorBackend()
    launches = []
    monkeypatch.setattr(be, "shared_limit", lambda: 227 * 1024)
    monkeypatch.setattr(be, "launch", launches.append)
    p = problem(CASES[0]["xs"], CASES[0]["ws"])
    algo = be.algorithms()["implicit_gemm"].configured("128x128", 1, p)
    algo.run(p, np.zeros(p.input_shape, np.float32), np.zeros(p.filter_shape, np.float32),
             np.zeros(p.output_shape, np.float32))
    (launch,) = launches
    assert launch.block == (256, 1, 1) and launch.grid == (1, 1, 1) and launch.shared_mem == 73728
    assert launch.needs_opt_in()
    h100 = DeviceLimits(shared_optin=227 * 1024)
    with pytest.raises(ValueError, match="needs the kernel's max_dynamic_shared_size_bytes opt-in"):
        launch.check(limits=h100)
    launch.check(limits=h100, opt_in=True)


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="tiles='256x256' is not allowed"):
        ImplicitGemm(FakeBackend(), "256x256")
    with pytest.raises(ValueError, match="split=0 is not allowed"):
        ImplicitGemm(FakeBackend(), "64x64", 0)
    with pytest.raises(ValueError, match="stages=5 is not allowed"):
        ImplicitGemm(FakeBackend(), "64x64", 1, 5)


def test_split_k_workspace_is_bounded(monkeypatch):
    monkeypatch.setattr(config.settings, "cuda_workspace_bytes", 1000)
    p = problem((1, 7, 7, 512), (3, 3, 512, 512))
    algo = ImplicitGemm(FakeBackend())
    assert "workspace bound of 1000 bytes" in algo.configured("64x64", 16, p).why_not(p)
    first = algo.variants(p)[0]
    assert (first.tiles, first.split) == ("64x64", 1)   # the rule's split no longer fits: its tiles unsplit


def test_padding_far_outside_the_input_counts_towards_the_index_width():
    """A row's base offset is formed for its top-left tap, which large explicit padding puts far outside
    the input: it must fit the index type even though every array does."""
    # stride 16 over 16 rows of top padding: output row 0 starts 16 rows (2^32 elements) above the input
    p = problem((1, 2, 2 ** 14, 2 ** 14), (1, 1, 2 ** 14, 1), strides=(16, 1), padding=[[0, 0], [16, 0], [0, 0], [0, 0]])
    assert (p.OH, p.PT) == (2, 16)
    algo = ImplicitGemm(FakeBackend()).configured("64x64", 1, p)
    assert max(gpuconv.backends.cuda.algorithms.problem_sizes(p)) < 2 ** 31
    assert max(algo.index_spans(p)) >= 2 ** 31
    assert algo.bits(*algo.index_spans(p)) == 64


# ---------------------------------------------------------------- NVRTC: every configuration, no spills

def _nvrtc_reason():
    try:
        nvrtc.supported_archs()
    except Exception as e:  # NVRTC or its headers missing
        return str(e)
    return None


NVRTC_REASON = _nvrtc_reason()


@pytest.mark.skipif(NVRTC_REASON is not None, reason=f"NVRTC not usable: {NVRTC_REASON}")
@pytest.mark.parametrize("tiles,vec", [(t, 2) for t in IGEMM_TILES] + [("128x128", 1), ("128x128", 0)])
def test_every_configuration_compiles_without_spills(tiles, vec):
    """Each tile configuration at its most stages (what a device with the opt-in gets) as the tap-tile
    module, and the default configuration as the vector-only and the general module too."""
    algo = ImplicitGemm(FakeBackend(227 * 1024), tiles)
    defines = [f"{k}={v}" for k, v in algo.defines] + ([] if vec == 2 else [f"IGEMM_VEC={vec}"])
    reports = report.compile_report([sources.kernel_path("implicit_gemm")], ("sm_75", "sm_80", "sm_90"),
                                    defines=defines)
    assert report.problems(reports) == []
    for r in reports:
        assert {f.threads for f in r.functions if f.entry} == {algo.threads}


def run_counted(monkeypatch, case, config_name, y_offset=0):
    """The float32 case on the emulator under memcheck with x and y 256-byte aligned (y `y_offset`
    elements past it); checks the result and returns the launch's per-argument counters."""
    be = emulator.EmulatorBackend()
    rng = np.random.default_rng(4)
    x = aligned_empty(case["xs"])
    x[...] = rng.integers(-1, 2, case["xs"])
    w = rng.integers(-1, 2, case["ws"]).astype(np.float32)
    p = problem(case["xs"], case["ws"], case["strides"], case["padding"], case["fmt"], case["dil"])
    y = aligned_empty(p.output_shape, offset=y_offset)
    per_argument = counted(monkeypatch, lambda: be.algorithms()["implicit_gemm"].configured(config_name, 1, p).run(
        p, x, w, y))
    np.testing.assert_array_equal(y, gpuconv.conv2d_reference(x, w, p))
    return per_argument


@needs_emulator
def test_tap_tile_copies_read_whole_sectors(monkeypatch):
    """The tap-tile loader's lane pairs copy 32 contiguous bytes of a row: with x 256-byte aligned (as CuPy
    allocates), every sector its x requests touch is read whole (the emulator's counters, per argument)."""
    requests, sectors, nbytes = run_counted(monkeypatch, CASES[2], "128x32")["x"]
    assert requests > 0 and nbytes == 32 * sectors


@needs_emulator
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=[CASE_IDS[0], CASE_IDS[2]])
def test_output_stores_write_whole_sectors(monkeypatch, case):
    """NHWC with KG % 4 == 0 and y aligned: each thread's 4-column groups go out as 16-byte stores, so a
    warp's stores write whole sectors (element-wise stores, lanes 16 bytes apart, wrote a quarter of each
    sector per instruction); y one element off its alignment takes the element-wise stores, as exact."""
    requests, sectors, nbytes = run_counted(monkeypatch, case, "64x64")["y"]
    assert requests > 0 and nbytes == 32 * sectors
    p = problem(case["xs"], case["ws"], case["strides"], case["padding"], case["fmt"], case["dil"])
    assert nbytes == 4 * p.N * p.OH * p.OW * p.K                      # every output written once
    scalar_requests, scalar_sectors, scalar_bytes = run_counted(monkeypatch, case, "64x64", y_offset=1)["y"]
    assert scalar_bytes == nbytes and scalar_requests == 4 * requests and 32 * scalar_sectors > 2 * nbytes
