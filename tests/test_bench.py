"""`gpuconv bench`: the layer suite, the seed baselines and peer adapters against the float64 reference, and a
`--quick` run's JSON and chart. No timing assertions: only that the numbers exist and hang together."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from gpuconv import conv2d_reference, parse_problem
from gpuconv.bench import peers, seeds
from gpuconv.bench.layers import BY_NAME, LAYERS, QUICK_LAYERS, Layer
from gpuconv.bench.runner import make_case, time_rounds
from gpuconv.cli import main as cli_main


def test_layer_suite_parses_and_covers_the_issue_list():
    for layer in LAYERS:
        p, _ = parse_problem(layer.input_shape, np.float32, layer.filter_shape, np.float32, layer.stride,
                             layer.padding, "NHWC", layer.dilation)
        assert p.flops > 0 and layer.why
    ps = {layer.name: parse_problem(layer.input_shape, np.float32, layer.filter_shape, np.float32, layer.stride,
                                    layer.padding, "NHWC", layer.dilation)[0] for layer in LAYERS}
    assert ps["seed_32x32x3_k16"].describe().startswith("N=100 H=32 W=32 C=3 KH=3 KW=3 K=16")
    assert (ps["resnet_stem_7x7s2"].PT, ps["resnet_stem_7x7s2"].PB) == (2, 3)    # TF's asymmetric SAME
    assert any(p.CG == 1 and p.G == p.C > 1 for p in ps.values())      # depthwise
    assert any(p.G == 32 and p.CG == 4 for p in ps.values())
    assert any(p.DH == 2 for p in ps.values()) and any(p.SH == 2 and p.KH == 3 for p in ps.values())
    assert sum(p.is_pointwise for p in ps.values()) == 2
    assert {p.H for p in ps.values() if p.KH == 3 and p.SH == 1 and p.G == 1 and p.DH == 1} >= {7, 14, 28, 56, 224}
    assert set(QUICK_LAYERS) <= set(BY_NAME)


SMALL = [
    Layer("stem_like", "asymmetric SAME, stride 2", N=2, H=11, W=9, C=3, KH=7, KW=7, K=5, stride=2),
    Layer("grouped", "groups", N=1, H=6, W=7, C=8, KH=3, KW=3, K=4, groups=4),
    Layer("depthwise", "depthwise x2 multiplier", N=1, H=5, W=5, C=3, KH=3, KW=3, K=6, groups=3),
    Layer("depthwise_s2", "depthwise, stride 2, asymmetric SAME", N=2, H=8, W=7, C=4, KH=3, KW=3, K=4, groups=4,
          stride=2),
    Layer("depthwise_d2", "depthwise, dilation 2", N=1, H=9, W=9, C=2, KH=3, KW=3, K=2, groups=2, dilation=2),
    Layer("dilated", "dilation 2", N=1, H=9, W=8, C=4, KH=3, KW=2, K=3, dilation=2),
    Layer("valid", "VALID", N=3, H=6, W=6, C=2, KH=3, KW=3, K=2, padding="VALID"),
]


@pytest.mark.parametrize("layer", SMALL, ids=lambda lay: lay.name)
def test_seed_approaches_match_the_reference(layer):
    case = make_case(layer, np.dtype(np.float32), 0)
    ref = conv2d_reference(case.x, case.w, case.p)
    np.testing.assert_allclose(seeds.shift_and_matmul(case.x, case.w, case.p), ref, rtol=1e-5, atol=1e-5)
    first, count = 1, case.p.OH * case.p.OW - 2
    got = seeds.per_pixel(case.x, case.w, case.p, first, count)
    np.testing.assert_allclose(got, ref[0].reshape(-1, case.p.K)[first:first + count], rtol=1e-5, atol=1e-5)
    # The extrapolation's multiply-add count: the sample over all pixels of one image, times N.
    assert seeds.multiply_adds(case.p, 0, case.p.OH * case.p.OW) * case.p.N == seeds.multiply_adds(case.p)


def test_per_pixel_rejects_a_window_outside_the_output():
    case = make_case(SMALL[-1], np.dtype(np.float32), 0)
    with pytest.raises(ValueError, match="count"):
        seeds.per_pixel(case.x, case.w, case.p, 0, case.p.OH * case.p.OW + 1)


@pytest.mark.parametrize("name", ["tf-cpu", "torch-cpu", "jax-cpu"])
def test_framework_adapters_compute_tf_conv2d(name):
    """Layouts, HWIO->OIHW weights, TF's asymmetric SAME pads, groups and dilation in each peer's own API."""
    impl = peers.make_peers(1000)[name]
    why = impl.unavailable()
    if why is not None:
        pytest.skip(f"{name}: {why}")
    for layer in SMALL:
        case = make_case(layer, np.dtype(np.float32), 0)
        prep = impl.prepare(case)
        got = prep.to_numpy(prep.run())
        np.testing.assert_allclose(got, conv2d_reference(case.x, case.w, case.p), rtol=1e-4, atol=1e-4,
                                   err_msg=f"{name} on {layer.name}")


def test_bad_options_name_the_option(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["bench", "--layers", "resnet_3x3_56,nope"])
    assert e.value.code == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["bench", "--backends", "numpy:nosuch"])
    assert "nosuch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["bench", "--repeats", "0"])
    assert "--repeats" in capsys.readouterr().err


def test_quick_run_writes_json_and_chart(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gpuconv", "bench", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (json_path,) = tmp_path.glob("bench-float32-*.json")
    (png_path,) = tmp_path.glob("bench-float32-*.png")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads(json_path.read_text())
    (md_path,) = tmp_path.glob("bench-float32-*.md")
    md_rows = [line for line in md_path.read_text().splitlines() if line.startswith("| ")]
    assert len(md_rows) == 1 + len(rep["layers"])        # header + one row per layer
    assert all(f"| {lr['name']} |" in md_path.read_text() for lr in rep["layers"])

    assert rep["schema"] == "gpuconv-bench/1" and rep["settings"]["quick"] is True
    m = rep["machine"]
    assert m["cpu_model"] and m["logical_cores"] >= 1 and m["versions"]["numpy"] == np.__version__
    assert isinstance(m["threadpools"], list) and m["threadpools"], "threadpoolctl saw no BLAS"
    assert [lr["name"] for lr in rep["layers"]] == list(QUICK_LAYERS)
    for note in rep["not_run"]:
        assert note["reason"], note

    tf_ran = "tf-cpu" in rep["settings"]["implementations"]
    for lr in rep["layers"]:
        layer = BY_NAME[lr["name"]]
        p, _ = parse_problem(lr["input_shape"], np.float32, lr["filter_shape"], np.float32, layer.stride,
                             layer.padding, "NHWC", layer.dilation)
        assert lr["flops"] == p.flops and lr["output_shape"] == list(p.output_shape)
        by = {r["impl"]: r for r in lr["results"]}
        assert set(by) == set(rep["settings"]["implementations"])
        assert by["gpuconv-numpy"]["status"] == "ok", by["gpuconv-numpy"]
        assert by["gpuconv-numpy"]["algorithm_used"]
        for r in lr["results"]:
            if r["status"] != "ok":
                assert r["reason"], r
                continue
            t = r["time_s"]
            assert 0 < t["min"] <= t["q1"] <= t["median"] <= t["q3"] <= t["max"]
            assert t["repeats"] == len(t["samples"]) >= 1
            assert math.isclose(r["gflops"], lr["flops"] / t["median"] / 1e9, rel_tol=1e-9)
            # outputs are O(1) by construction: float32 results within 1e-3 of the float64 reference
            assert r["max_abs_error"] < 1e-3, r
            if r["memory_method"] == "tracemalloc":
                assert isinstance(r["extra_memory_bytes"], int) and r["extra_memory_bytes"] >= 0
            else:
                assert r["extra_memory_bytes"] is None and r["memory_method"].startswith("not measured")
            if tf_ran:
                assert r["ratio_to_tf"] > 0 and r["ratio_to_fastest_peer"] > 0
        if "seed-per-pixel" in by and by["seed-per-pixel"]["status"] == "ok":
            assert by["seed-per-pixel"]["extrapolated"]["time_scale"] > 1
        if tf_ran:
            assert lr["tf_max_abs_error"] == by["tf-cpu"]["max_abs_error"]

    if tf_ran:
        s = rep["summary"]["gpuconv-numpy"]
        ratios = [by["ratio_to_tf"] for lr in rep["layers"] for by in lr["results"] if by["impl"] == "gpuconv-numpy"]
        assert math.isclose(s["geomean_ratio_to_tf"], math.exp(np.mean(np.log(ratios))), rel_tol=1e-9)
        assert s["worst_layer"]["ratio_to_tf"] == max(ratios)
        fw = [by["ratio_to_faster_framework"] for lr in rep["layers"] for by in lr["results"]
              if by["impl"] == "gpuconv-numpy"]
        assert math.isclose(s["geomean_ratio_to_faster_framework"], math.exp(np.mean(np.log(fw))), rel_tol=1e-9)
        seeds_ok = [by for lr in rep["layers"] for by in lr["results"] if by["kind"] == "seed" and by["status"] == "ok"]
        assert s["beats_every_seed_on_every_layer"] is (None if not seeds_ok else not s["seed_losses"])


def test_ratio_to_the_faster_of_tf_and_pytorch():
    """Each result's ratio to the faster framework on its own device: TF or PyTorch, whichever is faster,
    never a seed approach or another device's framework."""
    from gpuconv.bench.runner import add_ratios, summarise

    def res(impl, kind, device, ms):
        return {"impl": impl, "kind": kind, "device": device, "status": "ok", "max_abs_error": 1e-6,
                "time_s": {"median": ms / 1e3}}
    layers = [{"name": name, "results": [res("gpuconv-numpy", "gpuconv", "cpu", 6.0), res("tf-cpu", "framework", "cpu", tf),
                                         res("torch-cpu", "framework", "cpu", torch),
                                         res("torch-gpu", "framework", "gpu", 0.1),
                                         res("seed-shift-matmul", "seed", "cpu", 1.0)]}
              for name, tf, torch in (("a", 4.0, 5.0), ("b", 12.0, 3.0))]
    for lr in layers:
        add_ratios(lr)
    ours = [lr["results"][0] for lr in layers]
    assert [r["faster_framework"] for r in ours] == ["tf-cpu", "torch-cpu"]
    assert [r["ratio_to_faster_framework"] for r in ours] == [1.5, 2.0]
    assert ours[1]["ratio_to_tf"] == 0.5 and ours[1]["ratio_to_fastest_peer"] == 6.0
    s = summarise(layers, ["gpuconv-numpy"])["gpuconv-numpy"]
    assert math.isclose(s["geomean_ratio_to_faster_framework"], math.sqrt(3.0), rel_tol=1e-12)
    assert s["layers_above_1_2x_faster_framework"] == ["a", "b"]


