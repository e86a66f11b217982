"""`gpuconv tune`: run the autotuner over a list of layers (the benchmark's, by default) and store each
layer's winner in the cache that conv2d(..., autotune=True) / GPUCONV_AUTOTUNE=1 reads."""
from __future__ import annotations

import argparse

import numpy as np

from .dtypes import SUPPORTED

DTYPES = {np.dtype(d).name: np.dtype(d) for d in SUPPORTED}


def _layers():
    from .bench.layers import LAYERS
    return LAYERS


def _layer_names(value: str) -> list[str]:
    known = [layer.name for layer in _layers()]
    names = [n.strip() for n in value.split(",") if n.strip()]
    if names == ["all"]:
        return known
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--layers {value!r}: unknown name(s) {bad}; expected 'all' or a "
                                         f"comma-separated list of {known}")
    return names


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not allowed: expected a positive integer")
    return n


def add_arguments(parser) -> None:
    parser.add_argument("--layers", type=_layer_names, default=None, metavar="NAMES",
                        help="comma-separated layer names of `gpuconv bench` (default: all)")
    parser.add_argument("--backend", choices=("cupy", "emulator"), default=None,
                        help="default: cupy when usable, else the emulator (whose times mean nothing)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--batch", type=_positive, default=None,
                        help="batch size for every layer (default: each layer's own)")
    parser.add_argument("--repeats", type=_positive, default=5, help="timed runs per candidate (median)")


def run(args) -> int:
    from .tuning import tune
    wanted = args.layers or [layer.name for layer in _layers()]
    rejected = 0
    for layer in _layers():
        if layer.name not in wanted:
            continue
        if args.batch is not None:
            layer = layer.with_batch(args.batch)
        result = tune(layer.input_shape, layer.filter_shape, layer.stride, layer.padding,
                      dilations=layer.dilation, backend=args.backend, dtype=DTYPES[args.dtype],
                      repeats=args.repeats)
        print(f"{layer.name}: {result}", flush=True)
        rejected += sum(c.rejected is not None for c in result.candidates)
    print(f"cache: {result.cache_file}" + (f"; {rejected} candidate(s) rejected (see above)" if rejected else ""))
    return 0
