"""Tuning tool for the NumPy backend: time each numpy algorithm against tf.nn.conv2d on the suite's layers.

    python bench/tune_numpy.py [--layers a,b] [--algos auto,gemm,winograd] [--repeat 7] [--dtype float32]

Prints per layer and algorithm: median ms, TF's median ms, the median of the per-round ratios with their
interquartile range (TF and every algorithm run in turn within each round, so a neighbour's load hits them
alike), and the max abs error against the float64 reference next to TF's own, on bench/layers.py's suite.
This is the scratch tool behind the backend's tuning choices (chunk sizes, Winograd tile size); the
user-facing benchmark is `gpuconv bench`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import gpuconv
from gpuconv.bench.layers import LAYERS as SUITE
from gpuconv.problem import parse_problem
from gpuconv.reference import conv2d_reference

# name: (input NHWC shape, filter HWIO shape, strides, padding, dilations), from the benchmark's suite
LAYERS = {layer.name: (layer.input_shape, layer.filter_shape, layer.stride, layer.padding, layer.dilation)
          for layer in SUITE}


STAT = statistics.median


def interleaved(fns: dict, repeat: int) -> dict:
    """Seconds of each of fns per round, the rounds running every fn once in turn (after one warm-up)."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--algos", default="auto")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=0, help="override every layer's batch size")
    ap.add_argument("--no-error", action="store_true")
    ap.add_argument("--no-tf", action="store_true")
    ap.add_argument("--min", action="store_true", help="report the fastest run instead of the median "
                    "(steadier on a machine shared with other work)")
    args = ap.parse_args(argv)
    global STAT
    STAT = min if args.min else statistics.median
    tf = None
    if not args.no_tf:
        import tensorflow as tf
    rng = np.random.default_rng(0)
    ratios = {}
    print(f"{'layer':14s} {'algo':10s} {'ms':>8s} {'tf ms':>8s} {'ratio':>6s} {'IQR':^11s} {'err':>9s} {'tf err':>9s} {'err/tf':>6s}")
    for name in args.layers.split(","):
        xs, ws, s, pad, d = LAYERS[name]
        if args.batch:
            xs = (args.batch,) + xs[1:]
        x = rng.standard_normal(xs).astype(args.dtype)
        w = (rng.standard_normal(ws) / np.sqrt(ws[0] * ws[1] * ws[2])).astype(args.dtype)
        p, _ = parse_problem(x.shape, x.dtype, w.shape, w.dtype, s, pad, "NHWC", d)
        ref = None if args.no_error else conv2d_reference(x, w, p)
        fns, err_tf = {}, float("nan")
        if tf is not None:
            xt, wt = tf.constant(x), tf.constant(w)
            tf_fn = tf.function(lambda: tf.nn.conv2d(xt, wt, s, pad, dilations=d), jit_compile=False)
            fns["tf"] = lambda: tf_fn().numpy()
            if ref is not None:
                err_tf = float(np.max(np.abs(fns["tf"]().astype(np.float64) - ref)))
        errs = {}
        for algo in args.algos.split(","):
            f = (lambda a: lambda: gpuconv.conv2d(x, w, s, pad, dilations=d, backend="numpy", algorithm=a))(algo)
            try:
                y = f()
            except ValueError as e:
                print(f"{name:14s} {algo:10s} cannot run: {str(e)[-80:]}")
                continue
            fns[algo] = f
            errs[algo] = float(np.max(np.abs(y.astype(np.float64) - ref))) if ref is not None else float("nan")
        times = interleaved(fns, args.repeat)
        t_tf = STAT(times["tf"]) if tf is not None else float("nan")
        for algo in errs:
            t, err = STAT(times[algo]), errs[algo]
            if tf is not None:
                per_round = np.array(times[algo]) / np.array(times["tf"])
                ratio = float(np.median(per_round))
                q1, q3 = np.percentile(per_round, [25, 75])
                ratios.setdefault(algo, []).append(ratio)
            else:
                ratio = q1 = q3 = float("nan")
            print(f"{name:14s} {algo:10s} {t*1e3:8.2f} {t_tf*1e3:8.2f} {ratio:6.2f} {q1:5.2f}-{q3:<5.2f} "
                  f"{err:9.2e} {err_tf:9.2e} {err/err_tf:6.2f}", flush=True)
    for algo, r in ratios.items():
        if tf is not None:
            print(f"{algo}: geomean ratio {np.exp(np.mean(np.log(r))):.3f}, max {max(r):.2f}")


if __name__ == "__main__":
    main()
