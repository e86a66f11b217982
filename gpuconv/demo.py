"""`gpuconv demo`: the seed articles' example on the best available backend.

A batch of 100 random 32x32 RGB images (NHWC) convolved with 16 3x3 filters, VALID padding, stride 1.
Prints the backend and algorithm that ran, the shapes, the median time of a few runs after a warm-up,
and the largest difference from TensorFlow (when it is installed) and from the float64 reference.
"""
from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time

import numpy as np

import gpuconv
from .backends import available_backends, get_backend
from .dtypes import SUPPORTED
from .problem import parse_problem
from .reference import conv2d_reference

DTYPES = {str(d): d for d in SUPPORTED}  # float16, bfloat16, float32, float64
N, H, W, C, KH, KW, K = 100, 32, 32, 3, 3, 3, 16
MAX_SECONDS = 2.0  # stop repeating early on a slow backend (e.g. the emulator)


def add_arguments(parser) -> None:
    parser.add_argument("--backend", default="auto", choices=["auto", *available_backends()],
                        help="backend to run on (default: auto, i.e. cupy when usable, else numpy)")
    parser.add_argument("--algorithm", default="auto",
                        help="algorithm of that backend (default: auto; see `gpuconv info`)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="input and filter dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input and filters")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up (default 5)")
    parser.add_argument("--no-tf", action="store_true", help="do not import TensorFlow (compare to float64 only)")


def _pick_backend(name: str) -> str:
    reasons = available_backends()
    if name == "auto":  # the demo's own data can live on the GPU, so prefer cupy over copies
        return "cupy" if reasons.get("cupy") is None else "numpy"
    if reasons[name] is not None:
        raise ValueError(f"backend={name!r} is not usable on this host: {reasons[name]}")
    return name


def _sync(backend: str) -> None:
    if backend == "cupy":
        import cupy
        cupy.cuda.get_current_stream().synchronize()


def _tensorflow_result(x: np.ndarray, w: np.ndarray):
    """TF's conv2d of the same inputs, in their dtype, or (None, reason)."""
    if importlib.util.find_spec("tensorflow") is None:
        return None, "TensorFlow is not installed"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    try:
        y = tf.nn.conv2d(x, w, strides=1, padding="VALID", data_format="NHWC").numpy()
    except Exception as e:  # e.g. a dtype TF's CPU kernels do not register
        return None, f"TensorFlow {tf.__version__} cannot run it: {type(e).__name__}: {str(e).splitlines()[0]}"
    return y, f"TensorFlow {tf.__version__}"


def run(args) -> int:
    if args.repeats < 1:
        print(f"gpuconv demo: error: --repeats={args.repeats} is not allowed: expected >= 1", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype]
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32).astype(dtype)
    w = rng.standard_normal((KH, KW, C, K), dtype=np.float32).astype(dtype)
    p, _ = parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "VALID", "NHWC")
    try:
        backend = _pick_backend(args.backend)
        be = get_backend(backend)
        algo = be.choose(p).name if args.algorithm == "auto" else args.algorithm
        if backend == "cupy":
            import cupy
            xa, wa = cupy.asarray(x), cupy.asarray(w)
        else:
            xa, wa = x, w

        def call():
            return gpuconv.conv2d(xa, wa, strides=1, padding="VALID", backend=backend, algorithm=args.algorithm)

        t0 = time.perf_counter()
        y = call()  # warm-up: compiles kernels, allocates, fills caches
        _sync(backend)
        warmup = time.perf_counter() - t0
    except ValueError as e:
        print(f"gpuconv demo: error: {e}", file=sys.stderr)
        return 2
    times = []
    while len(times) < args.repeats and (not times or sum(times) < MAX_SECONDS):
        t0 = time.perf_counter()
        call()
        _sync(backend)
        times.append(time.perf_counter() - t0)
    y = np.asarray(y.get() if backend == "cupy" else y)
    med = statistics.median(times)

    print(f"gpuconv {gpuconv.__version__} demo: {N} random {H}x{W}x{C} images, {K} {KH}x{KW} filters, VALID, stride 1")
    print(f"  backend    {backend}: {be.summary}")
    print(f"  algorithm  {algo}: {be.algorithms()[algo].summary}")
    print(f"  input      {x.shape} {x.dtype} NHWC   filters {w.shape} HWIO   output {y.shape} {y.dtype}")
    print(f"  time       median {med * 1e3:.3f} ms of {len(times)} run(s) after a {warmup * 1e3:.1f} ms warm-up "
          f"({p.flops / med / 1e9:.2f} GFLOP/s)")
    ref = conv2d_reference(x, w, p)
    scale = float(np.max(np.abs(ref)))
    err_ref = float(np.max(np.abs(y.astype(np.float64) - ref)))
    if args.no_tf:
        tf_y, tf_name = None, "TensorFlow not used (--no-tf)"
    else:
        tf_y, tf_name = _tensorflow_result(x, w)
    if tf_y is not None:
        err_tf = float(np.max(np.abs(y.astype(np.float64) - tf_y.astype(np.float64))))
        print(f"  max error  {err_tf:.3g} against {tf_name} ({tf_y.dtype}); max |y| = {scale:.3g}")
        print(f"             {err_ref:.3g} against the float64 reference")
    else:
        print(f"  max error  {err_ref:.3g} against the float64 reference; max |y| = {scale:.3g} ({tf_name})")
    return 0
