"""`gpuconv sanitize`: every CUDA kernel on the emulator under the sanitizer's checks, over the bench
suite's layers at reduced sizes, every algorithm x dtype x index width; with --counters, the warp-level
memory counters per kernel. Exit status 1 on any report."""
from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tool", default="all",
                        help="comma-separated checks: memcheck,racecheck,initcheck,synccheck,asynccheck (default: all)")
    parser.add_argument("--layers", default="", help="comma-separated layer names of bench/layers.py (default: all)")
    parser.add_argument("--counters", action="store_true",
                        help="also print per kernel: sectors per request, bank-conflict wavefronts, distinct global "
                             "bytes moved and FMAs per such byte")


def reduced(layer):
    """The layer at a size the emulator checks in seconds: one image, small spatial size and channels,
    the same kernel shape, stride, dilation, padding and kind of grouping."""
    h = min(layer.H, 6 + (layer.KH - 1) * layer.dilation + layer.stride)
    w = min(layer.W, 6 + (layer.KW - 1) * layer.dilation + layer.stride)
    if layer.groups == layer.C and layer.groups > 1:       # depthwise, channel multiplier kept
        c = g = min(layer.C, 8)
        k = c * (layer.K // layer.C)
    elif layer.groups > 1:
        g = min(layer.groups, 4)
        c, k = g * min(layer.C // layer.groups, 4), g * min(layer.K // layer.groups, 4)
    else:  # 16 channels reach the implicit GEMM's tap-tile module (CG % 16 == 0), 12 its vector module;
        # 24 filters (a multiple of 8, not of a tile) let the tensor-core kernel run and leave partial tiles
        g, c, k = 1, min(layer.C, 16 if layer.KH * layer.KW > 1 else 12), min(layer.K, 24)
    return dataclasses.replace(layer, N=1, H=h, W=w, C=c, K=k, groups=g)


def run(args) -> int:
    import gpuconv
    from gpuconv import config
    from gpuconv.backends import available_backends
    from gpuconv.backends.cuda import sanitizer
    from gpuconv.dtypes import bfloat16
    import sys
    from pathlib import Path
    root = Path(gpuconv.__file__).resolve().parents[1]  # a source checkout: bench/ beside gpuconv/
    if (root / "bench" / "layers.py").is_file() and str(root) not in sys.path:
        sys.path.append(str(root))
    try:
        from bench.layers import LAYERS
    except ImportError as e:
        print(f"gpuconv sanitize needs the bench suite (bench/layers.py, in a source checkout): {e}")
        return 2
    tools = sanitizer.parse_tools(args.tool, "--tool")
    reason = available_backends()["emulator"]
    if reason is not None:
        print(f"the emulator backend is unusable: {reason}")
        return 2
    wanted = [n.strip() for n in args.layers.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {l.name for l in LAYERS})
    if unknown:
        raise ValueError(f"--layers={args.layers!r} is not allowed: unknown {unknown}; expected names from "
                         f"{[l.name for l in LAYERS]}")
    layers = [reduced(l) for l in LAYERS if not wanted or l.name in wanted]
    rng = np.random.default_rng(0)
    failures, runs = [], 0
    per_kernel: dict[str, list] = {}
    fmas: dict[str, int] = {}
    os.environ["GPUCONV_EMULATOR_SANITIZE"] = ",".join(tools)
    saved = config.settings.cuda_force_index64
    try:
        for layer in layers:
            x64 = rng.standard_normal(layer.input_shape)
            f64 = rng.standard_normal(layer.filter_shape)
            for algorithm in gpuconv.algorithms("emulator"):
                for dtype in (np.float32, np.float64, np.float16, bfloat16):
                    for index64 in (False, True):
                        config.settings.cuda_force_index64 = index64
                        sanitizer.collected = [] if args.counters else None
                        what = f"{layer.name} {algorithm} {np.dtype(dtype).name} i{64 if index64 else 32}"
                        # float32 reaches the tensor cores as TF32 only
                        tf32 = algorithm == "tensor_core" and dtype == np.float32
                        try:
                            gpuconv.conv2d(x64.astype(dtype), f64.astype(dtype), layer.stride, layer.padding,
                                           dilations=layer.dilation, backend="emulator", algorithm=algorithm,
                                           precision="tf32" if tf32 else None)
                        except ValueError as e:  # the algorithm does not apply to this layer
                            if "cannot run this problem" in str(e):
                                continue
                            failures.append(f"{what}: {e}")
                        except RuntimeError as e:
                            failures.append(f"{what}: {e}")
                        runs += 1
                        launched = sanitizer.collected or []
                        for c in launched:
                            per_kernel.setdefault(c.kernel, []).append(c)
                        # the convolution's multiply-adds, counted from the problem (g++ gives no FMA
                        # hook), belong to the kernel that does them: not im2col's gather, not the
                        # non-finite filter handling
                        for name in {c.kernel for c in launched
                                     if "im2col" not in c.kernel and "nonfinite" not in c.kernel}:
                            fmas[name] = fmas.get(name, 0) + layer_fmas(layer)
    finally:
        config.settings.cuda_force_index64 = saved
        sanitizer.collected = None
        os.environ.pop("GPUCONV_EMULATOR_SANITIZE", None)
    if args.counters:
        print_counters(per_kernel, fmas)
    for f in failures:
        print(f"REPORT {f}")
    print(f"{runs} convolutions under {','.join(tools)}: {len(failures)} report(s)")
    return 1 if failures else 0


def layer_fmas(layer) -> int:
    """Multiply-adds of one convolution: N*OH*OW*K*KH*KW*CG."""
    from gpuconv import parse_problem
    p, _ = parse_problem(layer.input_shape, np.float32, layer.filter_shape, np.float32, layer.stride,
                         layer.padding, "NHWC", layer.dilation)
    return p.N * p.OH * p.OW * p.K * p.R


def print_counters(per_kernel: dict, fmas: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="memory counters per kernel (emulator, summed over the checked layers)")
    table.add_column("kernel", no_wrap=True)
    # global: sectors per request and efficiency; shared: bank-conflict wavefronts per request; distinct
    # global bytes read + written, and the convolution's FMAs per such byte (arithmetic intensity)
    for col in ("launches", "sectors/req", "efficiency", "wavefronts/req", "distinct bytes", "FMA/byte"):
        table.add_column(col, justify="right")
    for name, cs in sorted(per_kernel.items()):
        req = sum(c.global_requests for c in cs)
        sec = sum(c.global_sectors for c in cs)
        byt = sum(c.global_bytes for c in cs)
        sreq = sum(c.shared_requests for c in cs)
        wav = sum(c.shared_wavefronts for c in cs)
        moved = sum(c.unique_read_bytes + c.unique_written_bytes for c in cs)
        table.add_row(name, str(len(cs)), f"{sec / req:.2f}" if req else "-",
                      f"{byt / (32 * sec):.0%}" if sec else "-", f"{wav / sreq:.2f}" if sreq else "-",
                      f"{moved:,}", f"{fmas.get(name, 0) / moved:.2f}" if moved else "-")
    # per argument (x: the input, w: the filters, y / part / col: outputs and workspaces), float32 entries
    # with 32-bit indices: which array's accesses make up the kernel's sectors
    args = Table(title="global requests per kernel argument (float32, 32-bit indices)")
    for col in ("kernel", "argument"):
        args.add_column(col, no_wrap=True)
    for col in ("requests", "sectors/req", "efficiency"):
        args.add_column(col, justify="right")
    for name, cs in sorted(per_kernel.items()):
        if not name.endswith("_f32_i32"):
            continue
        totals: dict[str, list] = {}
        for c in cs:
            for arg, three in c.per_argument.items():
                t = totals.setdefault(arg, [0, 0, 0])
                for i in range(3):
                    t[i] += three[i]
        for arg, (req, sec, byt) in totals.items():
            args.add_row(name, arg, f"{req:,}", f"{sec / req:.2f}", f"{byt / (32 * sec):.0%}" if sec else "-")
    console = Console()
    wide = Console(width=max(console.width, 110))  # a pipe's 80 columns would truncate it
    wide.print(table)
    wide.print(args)