def _benchmark_must_not_run(monkeypatch):
    from gpuconv.bench import runner

    def fail(*args, **kwargs):
        raise AssertionError("the benchmark started although the command should have stopped first")
    monkeypatch.setattr(runner, "make_case", fail)


@pytest.mark.parametrize("hidden", [("rich",), ("matplotlib",), ("rich", "threadpoolctl", "matplotlib")])
def test_missing_bench_extra_names_it_and_exits_2(hidden, tmp_path, monkeypatch, capsys):
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)   # `import module` now raises ImportError
    _benchmark_must_not_run(monkeypatch)
    assert cli_main(["bench", "--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert 'pip install "gpuconv[bench]"' in err and all(m in err for m in hidden), err
    assert "Traceback" not in err


def test_missing_matplotlib_is_fine_without_the_chart(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli_main(["bench", "--quick", "--layers", "resnet_1x1_reduce", "--backends", "numpy", "--peers", "none",
                     "--repeats", "1", "--no-chart", "--out", str(tmp_path)]) == 0
    assert list(tmp_path.glob("bench-float32-*.json")) and not list(tmp_path.glob("*.png"))


def test_unwritable_out_fails_before_the_benchmark(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _benchmark_must_not_run(monkeypatch)
    assert cli_main(["bench", "--quick", "--out", str(blocker / "results")]) == 2
    err = capsys.readouterr().err
    assert f"--out '{blocker / 'results'}' is not a writable folder" in err, err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_out_fails_before_the_benchmark(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    out.mkdir(mode=0o555)
    _benchmark_must_not_run(monkeypatch)
    assert cli_main(["bench", "--quick", "--out", str(out)]) == 2
    assert "is not a writable folder" in capsys.readouterr().err


def test_rich_output_keeps_brackets_from_reasons_and_paths(tmp_path, capsys):
    """'gpuconv[cuda13]' in an install hint, or a folder named like markup, must print as written."""
    from rich.console import Console

    from gpuconv.bench.runner import print_table
    out = tmp_path / "results[bold]"
    assert cli_main(["bench", "--quick", "--layers", "resnet_1x1_reduce", "--backends", "numpy", "--peers", "none",
                     "--repeats", "1", "--no-chart", "--out", str(out)]) == 0
    (json_path,) = out.glob("bench-float32-*.json")
    assert f"JSON: {json_path}" in capsys.readouterr().out
    report = json.loads(json_path.read_text())
    report["machine"]["cpu_model"] = "Imaginary CPU [v2]"
    report["not_run"] = [{"impl": "gpuconv-cupy", "reason": 'no CUDA headers: pip install "gpuconv[cuda13]"'}]
    console = Console(width=400, force_terminal=False)
    print_table(report, console)
    printed = capsys.readouterr().out
    assert 'pip install "gpuconv[cuda13]"' in printed and "Imaginary CPU [v2]" in printed, printed


def test_scaling_section_times_dask_workers(tmp_path):
    """`--scaling` alone (`--layers none`): six LocalCluster runs (1, 2, 4 workers as threads and as
    processes) in the JSON, efficiencies consistent with the times, and the chart."""
    pytest.importorskip("distributed", reason="distributed is not installed (pip install 'gpuconv[dask]')")
    out = tmp_path / "out"
    assert cli_main(["bench", "--quick", "--layers", "none", "--scaling", "--repeats", "1", "--warmup", "0",
                     "--out", str(out)]) == 0
    (report_path,) = out.glob("bench-*.json")
    section = json.loads(report_path.read_text())["scaling"]
    runs = section["runs"]
    assert [(r["mode"], r["workers"]) for r in runs] == [(m, n) for m in ("threads", "processes") for n in (1, 2, 4)]
    for r in runs:
        one = next(o for o in runs if o["mode"] == r["mode"] and o["workers"] == 1)
        assert r["median_s"] > 0
        assert r["efficiency"] == pytest.approx(one["median_s"] / (r["workers"] * r["median_s"]), rel=1e-2)
    assert section["in_memory_median_s"] > 0 and section["blocks"] == 8
    assert len(list(out.glob("bench-*-scaling.png"))) == 1


def test_scaling_without_dask_names_the_extra(tmp_path, monkeypatch, capsys):
    from gpuconv.bench import scaling
    monkeypatch.setattr(scaling, "unavailable", lambda: 'dask is not installed: pip install "gpuconv[dask]"')
    assert cli_main(["bench", "--quick", "--scaling", "--out", str(tmp_path / "out")]) == 2
    assert 'pip install "gpuconv[dask]"' in capsys.readouterr().err


@pytest.mark.parametrize("max_seconds, rounds", [(1e9, 4), (0.0, 3)])
def test_time_rounds_interleaves_the_implementations(max_seconds, rounds):
    """Each round calls every implementation once, the order rotating; warm-up calls come first and are not
    timed; a capped implementation stops at its cap; with the time budget spent, the rounds stop after 3."""
    calls = []

    def run(name):
        return lambda: calls.append(name)
    samples = time_rounds([run("a"), run("b"), run("c")], [4, 4, 2], [1, 0, 2], max_seconds)
    assert calls[:3] == ["a", "c", "c"]                          # the warm-ups
    timed = calls[3:]
    want = ["a", "b", "c", "b", "c", "a", "a", "b", "a", "b"][:{4: 10, 3: 8}[rounds]]   # c capped at 2
    assert timed == want
    assert [len(t) for t in samples] == [timed.count(n) for n in "abc"]
    assert all(t >= 0 for ts in samples for t in ts)


def test_gradient_section_times_both_gradients_against_tensorflow(tmp_path, capsys):
    """--gradients: per layer and gradient, gpuconv-numpy's timing, TF-CPU's where TF has the kernel (and
    the two results agree), the reason where it has not (grouped layers), and the summary."""
    assert cli_main(["bench", "--quick", "--layers", "seed_32x32x3_k16,mobilenet_dw_3x3,resnext_g32_3x3",
                     "--backends", "none", "--peers", "none", "--gradients", "--repeats", "1", "--warmup", "0",
                     "--no-chart", "--out", str(tmp_path)]) == 0
    assert "conv2d gradients: gpuconv numpy vs TF-CPU" in capsys.readouterr().out
    (json_path,) = tmp_path.glob("bench-float32-*.json")
    sec = json.loads(json_path.read_text())["gradients"]
    assert [lr["name"] for lr in sec["layers"]] == ["seed_32x32x3_k16", "mobilenet_dw_3x3", "resnext_g32_3x3"]
    tf_installed = sec["tensorflow"] is not None
    for lr in sec["layers"]:
        for kind in ("input", "filter"):
            r = lr[kind]
            t = r["gpuconv-numpy"]
            assert 0 < t["min"] <= t["median"] <= t["max"] and t["repeats"] == 1
            if tf_installed and lr["name"] != "resnext_g32_3x3":
                assert r["tf-cpu"]["median"] > 0 and r["ratio_to_tf"] > 0
                assert r["max_abs_diff_to_tf_relative"] < 1e-5, (lr["name"], kind)
            else:
                assert r["tf-cpu"] is None and r["ratio_to_tf"] is None and r["tf_not_run"]
    if tf_installed:
        assert sec["summary"]["input"]["layers_timed"] == sec["summary"]["filter"]["layers_timed"] == 2
