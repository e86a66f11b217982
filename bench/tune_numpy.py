"""Tuning tool for the NumPy backend: time each numpy algorithm against tf.nn.conv2d on the suite's layers.

    python bench/tune_numpy.py [--layers a,b] [--algos auto,gemm,winograd] [--repeat 7] [--dtype float32]

Prints per layer and algorithm: median ms, TF's median ms, the ratio, and the max abs error against the
float64 reference next to TF's own, on bench/layers.py's suite.
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


def timed(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return STAT(ts)


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
    print(f"{'layer':14s} {'algo':10s} {'ms':>8s} {'tf ms':>8s} {'ratio':>6s} {'err':>9s} {'tf err':>9s} {'err/tf':>6s}")
    for name in args.layers.split(","):
        xs, ws, s, pad, d = LAYERS[name]
        if args.batch:
            xs = (args.batch,) + xs[1:]
        x = rng.standard_normal(xs).astype(args.dtype)
        w = (rng.standard_normal(ws) / np.sqrt(ws[0] * ws[1] * ws[2])).astype(args.dtype)
        p, _ = parse_problem(x.shape, x.dtype, w.shape, w.dtype, s, pad, "NHWC", d)
        ref = None if args.no_error else conv2d_reference(x, w, p)
        t_tf = err_tf = float("nan")
        if tf is not None:
            xt, wt = tf.constant(x), tf.constant(w)
            fn = tf.function(lambda: tf.nn.conv2d(xt, wt, s, pad, dilations=d), jit_compile=False)
            t_tf = timed(lambda: fn().numpy(), args.repeat)
            if ref is not None:
                err_tf = float(np.max(np.abs(fn().numpy().astype(np.float64) - ref)))
        for algo in args.algos.split(","):
            try:
                f = lambda: gpuconv.conv2d(x, w, s, pad, dilations=d, backend="numpy", algorithm=algo)
                t = timed(f, args.repeat)
            except ValueError as e:
                print(f"{name:14s} {algo:10s} cannot run: {str(e)[-80:]}")
                continue
            err = float(np.max(np.abs(f().astype(np.float64) - ref))) if ref is not None else float("nan")
            ratio = t / t_tf
            ratios.setdefault(algo, []).append(ratio)
            print(f"{name:14s} {algo:10s} {t*1e3:8.2f} {t_tf*1e3:8.2f} {ratio:6.2f} {err:9.2e} {err_tf:9.2e} "
                  f"{err/err_tf:6.2f}", flush=True)
    for algo, r in ratios.items():
        if tf is not None:
            print(f"{algo}: geomean ratio {np.exp(np.mean(np.log(r))):.3f}, max {max(r):.2f}")


if __name__ == "__main__":
    main()
