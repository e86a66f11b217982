"""`gpuconv bench`: time gpuconv against TensorFlow, PyTorch, JAX and the seed approaches, layer by layer.

Per layer and implementation: validate first (max abs error against the float64 reference, next to TF's
own), warm up, time `repeats` calls (median, quartiles, min/max), then measure peak extra memory in a
separate call (tracemalloc, for NumPy-based code only). Writes a JSON file and a PNG chart into --out and
prints a table. Timing never asserts anything: the numbers are the output.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Optional

import numpy as np

import gpuconv
from gpuconv import config
from gpuconv.dtypes import SUPPORTED, unit_roundoff
from gpuconv.problem import parse_problem
from gpuconv.reference import conv2d_reference

from . import grad_bench
from . import peers as peers_mod
from . import scaling as scaling_mod
from .layers import BY_NAME, LAYERS, QUICK_LAYERS
from .peers import TRACEMALLOC, Case, Gpuconv, Impl

SCHEMA = "gpuconv-bench/1"
DTYPES = {d.name: d for d in SUPPORTED}
DEFAULT_BACKENDS = "numpy,cupy:all"
PER_PIXEL_BUDGET = 300_000          # multiply-adds the per-pixel loop runs per layer (~0.1 s)
QUICK_PER_PIXEL_BUDGET = 20_000


# --- options ---------------------------------------------------------------------------------------------

def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _names_arg(option: str, known: list[str], none_ok: bool):
    """An argparse type for a comma-separated list of names out of `known` (or 'all', or 'none')."""
    words = "'all', 'none'" if none_ok else "'all'"

    def parse(value: str) -> list[str]:
        names = _csv(value)
        if names == ["all"]:
            return list(known)
        if none_ok and names == ["none"]:
            return []
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{option} {value!r}: unknown name(s) {bad}; expected {words} or a "
                                             f"comma-separated list of {list(known)}")
        return names
    return parse


_layers_arg = _names_arg("--layers", [layer.name for layer in LAYERS], none_ok=True)
_peers_arg = _names_arg("--peers", list(peers_mod.PEER_NAMES), none_ok=True)


def _backends_arg(value: str) -> list[Gpuconv]:
    specs = _csv(value)
    if specs == ["none"]:
        return []
    try:
        impls = [impl for spec in specs for impl in peers_mod.gpuconv_impls(spec)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not impls:
        raise argparse.ArgumentTypeError(f"--backends {value!r}: expected e.g. 'numpy', 'numpy:gemm', "
                                         f"'cupy:all' or 'none'")
    return impls


def _number(kind, minimum, what):
    def parse(value: str):
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not allowed: expected {what}") from None
        if not v >= minimum or (minimum == 0 and kind is float and v == 0):
            raise argparse.ArgumentTypeError(f"{value!r} is not allowed: expected {what}")
        return v
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a few small layers at a tiny batch, 2 repeats")
    parser.add_argument("--layers", type=_layers_arg, default=None, metavar="NAMES",
                        help=f"comma-separated layer names or 'all' (default: all; --quick: "
                             f"{','.join(QUICK_LAYERS)}). Layers: {', '.join(BY_NAME)}")
    parser.add_argument("--backends", type=_backends_arg, default=None, metavar="SPECS",
                        help="gpuconv backends to time: 'numpy' (algorithm auto), 'numpy:gemm', "
                             "'numpy:winograd', 'cupy:all' (every CUDA algorithm), 'emulator:...', 'none' "
                             f"(default: {DEFAULT_BACKENDS}; unusable backends are reported and skipped)")
    parser.add_argument("--peers", type=_peers_arg, default=None, metavar="NAMES",
                        help=f"peers to time: 'all' (default), 'none' or a list of {', '.join(peers_mod.PEER_NAMES)};"
                             " each runs only when installed")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32",
                        help="input/filter dtype (default float32); peers that do not support it are skipped")
    parser.add_argument("--repeats", type=_number(int, 1, "an int >= 1"), default=None,
                        help="timed calls per layer and implementation (default 5; --quick 2)")
    parser.add_argument("--warmup", type=_number(int, 0, "an int >= 0"), default=1,
                        help="untimed calls before timing (default 1)")
    parser.add_argument("--max-seconds", type=_number(float, 0, "a number of seconds > 0"), default=2.0,
                        help="stop repeating once this much time is spent on one implementation and layer, "
                             "after at least 3 repeats (default 2)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("GPUCONV_BENCH_OUT", "bench-results")),
                        help="folder for the JSON and PNG (default $GPUCONV_BENCH_OUT or ./bench-results)")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    parser.add_argument("--gradients", action="store_true",
                        help="also time both conv2d gradients per layer: gpuconv's numpy backend against "
                             "TensorFlow-CPU's gradient ops (tf.raw_ops.Conv2DBackpropInput / Filter)")
    parser.add_argument("--scaling", action="store_true",
                        help="also time one large convolution through gpuconv.dask.conv2d on 1, 2 and 4 dask "
                             "workers (threads and processes; needs the dask extra); --layers none for it alone")


# --- measuring -------------------------------------------------------------------------------------------

def make_case(layer, dtype: np.dtype, index: int) -> Case:
    rng = np.random.default_rng(1000 + index)
    p, _ = parse_problem(layer.input_shape, dtype, layer.filter_shape, dtype, layer.stride, layer.padding,
                         "NHWC", layer.dilation)
    x = rng.standard_normal(layer.input_shape, dtype=np.float32).astype(dtype)
    # Filters scaled by 1/sqrt(reduction) keep outputs O(1) on every layer, so absolute errors compare.
    w = (rng.standard_normal(layer.filter_shape, dtype=np.float32) / np.float32(math.sqrt(p.R))).astype(dtype)
    return Case(layer=layer, p=p, x=x, w=w)


def gross_error_limit(case: Case) -> float:
    """Relative error (to max|reference|) above which a result is wrong rather than rounded: a sanity gate
    before timing, far looser than the tests' tolerances (Winograd's larger rounding must pass it)."""
    return min(0.05, 1024 * unit_roundoff(case.p.dtype) * math.sqrt(case.p.R))


def _stats(samples: list[float], scale: float) -> dict:
    s = sorted(t * scale for t in samples)
    q = np.quantile(s, [0.25, 0.5, 0.75]) if len(s) > 1 else [s[0]] * 3
    return {"median": float(q[1]), "q1": float(q[0]), "q3": float(q[2]), "min": s[0], "max": s[-1],
            "repeats": len(s), "samples": s}


def time_rounds(runs: list, repeats: list, warmups: list, max_seconds: float) -> list[list[float]]:
    """Samples of several callables timed in rounds: each round calls every callable once, the order
    rotating from round to round, so that a shared host's slow spells fall on all of them alike and the
    ratios between their medians hold (timing one after the other, a spell inflates one side only: on the
    2-core VM, a layer's gpuconv/TF ratio moved 1.3x-2.0x between runs so). runs[i] is called
    warmups[i] times untimed first and at most repeats[i] times timed; the rounds stop once they have taken
    max_seconds per callable, after at least 3 (or all of repeats[i], if fewer)."""
    for run, warmup in zip(runs, warmups):
        for _ in range(warmup):
            run()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()                       # as timeit does: a collection inside one sample is noise
    samples = [[] for _ in runs]
    try:
        start = time.perf_counter()
        for i in range(max(repeats, default=0)):
            for j in range(len(runs)):
                k = (i + j) % len(runs)
                if len(samples[k]) < repeats[k]:
                    t0 = time.perf_counter()
                    runs[k]()
                    samples[k].append(time.perf_counter() - t0)
            if i + 1 >= min(3, max(repeats)) and time.perf_counter() - start > max_seconds * len(runs):
                break
    finally:
        if was_enabled:
            gc.enable()
    return samples


def _peak_extra_bytes(run) -> int:
    """Peak bytes allocated during one call, minus the returned output's own bytes."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        y = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return int(peak - getattr(y, "nbytes", 0))


def measure_all(impls: list, case: Case, ref: np.ndarray, opts, progress=None) -> list[dict]:
    """Every implementation on one layer: each validated against the reference on its own, then the valid
    ones timed together in rounds (time_rounds), then their memory measured."""
    results, timed = [], []
    for impl in impls:
        if progress is not None:
            progress(f"{case.layer.name}: {impl.name}")
        t0 = time.perf_counter()
        res, prep = _validate(impl, case, ref)
        res["wall_s"] = time.perf_counter() - t0    # all spent on it: validation, its samples, memory
        results.append(res)
        if prep is not None:
            timed.append((impl, res, prep))
    if progress is not None:
        progress(f"{case.layer.name}: timing {len(timed)} implementations in rounds")
    repeats = [min(opts.repeats, prep.max_repeats or opts.repeats) for _, _, prep in timed]
    warmups = [0 if prep.max_repeats else opts.warmup for _, _, prep in timed]  # capped: pure Python
    samples = time_rounds([prep.run for _, _, prep in timed], repeats, warmups, opts.max_seconds)
    for (impl, res, prep), got, warmup in zip(timed, samples, warmups):
        t0 = time.perf_counter()
        _finish(impl, case, res, prep, got, warmup)
        res["wall_s"] += sum(got) + time.perf_counter() - t0
    for res in results:
        res["wall_s"] = round(res["wall_s"], 3)
    return results


def _validate(impl: Impl, case: Case, ref: np.ndarray):
    """(result entry, prepared run) for an implementation whose first result passes the sanity gate, else
    (the entry saying why not, None)."""
    res = {"impl": impl.name, "kind": impl.kind, "device": impl.device}
    if isinstance(impl, Gpuconv):
        res["backend"], res["algorithm"] = impl.backend, impl.algorithm
    why = impl.why_not(case)
    if why is not None:
        return {**res, "status": "skipped", "reason": why}, None
    if isinstance(impl, Gpuconv):
        res["algorithm_used"] = impl.chosen(case)
    try:
        prep = impl.prepare(case)
        got = np.asarray(prep.to_numpy(prep.run()), dtype=np.float64)
    except Exception as e:                      # a peer that does not support this dtype/layer, say why
        first_line = (str(e).splitlines() or [""])[0][:300]
        return {**res, "status": "failed", "reason": f"{type(e).__name__}: {first_line}"}, None
    want = prep.expected(ref)
    if got.shape != want.shape:
        return {**res, "status": "wrong", "reason": f"output shape {got.shape}, expected {want.shape}"}, None
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    res["max_abs_error"] = err
    limit = gross_error_limit(case) * float(np.max(np.abs(want)) or 1.0)
    if not err <= limit:
        return {**res, "status": "wrong", "reason": f"max abs error {err:.3g} exceeds the sanity limit {limit:.3g}"}, None
    return res, prep


def _finish(impl: Impl, case: Case, res: dict, prep, samples: list[float], warmup: int) -> None:
    res.update(status="ok", time_s=_stats(samples, prep.time_scale), warmup=warmup)
    if prep.time_scale != 1.0:
        res["extrapolated"] = {"time_scale": prep.time_scale, "how": prep.note}
    elif prep.note:
        res["note"] = prep.note
    res["gflops"] = case.p.flops / res["time_s"]["median"] / 1e9
    if impl.memory == TRACEMALLOC:
        res["extra_memory_bytes"] = _peak_extra_bytes(prep.run)
        res["memory_method"] = TRACEMALLOC
    else:
        res["extra_memory_bytes"] = None
        res["memory_method"] = impl.memory


def add_ratios(layer_res: dict) -> None:
    """Time ratio to TF (CPU, or GPU for GPU implementations) and to the fastest peer on the same device."""
    ok = {r["impl"]: r for r in layer_res["results"] if r["status"] == "ok"}
    for r in layer_res["results"]:
        if r["status"] != "ok":
            continue
        t = r["time_s"]["median"]
        tf = ok.get(f"tf-{r['device']}")
        r["ratio_to_tf"] = t / tf["time_s"]["median"] if tf else None
        peers = [q for q in ok.values() if q["kind"] != "gpuconv" and q["device"] == r["device"]]
        best = min(peers, key=lambda q: q["time_s"]["median"], default=None)
        r["fastest_peer"] = best["impl"] if best else None
        r["ratio_to_fastest_peer"] = t / best["time_s"]["median"] if best else None
        # The issue's yardstick: the faster of the two frameworks a user would otherwise reach for.
        frameworks = [q for q in (ok.get(f"tf-{r['device']}"), ok.get(f"torch-{r['device']}")) if q]
        fw = min(frameworks, key=lambda q: q["time_s"]["median"], default=None)
        r["faster_framework"] = fw["impl"] if fw else None
        r["ratio_to_faster_framework"] = t / fw["time_s"]["median"] if fw else None
        tf_err = tf.get("max_abs_error") if tf else None
        r["error_ratio_to_tf"] = (r["max_abs_error"] / tf_err) if tf_err else None
    tf = ok.get("tf-cpu")
    layer_res["tf_max_abs_error"] = tf["max_abs_error"] if tf else None


def summarise(layers: list[dict], gpuconv_names: list[str]) -> dict:
    """Per gpuconv implementation: geometric mean of time/TF, the worst layer, whether it beats the seeds."""
    out = {}
    for name in gpuconv_names:
        rows = [(lr["name"], r, lr) for lr in layers for r in lr["results"] if r["impl"] == name]
        timed = [(n, r) for n, r, _ in rows if r["status"] == "ok" and r.get("ratio_to_tf")]
        if not timed:
            continue
        ratios = [r["ratio_to_tf"] for _, r in timed]
        worst_name, worst = max(timed, key=lambda nr: nr[1]["ratio_to_tf"])
        losses, seed_pairs = [], 0
        for lname, r, lr in rows:
            for s in lr["results"]:
                if s["kind"] == "seed" and s["status"] == "ok" and r["status"] == "ok":
                    seed_pairs += 1
                    if r["time_s"]["median"] >= s["time_s"]["median"]:
                        losses.append({"layer": lname, "seed": s["impl"],
                                       "ratio": r["time_s"]["median"] / s["time_s"]["median"]})
        mems = [r["extra_memory_bytes"] for _, r in timed if r.get("extra_memory_bytes") is not None]
        fw = [(n, r["ratio_to_faster_framework"]) for n, r in timed if r.get("ratio_to_faster_framework")]
        out[name] = {
            "layers_timed": len(timed),
            "layers_not_timed": [{"layer": n, "status": r["status"], "reason": r.get("reason")}
                                 for n, r, _ in rows if r["status"] != "ok" or not r.get("ratio_to_tf")],
            "geomean_ratio_to_tf": float(math.exp(statistics.fmean(math.log(v) for v in ratios))),
            "worst_layer": {"layer": worst_name, "ratio_to_tf": worst["ratio_to_tf"]},
            "layers_above_1_5x_tf": [n for n, r in timed if r["ratio_to_tf"] > 1.5],
            "geomean_ratio_to_faster_framework": (float(math.exp(statistics.fmean(math.log(v) for _, v in fw)))
                                                  if fw else None),
            "layers_above_1_2x_faster_framework": [n for n, v in fw if v > 1.2],
            # None when no seed approach was timed (nothing to compare with)
            "beats_every_seed_on_every_layer": (not losses) if seed_pairs else None,
            "seed_comparisons": seed_pairs,
            "seed_losses": losses,
            "max_extra_memory_bytes": max(mems) if mems else None,
            "max_error_ratio_to_tf": max((r["error_ratio_to_tf"] for _, r in timed
                                          if r.get("error_ratio_to_tf") is not None), default=None),
        }
    return out


# --- the machine -----------------------------------------------------------------------------------------

_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
               "asimd", "sve")


