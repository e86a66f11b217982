"""The autotuner on the emulator (its times mean nothing; the mechanism is what is tested): candidates,
the result check, the persistent cache and its invalidation, concurrent tuners, conv2d's switch, the
command, and the cupy side's event timing through the CuPy stand-in."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import gpuconv
from gpuconv import api, cli, config, tune_cache, tune_cli, tuning
from gpuconv.backends import available_backends, get_backend
from gpuconv.backends.cuda import algorithms, cupy_backend

from fake_cupy import make_fake_cupy

EMULATOR_REASON = available_backends()["emulator"]
pytestmark = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")

XS, WS = (1, 5, 5, 4), (3, 3, 4, 8)     # direct, gemm and implicit_gemm can run it, nothing else
TESTS = Path(__file__).parent


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "autotune.json"
    monkeypatch.setenv("GPUCONV_AUTOTUNE_CACHE", str(path))
    tuning.clear_memo()
    yield path
    tuning.clear_memo()


def problem(xs=XS, ws=WS, dtype=np.float32):
    return gpuconv.parse_problem(xs, dtype, ws, dtype, 1, "SAME", "NHWC", None)[0]


def entries(path):
    return json.loads(path.read_text())["entries"]


def test_tune_times_every_variant_checks_it_and_caches_the_fastest(cache_file, monkeypatch):
    be = get_backend("emulator")
    p = problem()
    result = gpuconv.tune(XS, WS, padding="SAME", backend="emulator", repeats=2)
    expected = [(a.name, a.variant_key) for a in tuning.candidates_of(be, p)]
    assert [(c.algorithm, c.variant) for c in result.candidates] == expected
    # the untuned default first, then every variant of every algorithm that can run p, each once
    runnable = [a for a in be.algorithms().values() if a.why_not(p) is None]
    assert {a.name for a in runnable} == {"direct", "gemm", "implicit_gemm"}
    assert expected[0] == (be.choose(p).name, "default") and len(set(expected)) == len(expected)
    assert set(expected) == {(v.name, v.variant_key) for a in runnable for v in a.variants(p)}
    assert all(c.rejected is None and len(c.times_s) == 2 for c in result.candidates)
    assert result.winner.median_s == min(c.median_s for c in result.candidates)
    assert result.cache_file == cache_file
    (entry,) = entries(cache_file).values()
    assert (entry["algorithm"], entry["variant"]) == (result.winner.algorithm, result.winner.variant)
    assert entry["device"] == be.device_identity() and entry["problem"]["dtype"] == "float32"
    # conv2d with autotuning on runs the cached variant, without tuning again
    tuning.clear_memo()
    monkeypatch.setattr(tuning, "tune_problem", lambda *a, **k: pytest.fail("tuned again on a cache hit"))
    ran = []
    monkeypatch.setattr(be, "run", lambda p, x, w, algo, _run=be.run: ran.append(algo) or _run(p, x, w, algo))
    monkeypatch.setattr(api, "get_backend", lambda name: be)
    x, w = (np.random.default_rng(1).integers(-3, 4, s).astype(np.float32) for s in (XS, WS))
    y = gpuconv.conv2d(x, w, padding="SAME", backend="emulator", autotune=True)
    np.testing.assert_array_equal(y, gpuconv.conv2d_reference(x, w, p))
    assert [(a.name, a.variant_key) for a in ran] == [(entry["algorithm"], entry["variant"])]


def _store_entry(algo_name="direct", variant="default", p=None):
    """A cache entry for p as the tuner writes it, without timing anything."""
    be = get_backend("emulator")
    p = problem() if p is None else p
    algo = next(v for v in be.algorithms()[algo_name].variants(p) if v.variant_key == variant)
    result = tuning.TuneResult(p, be.name, be.device_identity(), [tuning.Candidate(algo.name, variant, [1e-3])],
                               None, None)
    result.winner = result.candidates[0]
    tuning._store(be, result.device, p, algo, result)
    return be, p


def test_a_second_process_reads_the_cache(cache_file):
    variant = "DIRECT_TILE_K=8,DIRECT_TILE_OH=8"
    _store_entry("direct", variant)
    code = ("import gpuconv; from gpuconv import tuning; from gpuconv.backends import get_backend\n"
            f"p = gpuconv.parse_problem({XS}, 'float32', {WS}, 'float32', 1, 'SAME', 'NHWC', None)[0]\n"
            "a = tuning.lookup(get_backend('emulator'), p); print(a.name, a.variant_key)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "GPUCONV_AUTOTUNE_CACHE": str(cache_file)}).stdout
    assert out.split() == ["direct", variant]


@pytest.mark.parametrize("change", ["source hash", "device name", "driver", "variant list"])
def test_an_entry_whose_keys_changed_is_stale(cache_file, monkeypatch, change, capsys):
    be, p = _store_entry("gemm", "GEMM_BK=16,GEMM_BM=32,GEMM_BN=64,GEMM_TM=2,GEMM_TN=4")
    assert tuning.lookup(be, p).variant_key == "GEMM_BK=16,GEMM_BM=32,GEMM_BN=64,GEMM_TM=2,GEMM_TN=4"
    identity = be.device_identity()
    if change == "source hash":
        monkeypatch.setattr(algorithms.CudaAlgorithm, "source_hash", lambda self: "0123456789abcdef")
    elif change == "device name":
        monkeypatch.setattr(type(be), "device_identity", lambda self: {**identity, "name": "another"})
    elif change == "driver":
        monkeypatch.setattr(type(be), "device_identity", lambda self: {**identity, "driver": "other"})
    else:
        monkeypatch.setattr(algorithms.GemmLaunches, "TUNING", ())
    assert tuning.lookup(be, p) is None
    (entry,) = entries(cache_file).values()
    why = tune_cache.stale_reason(entry, be, be.device_identity())
    assert why == {"source hash": "kernel sources changed", "device name": "device name changed ('"
                   + identity["name"] + "' -> 'another')", "driver": f"device driver changed ('{identity['driver']}' "
                   "-> 'other')", "variant list": "unknown variant 'GEMM_BK=16,GEMM_BM=32,GEMM_BN=64,GEMM_TM=2,"
                   "GEMM_TN=4'"}[change]
    from gpuconv import info
    for line in info._tune_cache():
        print(line)
    text = capsys.readouterr().out
    assert f"autotune cache: {cache_file} (1 entries)" in text
    if change == "device name":
        assert "emulator on another: 0 current, 0 stale" in text   # the entry is another device's
    else:
        assert f"emulator on {identity['name']}: 0 current, 1 stale" in text


def test_a_wrong_variant_is_rejected_and_reported(cache_file, monkeypatch):
    be = get_backend("emulator")
    p = problem()
    real = algorithms.Direct.variants

    def with_a_wrong_one(self, p):
        out = real(self, p)
        bad = out[-1]
        good_run = bad.run

        def wrong(p, x, w, y):
            good_run(p, x, w, y)
            y[0, 0, 0, 0] += 1          # fast and wrong: must not win
        bad.run = wrong

        def broken(p, x, w, y):
            raise RuntimeError("kernel conv_direct_f32_i32 failed in the emulator: boom")
        out[-2].run = broken
        return out
    monkeypatch.setattr(algorithms.Direct, "variants", with_a_wrong_one)
    result = tuning.tune_problem(be, p, repeats=1, warmup=0)
    keys = [v.variant_key for v in real(be.algorithms()["direct"], p)]
    failed, bad = [c for c in result.candidates if c.rejected]
    assert (bad.algorithm, bad.variant, failed.variant) == ("direct", keys[-1], keys[-2])
    assert bad.rejected.startswith("wrong result: differs from ") and "at (0, 0, 0, 0)" in bad.rejected
    assert failed.rejected == "failed: kernel conv_direct_f32_i32 failed in the emulator: boom"
    assert bad.median_s is None and (result.winner.algorithm, result.winner.variant) != ("direct", keys[-1])
    (entry,) = entries(cache_file).values()
    assert sorted(entry["rejected"]) == sorted(f"direct {k}" for k in keys[-2:])
    assert "rejected: wrong result" in str(result) and "rejected: failed" in str(result)


def test_processes_tuning_at_once_lose_no_entry(cache_file):
    """Two processes, each tuning two problems into one file at the same time: all four entries stay."""
    code = ("import sys, gpuconv\n"
            "for k in (int(sys.argv[1]), int(sys.argv[1]) + 4):\n"
            f"    gpuconv.tune({XS}, (1, 1, 4, k), backend='emulator', repeats=1, warmup=0)\n")
    env = {**os.environ, "GPUCONV_AUTOTUNE_CACHE": str(cache_file)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)], env=env, stderr=subprocess.PIPE, text=True)
             for k in (4, 12)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    got = sorted(e["problem"]["K"] for e in entries(cache_file).values())
    assert got == [4, 8, 12, 16]
    assert not [f for f in cache_file.parent.iterdir() if f.name.endswith(".tmp")]


def test_threads_storing_at_once_lose_no_entry(tmp_path):
    path = tmp_path / "c.json"

    def writer(t):
        for i in range(20):
            tune_cache.store(f"{t}-{i}", {"i": i}, path)
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tune_cache.read(path)) == 80


def test_a_damaged_cache_file_is_no_cache(cache_file):
    cache_file.write_text("{not json")
    assert tune_cache.read() == {}
    be, p = _store_entry()
    assert tuning.lookup(be, p).name == "direct" and len(entries(cache_file)) == 1


def test_GPUCONV_AUTOTUNE_tunes_a_miss_once(cache_file, monkeypatch):
    code = ("import numpy as np, gpuconv\n"
            f"x, w = np.ones({XS}, np.float32), np.ones({WS}, np.float32)\n"
            "print(gpuconv.settings.autotune, float(gpuconv.conv2d(x, w, backend='emulator').sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "GPUCONV_AUTOTUNE_CACHE": str(cache_file), "GPUCONV_AUTOTUNE": "1"}).stdout
    assert out.split()[0] == "True" and len(entries(cache_file)) == 1
    # in this process: the setting, then the memo (no second tuning, no second file read)
    monkeypatch.setattr(config.settings, "autotune", True)
    tunes = []
    real = tuning.tune_problem
    monkeypatch.setattr(tuning, "tune_problem", lambda *a, **k: tunes.append(1) or real(*a, **k))
    x, w = np.ones(XS, np.float32), np.ones((1, 1, 4, 3), np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(gpuconv.conv2d(x, w, backend="emulator"), np.full((1, 5, 5, 3), 4.0))
    assert tunes == [1] and len(entries(cache_file)) == 2
    gpuconv.conv2d(x, w, backend="emulator", autotune=False, algorithm="auto")
    assert tunes == [1]


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(backend="numpy"), ValueError, r"backend='numpy' is not allowed: tuning covers the CUDA backends"),
    (dict(backend=3), TypeError, r"backend=3 is not allowed: expected None or one of"),
    (dict(backend="gpu"), ValueError, r"backend='gpu'"),
    (dict(repeats=0), ValueError, r"repeats=0 is not allowed: expected an int >= 1"),
    (dict(warmup=-1), ValueError, r"warmup=-1 is not allowed: expected an int >= 0"),
    (dict(dtype="int8"), TypeError, r"input dtype int8 and filters dtype int8 are not allowed"),
    (dict(dtype=object()), TypeError, r"dtype=<object object at .*> is not allowed"),
    (dict(input="abc"), TypeError, r"input='abc' is not allowed: expected a shape \(a tuple of ints\) or an array"),
    (dict(input=np.ones(XS, np.float64), dtype="float32"), ValueError,
     r"dtype='float32' is not allowed with input of dtype float64: expected None or float64"),
    (dict(input=(1, 0, 5, 4)), ValueError, r"nothing to tune"),
])
def test_bad_arguments_are_refused_clearly(kwargs, error, message):
    args = {"input": XS, "filters": WS, "backend": "emulator", **kwargs}
    with pytest.raises(error, match=message):
        gpuconv.tune(args.pop("input"), args.pop("filters"), padding="SAME", **args)


def test_conv2d_refuses_a_non_bool_autotune():
    with pytest.raises(TypeError, match=r"autotune='yes' is not allowed: expected True, False or None"):
        gpuconv.conv2d(np.ones(XS, np.float32), np.ones(WS, np.float32), backend="emulator", autotune="yes")


def test_tune_command_over_layers(cache_file, monkeypatch, capsys):
    from gpuconv.bench.layers import Layer
    tiny = (Layer("tiny_a", "test", N=1, H=5, W=5, C=4, KH=3, KW=3, K=8),
            Layer("tiny_b", "test", N=2, H=4, W=4, C=4, KH=1, KW=1, K=4, padding="VALID"))
    monkeypatch.setattr(tune_cli, "_layers", lambda: tiny)
    assert cli.main(["tune", "--layers", "tiny_b", "--backend", "emulator", "--repeats", "1", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny_b: N=1 H=4 W=4 C=4") and f"cache: {cache_file}" in out
    (entry,) = entries(cache_file).values()
    assert entry["problem"]["N"] == 1 and entry["problem"]["KH"] == 1
    with pytest.raises(SystemExit):
        cli.main(["tune", "--layers", "nope"])
    assert "unknown name(s) ['nope']" in capsys.readouterr().err


def test_cupy_side_times_with_events_on_the_current_stream(cache_file, monkeypatch):
    calls = []
    cp = make_fake_cupy(calls)
    monkeypatch.setattr(cupy_backend, "_import_cupy", lambda: cp)
    cupy_backend.clear_caches()
    try:
        be = cupy_backend.CupyBackend()
        p = problem(ws=(1, 1, 4, 8))
        monkeypatch.setattr(algorithms.GemmLaunches, "TUNING", algorithms.GemmLaunches.TUNING[:1])
        monkeypatch.setattr(algorithms.Direct, "TUNING", ())
        rule_only = algorithms.ImplicitGemm.variants
        monkeypatch.setattr(algorithms.ImplicitGemm, "variants", lambda self, p: rule_only(self, p)[:1])
        result = tuning.tune_problem(be, p, repeats=3, warmup=1)
    finally:
        cupy_backend.clear_caches()
    assert result.device == {"name": "Fake GPU", "compute_capability": "9.0", "runtime": "13000", "driver": "13000"}
    n = len(result.candidates)
    # gemm1x1 (auto) and gemm, each default + one tile; direct default; implicit_gemm's rule choice
    assert [c.algorithm for c in result.candidates].count("implicit_gemm") == 1
    assert n == 6 and all(c.rejected is None and len(c.times_s) == 3 for c in result.candidates)
    assert sum(c == ("event", "record") for c in calls) == 2 * 3 * n
    assert sum(c == ("sync", "event") for c in calls) == 3 * n          # one wait per timed run
    (entry,) = entries(cache_file).values()
    assert entry["backend"] == "cupy" and entry["device"]["name"] == "Fake GPU"


def test_a_cupy_call_with_a_cache_hit_reads_nothing_back(cache_file, monkeypatch):
    """Autotuning on: once the problem is cached, a call still only enqueues work (no transfer, no wait)."""
    calls = []
    cp = make_fake_cupy(calls)
    monkeypatch.setattr(cupy_backend, "_import_cupy", lambda: cp)
    cupy_backend.clear_caches()
    try:
        be = cupy_backend.CupyBackend()
        monkeypatch.setattr(api, "unusable_reason", lambda name: None)
        monkeypatch.setattr(api, "get_backend", lambda name: be)
        x, w = (np.random.default_rng(2).integers(-3, 4, s).astype(np.float32) for s in (XS, WS))
        xd, wd = cp.asarray(x), cp.asarray(w)
        gpuconv.conv2d(xd, wd, padding="SAME", backend="cupy", autotune=True)    # a miss: tunes, waits
        assert ("sync", "event") in calls
        (entry,) = entries(cache_file).values()
        tuning.clear_memo()
        del calls[:]
        y = gpuconv.conv2d(xd, wd, padding="SAME", backend="cupy", autotune=True)
    finally:
        cupy_backend.clear_caches()
    assert [c for c in calls if c[0] in ("d2h", "sync")] == []
    np.testing.assert_array_equal(y.get(), gpuconv.conv2d_reference(x, w, problem()))
    assert not [c for c in calls if c[0] == "RawModule"], "every module was built while tuning"
    # the cached winner's own kernel (which algorithm wins depends on the fake launches' host timings)
    kernel = {"direct": "conv_direct", "gemm": "conv_gemm", "implicit_gemm": "conv_igemm"}[entry["algorithm"]]
    assert any(c[0] == "launch" and c[1].startswith(kernel) for c in calls)
