"""`gpuconv bench --gradients`: the two conv2d gradients per layer, gpuconv's NumPy backend against
TensorFlow-CPU's own gradient kernels (tf.raw_ops.Conv2DBackpropInput / Conv2DBackpropFilter, and the
DepthwiseConv2dNative ones for depthwise layers; TF has no CPU gradient kernels for other grouped layers).

Both get the same float32 inputs; the results are compared (max abs difference, relative to the largest
value) before timing, and timed with the forward section's timer (median and quartiles over repeats).
"""
from __future__ import annotations

import math
import statistics
from typing import Optional

import numpy as np

import gpuconv

from .peers import dist_version

KINDS = ("input", "filter")


def _tf():
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def _tf_padding(layer, p) -> tuple[str, list]:
    if isinstance(layer.padding, str):
        return layer.padding.upper(), []
    return "EXPLICIT", [0, 0, p.PT, p.PB, p.PL, p.PR, 0, 0]


def tf_gradient(tf, kind: str, layer, p, x, w, dy):
    """A zero-argument callable running TF's CPU gradient op for `kind`, or a string saying why none."""
    strides, dilations = [1, p.SH, p.SW, 1], [1, p.DH, p.DW, 1]
    padding, explicit = _tf_padding(layer, p)
    xs, ws = tf.constant(x.shape, tf.int32), tf.constant(w.shape, tf.int32)
    xt, wt, dyt = tf.constant(x), tf.constant(w), tf.constant(dy)
    if p.G == 1:
        if kind == "input":
            return lambda: tf.raw_ops.Conv2DBackpropInput(input_sizes=xs, filter=wt, out_backprop=dyt, strides=strides,
                                                          padding=padding, explicit_paddings=explicit,
                                                          dilations=dilations)
        return lambda: tf.raw_ops.Conv2DBackpropFilter(input=xt, filter_sizes=ws, out_backprop=dyt, strides=strides,
                                                       padding=padding, explicit_paddings=explicit, dilations=dilations)
    if p.CG == 1:  # depthwise: TF's filters are [KH, KW, C, multiplier]
        wd = tf.constant(w.reshape(p.KH, p.KW, p.C, p.KG))
        wds = tf.constant(wd.shape, tf.int32)
        if kind == "input":
            return lambda: tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
                input_sizes=xs, filter=wd, out_backprop=dyt, strides=strides, padding=padding,
                explicit_paddings=explicit, dilations=dilations)
        return lambda: tf.reshape(tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
            input=xt, filter_sizes=wds, out_backprop=dyt, strides=strides, padding=padding,
            explicit_paddings=explicit, dilations=dilations), w.shape)
    return f"TensorFlow has no CPU gradient kernel for grouped convolutions (G={p.G})"


def gpuconv_gradient(kind: str, layer, x, w, dy):
    args = (layer.stride, layer.padding, "NHWC", layer.dilation)
    if kind == "input":
        return lambda: gpuconv.conv2d_backprop_input(x.shape, w, dy, *args, backend="numpy")
    return lambda: gpuconv.conv2d_backprop_filter(x, w.shape, dy, *args, backend="numpy")


def run_layer(layer, case, repeats: int, warmup: int, max_seconds: float) -> dict:
    """Both gradients of one layer: gpuconv-numpy and tf-cpu, validated against each other, then timed
    together in rounds (the forward section's time_rounds)."""
    from .runner import _stats, time_rounds
    p, x, w = case.p, case.x, case.w
    rng = np.random.default_rng(7)
    dy = rng.standard_normal(p.output_shape, dtype=np.float32).astype(x.dtype)
    tf = _tf()
    out = {"name": layer.name, "flops": p.flops, "problem": p.describe()}
    for kind in KINDS:
        res = {}
        ours = gpuconv_gradient(kind, layer, x, w, dy)
        theirs = tf_gradient(tf, kind, layer, p, x, w, dy) if tf is not None else "TensorFlow is not installed"
        got = ours()
        if callable(theirs):
            try:
                want = np.asarray(theirs()).astype(np.float64)
            except Exception as e:  # e.g. TF's CPU kernels refuse dilation > 1 in some gradients
                theirs = f"TensorFlow refused it: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
        runs = [ours]
        if callable(theirs):
            scale = float(np.abs(want).max()) or 1.0
            res["max_abs_diff_to_tf_relative"] = float(np.abs(got.astype(np.float64) - want).max()) / scale
            runs.append(theirs)
        else:
            res["tf_not_run"] = theirs
        samples = time_rounds(runs, [repeats] * len(runs), [warmup] * len(runs), max_seconds)
        res["gpuconv-numpy"] = _stats(samples[0], 1.0)
        res["tf-cpu"] = _stats(samples[1], 1.0) if len(samples) > 1 else None
        res["ratio_to_tf"] = (res["gpuconv-numpy"]["median"] / res["tf-cpu"]["median"]) if res["tf-cpu"] else None
        out[kind] = res
    return out


def summarise(layers: list[dict]) -> dict:
    """Per gradient: the geometric mean of gpuconv / TF over the layers TF ran, and the worst layer."""
    out = {}
    for kind in KINDS:
        ratios = [(lr["name"], lr[kind]["ratio_to_tf"]) for lr in layers if lr[kind]["ratio_to_tf"]]
        if not ratios:
            out[kind] = None
            continue
        worst = max(ratios, key=lambda r: r[1])
        out[kind] = {"layers_timed": len(ratios),
                     "geomean_ratio_to_tf": float(math.exp(statistics.fmean(math.log(r) for _, r in ratios))),
                     "worst_layer": {"layer": worst[0], "ratio_to_tf": worst[1]},
                     "layers_above_1_5x_tf": [n for n, r in ratios if r > 1.5]}
    return out


def section(layers: list[dict]) -> dict:
    return {"method": "median of repeated calls on prebuilt inputs, both timed together in rounds (the forward "
                      "section's timer); gpuconv's "
                      "NumPy backend (conv2d_backprop_input / _filter) against tf.raw_ops' gradient ops on the "
                      "CPU; max_abs_diff_to_tf_relative: max |gpuconv - TF| / max |TF|",
            "tensorflow": dist_version("tensorflow", "tensorflow-cpu"),
            "layers": layers, "summary": summarise(layers)}


def _ms(stats: Optional[dict]) -> str:
    return "-" if not stats else f"{stats['median'] * 1e3:.3g}"


def print_section(sec: dict, console) -> None:
    from rich.table import Table
    table = Table(title="conv2d gradients: gpuconv numpy vs TF-CPU (median ms)")
    for col in ("layer", "input: gpuconv", "input: TF", "/ TF", "filter: gpuconv", "filter: TF", "/ TF"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for lr in sec["layers"]:
        cells = [lr["name"]]
        for kind in KINDS:
            r = lr[kind]
            cells += [_ms(r["gpuconv-numpy"]), _ms(r["tf-cpu"]),
                      "-" if r["ratio_to_tf"] is None else f"{r['ratio_to_tf']:.2f}x"]
        table.add_row(*cells)
    console.print(table)
    for kind, s in sec["summary"].items():
        if s:
            console.print(f"{kind} gradient: geometric mean time / TF = {s['geomean_ratio_to_tf']:.2f} over "
                          f"{s['layers_timed']} layers; worst {s['worst_layer']['layer']} "
                          f"({s['worst_layer']['ratio_to_tf']:.2f}x)")