def _cpu() -> dict:
    """Model name, family/model numbers (VMs often hide the name) and the SIMD features that set peak speed."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())   # the first CPU is enough
    except OSError:
        pass
    flags = set(fields.get("flags", fields.get("features", "")).split())
    return {"cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_family_model": (f"{fields['cpu family']}/{fields['model']}"
                                 if "cpu family" in fields and "model" in fields else None),
            "cpu_simd": [f for f in _SIMD_FLAGS if f in flags]}


def machine_info(impls: list[Impl]) -> dict:
    import threadpoolctl
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    try:
        blas_build = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception as e:                       # numpy < 1.26 has no mode="dicts"
        blas_build = f"unavailable: {e}"
    gpu = None
    if gpuconv.available_backends().get("cupy") is None:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        gpu = {"name": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
               "memory_bytes": int(props["totalGlobalMem"]), "compute_capability": f"{props['major']}.{props['minor']}"}
    versions = {"python": platform.python_version(), "gpuconv": gpuconv.__version__, "numpy": np.__version__}
    for dist in ("ml_dtypes", "threadpoolctl", "rich", "matplotlib"):
        versions[dist] = peers_mod.dist_version(dist)
    versions["cupy"] = peers_mod.dist_version("cupy-cuda13x", "cupy-cuda12x", "cupy")
    for impl in impls:
        versions.update(impl.versions())
    return {
        **_cpu(), "logical_cores": os.cpu_count(), "usable_cores": usable, "memory_bytes": mem,
        "platform": platform.platform(), "gpu": gpu, "versions": versions,
        # other work on the machine during the run skews every number: this shows whether there was any
        "load_average_1_5_15min_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        # every thread pool loaded by now (NumPy's BLAS, and the frameworks' OpenMP / oneDNN pools)
        "threadpools": threadpoolctl.threadpool_info(), "numpy_blas_build": blas_build,
        # settings that change the libraries' speed (e.g. OPENBLAS_CORETYPE picks OpenBLAS' kernels)
        "performance_env": {k: v for k, v in sorted(os.environ.items())
                            if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "KMP_", "GOMP_", "XLA_", "GPUCONV_", "CUDA_"))
                            or k in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")},
    }


def _layer_line(lr: dict) -> str:
    """One line per finished layer: what gpuconv took against TF (and, in logs, shows progress)."""
    ok = {r["impl"]: r for r in lr["results"] if r["status"] == "ok"}
    parts = [f"{name} {r['time_s']['median'] * 1e3:.3g} ms" + (f" ({r['ratio_to_tf']:.2f}x TF)" if r.get("ratio_to_tf")
                                                             else "")
             for name, r in ok.items() if r["kind"] == "gpuconv"]
    if "tf-cpu" in ok:
        parts.append(f"tf-cpu {ok['tf-cpu']['time_s']['median'] * 1e3:.3g} ms")
    return f"{lr['name']}: " + ", ".join(parts or ["nothing timed"])


# --- output ----------------------------------------------------------------------------------------------

def _ms(t: Optional[float]) -> str:
    return "-" if t is None else (f"{t * 1e3:,.0f}" if t >= 10 else f"{t * 1e3:.3g}")


def _x(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:,.0f}x" if v >= 100 else f"{v:.2f}x")


def print_table(report: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table
    table = Table(title=f"gpuconv bench ({report['settings']['dtype']}, {escape(report['machine']['cpu_model'])}, "
                        f"{report['machine']['usable_cores']} cores)", show_lines=False)
    for col, just in (("layer", "left"), ("implementation", "left"), ("median ms", "right"),
                      ("IQR ms", "right"), ("GFLOP/s", "right"), ("/ TF", "right"), ("/ fastest", "right"),
                      ("max err", "right"), ("extra MiB", "right")):
        table.add_column(col, justify=just)
    footnotes = []
    for lr in report["layers"]:
        table.add_section()
        first = True
        for r in lr["results"]:
            label = r["impl"] + (f" ({r['algorithm_used']})" if r.get("algorithm_used") and r.get("algorithm") == "auto"
                                 else "")
            layer_cell = lr["name"] if first else ""
            first = False
            if r["status"] != "ok":
                footnotes.append(f"({len(footnotes) + 1}) {lr['name']} / {r['impl']}: {r['status']}: {r.get('reason')}")
                table.add_row(layer_cell, label, f"[dim]{r['status']} ({len(footnotes)})[/dim]", *[""] * 6)
                continue
            t = r["time_s"]
            mark = "*" if "extrapolated" in r else ""
            ratio = r.get("ratio_to_tf")
            style = ("" if r["kind"] != "gpuconv" or ratio is None      # the issue's goal: <= 1, none above 1.5
                     else "green" if ratio <= 1 else "yellow" if ratio <= 1.5 else "red")
            mem = r.get("extra_memory_bytes")
            table.add_row(layer_cell, label, _ms(t["median"]) + mark, _ms(t["q3"] - t["q1"]),
                          f"{r['gflops']:.3g}", f"[{style}]{_x(ratio)}[/{style}]" if style else _x(ratio),
                          _x(r.get("ratio_to_fastest_peer")), f"{r['max_abs_error']:.1e}",
                          "-" if mem is None else f"{mem / 2**20:.1f}")
    console.print(table)
    for note in footnotes:
        console.print(note, style="dim", highlight=False, markup=False)
    console.print("* extrapolated from a sample of output pixels (see the JSON's 'extrapolated').  "
                  "extra MiB: tracemalloc peak minus the output, NumPy-based code only.")
    for note in report["not_run"]:
        console.print(f"[dim]not run: {note['impl']}: {escape(note['reason'])}[/dim]")  # e.g. pip's "gpuconv[cuda13]"
    for name, s in report["summary"].items():
        beats = s["beats_every_seed_on_every_layer"]
        seeds = ("n/a (no seed approach timed)" if beats is None else "yes" if beats else
                 f"no ({len(s['seed_losses'])} of {s['seed_comparisons']} comparisons lost: " +
                 ", ".join(f"{d['layer']} vs {d['seed']} {d['ratio']:.2f}x" for d in s["seed_losses"]) + ")")
        console.print(f"[bold]{name}[/bold]: geometric mean time / TF = {s['geomean_ratio_to_tf']:.2f} over "
                      f"{s['layers_timed']} layers; worst {s['worst_layer']['layer']} "
                      f"({s['worst_layer']['ratio_to_tf']:.2f}x); above 1.5x: {s['layers_above_1_5x_tf'] or 'none'}; "
                      f"faster than every seed approach on every layer: {seeds}")
        if s["geomean_ratio_to_faster_framework"] is not None:
            console.print(f"[bold]{name}[/bold]: geometric mean time / min(TF, PyTorch) = "
                          f"{s['geomean_ratio_to_faster_framework']:.2f}; above 1.2x: "
                          f"{s['layers_above_1_2x_faster_framework'] or 'none'}")


def markdown_table(report: dict) -> str:
    """The run as a Markdown table (median ms per implementation), for the README."""
    impls = report["settings"]["implementations"]
    m = report["machine"]
    head = (f"Measured {report['date']} with `{report['command']}`, {report['settings']['dtype']}, "
            f"{m.get('cpu_model')} ({m.get('usable_cores')} cores), median of {report['settings']['repeats']} "
            f"runs in ms; * = extrapolated from a sample.\n\n")
    cols = ["layer", "GFLOP", *impls, "gpuconv / TF", "gpuconv / min(TF, PyTorch)", "error / TF's"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for lr in report["layers"]:
        by = {r["impl"]: r for r in lr["results"]}
        cells = [lr["name"], f"{lr['flops'] / 1e9:.2f}"]
        for name in impls:
            r = by.get(name)
            t = (r or {}).get("time_s") or {}
            if not t:
                cells.append("-")
                continue
            cell = _ms(t["median"]) + ("*" if r.get("extrapolated") else "")
            if r.get("algorithm_used"):
                cell += f" ({r['algorithm_used']})"
            cells.append(cell)
        ours = next((r for r in lr["results"] if r.get("kind") == "gpuconv" and r.get("time_s")), {})
        cells += [_x(ours.get("ratio_to_tf")), _x(ours.get("ratio_to_faster_framework")),
                  f"{ours['error_ratio_to_tf']:.2f}" if ours.get("error_ratio_to_tf") is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def draw_chart(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = [lr["name"] for lr in report["layers"]]
    names = []
    for lr in report["layers"]:
        for r in lr["results"]:
            if r["status"] == "ok" and r.get("ratio_to_tf") is not None and r["impl"] not in ("tf-cpu", "tf-gpu") \
                    and r["impl"] not in names:
                names.append(r["impl"])
    fig, ax = plt.subplots(figsize=(max(7.0, 0.8 * len(layers) + 4.0), 5.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys, hatches = [], [], []
        for j, lr in enumerate(report["layers"]):
            r = next((r for r in lr["results"] if r["impl"] == name and r["status"] == "ok"), None)
            if r is not None and r.get("ratio_to_tf"):
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(r["ratio_to_tf"])
                hatches.append("//" if "extrapolated" in r else "")
        bars = ax.bar(xs, ys, width, label=name + (" (extrapolated)" if name == "seed-per-pixel" else ""))
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, rotation=35, ha="right")
    ax.set_ylabel("time / TensorFlow time (log; below 1 = faster than TF)")
    ax.set_title(f"gpuconv bench, {report['settings']['dtype']}, {report['machine']['cpu_model']} "
                 f"({report['machine']['usable_cores']} cores), {report['date'][:10]}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- the command -----------------------------------------------------------------------------------------

BENCH_EXTRA = 'pip install "gpuconv[bench]"'


def _missing_modules(chart: bool) -> list[str]:
    """The bench extra's modules this run needs and cannot import (matplotlib only for the chart)."""
    missing = []
    for module in ("rich", "threadpoolctl", *(["matplotlib"] if chart else [])):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def _out_dir_problem(out_dir: Path) -> Optional[str]:
    """Why the results cannot be written to out_dir (None when they can), found before the long run."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        return f"--out {str(out_dir)!r} is not a writable folder: {e.strerror or e}"
    return None


def _error(message: str) -> int:
    print(f"gpuconv bench: error: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    missing = _missing_modules(chart=not args.no_chart)
    if missing:
        return _error(f"the benchmark needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                      f"not installed: {BENCH_EXTRA} (or {'pip install ' + ' '.join(missing)})")
    why = _out_dir_problem(args.out)
    if why is not None:
        return _error(why)
    if args.scaling and scaling_mod.unavailable() is not None:
        return _error(f"--scaling needs dask and distributed: {scaling_mod.unavailable()}")
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    if not console.is_terminal:
        console = Console(width=170)           # logs and containers: keep the table's columns readable
    quick = args.quick
    args.repeats = args.repeats or (2 if quick else 5)
    layer_names = args.layers if args.layers is not None else (list(QUICK_LAYERS) if quick else [layer.name for layer in LAYERS])
    gpuconv_impls = args.backends if args.backends is not None else _backends_arg(DEFAULT_BACKENDS)
    peer_names = args.peers if args.peers is not None else list(peers_mod.PEER_NAMES)
    all_peers = peers_mod.make_peers(QUICK_PER_PIXEL_BUDGET if quick else PER_PIXEL_BUDGET)
    dtype = DTYPES[args.dtype]

    impls, not_run = [], []
    for impl in [*gpuconv_impls, *(all_peers[n] for n in peer_names)]:
        why = impl.unavailable()
        if why is None:
            impls.append(impl)
        else:
            not_run.append({"impl": impl.name, "reason": why})

    out_dir = args.out
    started = _dt.datetime.now(_dt.timezone.utc)
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    layers_res, grad_layers = [], []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("bench", total=len(layer_names) * len(impls))
        for name in layer_names:
            layer = BY_NAME[name]
            if quick:
                layer = layer.with_batch(layer.quick_batch)
            case = make_case(layer, dtype, [lay.name for lay in LAYERS].index(name))
            progress.update(task, description=f"{name}: float64 reference")
            ref = conv2d_reference(case.x, case.w, case.p)
            results = measure_all(impls, case, ref, args,
                                  lambda what: progress.update(task, description=what))
            progress.advance(task, len(impls))
            p = case.p
            lr = {"name": name, "why": layer.why, "input_shape": list(layer.input_shape),
                  "filter_shape": list(layer.filter_shape), "strides": [p.SH, p.SW], "dilations": [p.DH, p.DW],
                  "padding": layer.padding if isinstance(layer.padding, str) else [list(v) for v in layer.padding],
                  "pads": [p.PT, p.PB, p.PL, p.PR], "groups": p.G, "output_shape": list(p.output_shape),
                  "flops": p.flops, "problem": p.describe(), "results": results}
            add_ratios(lr)
            layers_res.append(lr)
            progress.console.print(_layer_line(lr))
            if args.gradients:
                progress.update(task, description=f"{name}: gradients")
                grad_layers.append(grad_bench.run_layer(layer, case, args.repeats, args.warmup, args.max_seconds))

    scaling = None
    if args.scaling:
        with console.status("scaling") as status:
            scaling = scaling_mod.run_scaling(quick, args.repeats, args.warmup, progress=status.update)

    report = {
        "schema": SCHEMA,
        "date": started.isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "command": "gpuconv bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "gpuconv bench",
        "settings": {"dtype": dtype.name, "quick": quick, "layers": layer_names, "repeats": args.repeats,
                     "warmup": args.warmup, "max_seconds": args.max_seconds,
                     "implementations": [i.name for i in impls],
                     "numpy_workspace_bytes": config.settings.numpy_workspace_bytes},
        "methods": {
            "timer": "time.perf_counter around one call on prebuilt inputs (GPU: after a stream/device "
                     "synchronize); garbage collection off while timing; median and quartiles over repeats; "
                     "a layer's implementations are timed together in rounds (one call of each per round, "
                     "the order rotating), so that a busy host slows all of them alike",
            "flops": "2*N*OH*OW*K*KH*KW*(C/G) (ConvProblem.flops); GFLOP/s from the median time",
            "error": "max |result - float64 reference| (gpuconv.reference.conv2d_reference) on the same "
                     "rounded inputs; tf_max_abs_error is TensorFlow's own error on them",
            "memory": "tracemalloc peak during one separate call minus the output's bytes (NumPy reports its "
                      "allocations to tracemalloc; BLAS-internal buffers are not seen). null with the reason "
                      "for frameworks whose allocators tracemalloc cannot see",
            "ratios": "ratio_to_tf: median time / TF median time on the same device; ratio_to_fastest_peer: "
                      "against the fastest non-gpuconv implementation on the same device; "
                      "ratio_to_faster_framework: against the faster of TF and PyTorch on the same device "
                      "(the one that ran, when only one did)",
            "seed-per-pixel": "pure-Python loop timed on a sample of output pixels of image 0 and scaled by "
                              "the layer's multiply-adds / the sample's",
        },
        "machine": {**machine_info(impls), "load_average_1_5_15min_at_start": load_at_start},
        "not_run": not_run,
        "layers": layers_res,
        "summary": summarise(layers_res, [i.name for i in impls if i.kind == "gpuconv"]),
        "scaling": scaling,
        "gradients": grad_bench.section(grad_layers) if args.gradients else None,
    }
    stem = f"bench-{dtype.name}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    console.print(f"JSON: {escape(str(json_path))}")
    if layers_res:  # `--layers none --scaling` has no layer table
        print_table(report, console)
        md_path = out_dir / f"{stem}.md"
        md_path.write_text(markdown_table(report))
        console.print(f"Markdown table: {escape(str(md_path))}")
        if not args.no_chart:
            png_path = out_dir / f"{stem}.png"
            draw_chart(report, png_path)
            console.print(f"chart: {escape(str(png_path))}")
    if report["gradients"] is not None:
        grad_bench.print_section(report["gradients"], console)
    if scaling is not None:
        scaling_mod.print_scaling(scaling, console)
        if not args.no_chart:
            scaling_png = out_dir / f"{stem}-scaling.png"
            scaling_mod.draw_scaling(scaling, scaling_png)
            console.print(f"scaling chart: {escape(str(scaling_png))}")
    console.print(f"[dim]{report['wall_seconds']:.0f} s[/dim]")
    return 0


def main(argv=None) -> int:
    """`python -m gpuconv.bench.runner ...`, the same as `gpuconv bench ...`."""
    parser = argparse.ArgumentParser(prog="gpuconv bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
