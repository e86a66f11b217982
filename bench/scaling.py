"""The scaling section of `gpuconv bench --scaling`: one large convolution through gpuconv.dask.conv2d on a
dask.distributed LocalCluster of 1, 2 and 4 workers, as threads of one process and as separate processes,
next to the in-memory gpuconv.conv2d of the same input in this process.

The input is generated on the workers and persisted before timing, and each timed run reduces the output to
one number on the workers (y.sum()), so the times are the convolution's, not the transfer of 256 MiB to and
from the client. Efficiency = t(1 worker) / (k * t(k workers)), per mode. Process workers get one BLAS
thread each (distributed sets OMP/OPENBLAS/MKL_NUM_THREADS=1 for them); thread workers share this
process's BLAS threads. On a machine with fewer cores than workers, the efficiency above the core count
measures overhead only, and the table says how many cores there were.
"""
from __future__ import annotations

import functools
import os
import statistics
import time

import numpy as np

WORKERS = (1, 2, 4)
MODES = ("threads", "processes")
# (N, H, W, C) -> K, 3x3 SAME, float32: 256 MiB in, 256 MiB out, 4 x 16 blocks of 1 x 256 x 256 x 16
FULL = dict(shape=(4, 1024, 1024, 16), chunks=(1, 256, 256, 16), K=16)
QUICK = dict(shape=(2, 256, 256, 16), chunks=(1, 128, 128, 16), K=16)


def unavailable() -> str | None:
    """Why the section cannot run (None when it can)."""
    for module in ("dask.array", "distributed"):
        try:
            __import__(module)
        except ImportError:
            return f"{module.split('.')[0]} is not installed: pip install \"gpuconv[dask]\""
    return None


def _median_time(run, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_scaling(quick: bool, repeats: int, warmup: int, progress=lambda text: None) -> dict:
    import dask.array as da
    import distributed

    import gpuconv
    import gpuconv.dask as gdask

    cfg = QUICK if quick else FULL
    shape, chunks, k = cfg["shape"], cfg["chunks"], cfg["K"]
    w = np.random.default_rng(1).standard_normal((3, 3, shape[3], k)).astype(np.float32)
    p, _ = gpuconv.parse_problem(shape, np.float32, w.shape, np.float32, 1, "SAME", "NHWC", None)

    progress("scaling: in memory")
    x_np = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    in_memory = _median_time(functools.partial(gpuconv.conv2d, x_np, w, 1, "SAME", backend="numpy"), repeats, warmup)
    del x_np  # 256 MiB this process need not hold while the clusters run

    runs = []
    for mode in MODES:
        for n in WORKERS:
            progress(f"scaling: {n} {mode}")
            with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=mode == "processes",
                                          dashboard_address=None) as cluster, distributed.Client(cluster) as client:
                x = da.random.default_rng(0).standard_normal(shape, chunks=chunks, dtype=np.float32).persist()
                distributed.wait(x)
                total = gdask.conv2d(x, w, 1, "SAME", backend="numpy").sum(dtype=np.float64)
                t = _median_time(lambda: client.compute(total).result(), repeats, warmup)
            runs.append({"mode": mode, "workers": n, "median_s": round(t, 4)})
    for run in runs:
        one = next(r["median_s"] for r in runs if r["mode"] == run["mode"] and r["workers"] == 1)
        run["speedup"] = round(one / run["median_s"], 3)
        run["efficiency"] = round(one / (run["workers"] * run["median_s"]), 3)
        run["ratio_to_in_memory"] = round(run["median_s"] / in_memory, 3)
    return {
        "input_shape": list(shape), "chunks": list(chunks), "filter_shape": list(w.shape), "padding": "SAME",
        "dtype": "float32", "flops": p.flops, "blocks": int(np.prod([s // c for s, c in zip(shape, chunks)])),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "in_memory_median_s": round(in_memory, 4), "repeats": repeats, "warmup": warmup, "runs": runs,
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
    }


def print_scaling(section: dict, console) -> None:
    from rich.table import Table
    table = Table(title=f"dask scaling: {section['input_shape']} * {section['filter_shape']} SAME float32, "
                        f"{section['blocks']} blocks, {section['usable_cores']} usable cores; in memory "
                        f"{section['in_memory_median_s'] * 1e3:.0f} ms")
    for col in ("mode", "workers", "median", "speedup", "efficiency", "time / in-memory"):
        table.add_column(col, justify="right")
    for r in section["runs"]:
        table.add_row(r["mode"], str(r["workers"]), f"{r['median_s'] * 1e3:.0f} ms", f"{r['speedup']:.2f}x",
                      f"{r['efficiency']:.0%}", f"{r['ratio_to_in_memory']:.2f}")
    console.print(table)


def draw_scaling(section: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    for mode, marker in zip(MODES, ("o", "s")):
        runs = [r for r in section["runs"] if r["mode"] == mode]
        ax.plot([r["workers"] for r in runs], [r["speedup"] for r in runs], marker=marker, label=f"{mode}")
    ax.plot(WORKERS, WORKERS, color="grey", linestyle="--", label="ideal")
    ax.axvline(section["usable_cores"], color="black", linewidth=0.8, linestyle=":", label="usable cores")
    ax.set_xticks(WORKERS)
    ax.set_xlabel("dask workers (1 thread each)")
    ax.set_ylabel("speedup over 1 worker")
    ax.set_title(f"gpuconv.dask.conv2d, {section['input_shape']} float32")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
