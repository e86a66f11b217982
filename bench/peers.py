"""Everything the benchmark times: gpuconv's backends/algorithms, the frameworks, the seed approaches.

Each implementation prepares one layer once (inputs converted and placed on its device, functions traced
or jitted) and hands back a `Prepared`: a call that runs the convolution and returns only when the result
is complete (synchronised on GPUs), plus how to turn that result into a NumPy array for validation.
Frameworks are imported lazily, on first use; a missing one is reported as "not installed".
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
from typing import Any, Callable, Optional

import numpy as np

import gpuconv
from gpuconv.backends import available_backends, get_backend
from gpuconv.problem import ConvProblem

from . import seeds
from .layers import Layer

TRACEMALLOC = "tracemalloc"


@dataclasses.dataclass
class Case:
    """One layer at one dtype: the problem and its inputs, shared by every implementation."""
    layer: Layer
    p: ConvProblem
    x: np.ndarray                 # NHWC, in the benchmark dtype
    w: np.ndarray                 # HWIO

    @property
    def strides(self) -> tuple:
        return (self.p.SH, self.p.SW)

    @property
    def dilations(self) -> tuple:
        return (self.p.DH, self.p.DW)

    @property
    def pads(self) -> tuple:
        """Explicit (before, after) pads per spatial dim, as resolved by gpuconv (SAME = TF's rule)."""
        return ((self.p.PT, self.p.PB), (self.p.PL, self.p.PR))

    @property
    def tf_padding(self):
        """The layer's padding as tf.nn.conv2d takes it ("SAME", "VALID" or explicit NHWC pairs)."""
        pad = self.layer.padding
        return pad if isinstance(pad, str) else [[0, 0], list(self.pads[0]), list(self.pads[1]), [0, 0]]


@dataclasses.dataclass
class Prepared:
    run: Callable[[], Any]                      # the timed call; returns the (completed) result
    to_numpy: Callable[[Any], np.ndarray]       # result -> NumPy array comparable with `expected(ref)`
    expected: Callable[[np.ndarray], np.ndarray] = lambda ref: ref   # the part of the reference it computes
    time_scale: float = 1.0                     # full-layer time = measured time * time_scale
    note: Optional[str] = None                  # e.g. how an extrapolation was made
    max_repeats: Optional[int] = None           # cap for very slow implementations


class Impl:
    name: str = ""
    kind: str = ""            # "gpuconv", "framework" or "seed"
    device: str = "cpu"
    # How peak extra memory is measured: TRACEMALLOC, or the reason it is not measured.
    memory: str = TRACEMALLOC

    def unavailable(self) -> Optional[str]:
        """None when this implementation can run on this host, else why not (checked once per run)."""
        return None

    def why_not(self, case: Case) -> Optional[str]:
        """None when it can run this layer at this dtype, else why not."""
        return None

    def prepare(self, case: Case) -> Prepared:
        raise NotImplementedError

    def versions(self) -> dict:
        return {}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def dist_version(*names: str) -> Optional[str]:
    """Version of the first installed distribution among `names` (e.g. tensorflow or tensorflow-cpu)."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


# --- gpuconv ---------------------------------------------------------------------------------------------

class Gpuconv(Impl):
    kind = "gpuconv"

    def __init__(self, backend: str, algorithm: str = "auto"):
        self.backend, self.algorithm = backend, algorithm
        self.name = f"gpuconv-{backend}" + ("" if algorithm == "auto" else f":{algorithm}")
        self.device = "gpu" if backend == "cupy" else "cpu"
        if backend == "cupy":
            self.memory = "not measured: CuPy's memory pool records no peak"
        elif backend == "emulator":
            self.memory = "not measured: the emulator's memory is not the GPU kernels' memory"

    def unavailable(self):
        return available_backends().get(self.backend, f"unknown backend {self.backend!r}")

    def why_not(self, case):
        be = get_backend(self.backend)
        if self.algorithm == "auto":
            try:
                be.choose(case.p)
            except ValueError as e:
                return str(e)
            return None
        algos = be.algorithms()
        if self.algorithm not in algos:
            return f"backend {self.backend!r} has no algorithm {self.algorithm!r} (it has {sorted(algos)})"
        return algos[self.algorithm].why_not(case.p)

    def prepare(self, case):
        x, w = case.x, case.w
        kwargs = dict(strides=case.strides, padding=case.tf_padding, dilations=case.dilations,
                      backend=self.backend, algorithm=self.algorithm)
        if self.backend != "cupy":
            return Prepared(run=lambda: gpuconv.conv2d(x, w, **kwargs), to_numpy=np.asarray)
        import cupy
        xd, wd = cupy.asarray(x), cupy.asarray(w)
        device = cupy.cuda.Device()

        def run():
            y = gpuconv.conv2d(xd, wd, **kwargs)
            device.synchronize()               # whatever stream the kernels went to
            return y
        return Prepared(run=run, to_numpy=cupy.asnumpy)

    def chosen(self, case) -> Optional[str]:
        """The algorithm "auto" picks for this layer (shown in the table)."""
        if self.algorithm != "auto":
            return self.algorithm
        return get_backend(self.backend).choose(case.p).name


def gpuconv_impls(spec: str) -> list[Gpuconv]:
    """'numpy' (algorithm auto), 'numpy:gemm', or 'cupy:all' (one entry per algorithm of the backend)."""
    backend, _, algorithm = spec.partition(":")
    if backend not in available_backends():
        raise ValueError(f"--backends entry {spec!r}: backend {backend!r} is not one of "
                         f"{sorted(available_backends())}")
    if algorithm == "all":
        if available_backends()[backend] is not None:
            return [Gpuconv(backend, "all")]               # reported once as unavailable
        return [Gpuconv(backend, name) for name in get_backend(backend).algorithms()]
    if algorithm and available_backends()[backend] is None and algorithm not in get_backend(backend).algorithms():
        raise ValueError(f"--backends entry {spec!r}: backend {backend!r} has no algorithm {algorithm!r}; "
                         f"expected one of {sorted(get_backend(backend).algorithms())}, 'all' or none (auto)")
    return [Gpuconv(backend, algorithm or "auto")]


# --- TensorFlow ------------------------------------------------------------------------------------------

def _quiet_tensorflow():
    # oneDNN / CPU-feature banners would interleave with the progress bar; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class TensorFlow(Impl):
    kind = "framework"
    memory = "not measured: TensorFlow allocates through its own allocator, invisible to tracemalloc"

    def __init__(self, device: str):
        self.device = device
        self.name = f"tf-{device}"

    def unavailable(self):
        if not _installed("tensorflow"):
            return "not installed (pip install tensorflow-cpu, or tensorflow for the GPU)"
        _quiet_tensorflow()
        import tensorflow as tf        # imported here, before the progress bar, so its banner prints first
        if self.device == "gpu" and not tf.config.list_physical_devices("GPU"):
            return "TensorFlow sees no GPU"
        return None

    def prepare(self, case):
        _quiet_tensorflow()
        import tensorflow as tf
        dev = "/GPU:0" if self.device == "gpu" else "/CPU:0"
        with tf.device(dev):
            x, w = tf.constant(case.x), tf.constant(case.w)
        padding = case.tf_padding
        p = case.p
        # A depthwise layer as a TF user writes it (Keras' DepthwiseConv2D): tf.nn.depthwise_conv2d, 10-30x
        # faster on a 2-core AVX2 host than tf.nn.conv2d with C groups. It takes equal strides only, and
        # no stride together with a dilation.
        depthwise = (p.CG == 1 and p.G > 1 and p.SH == p.SW and p.DH == p.DW and (p.SH == 1 or p.DH == 1))

        @tf.function(input_signature=[tf.TensorSpec(x.shape, x.dtype), tf.TensorSpec(w.shape, w.dtype)])
        def conv(a, b):
            with tf.device(dev):
                if depthwise:        # HWIO [KH, KW, 1, C*mult] -> [KH, KW, C, mult]: output k = c*mult + m
                    return tf.nn.depthwise_conv2d(a, tf.reshape(b, (p.KH, p.KW, p.C, p.KG)),
                                                  strides=[1, p.SH, p.SW, 1], padding=padding,
                                                  dilations=[p.DH, p.DW])
                return tf.nn.conv2d(a, b, strides=list(case.strides), padding=padding,
                                    dilations=list(case.dilations))

        sync = tf.test.experimental.sync_devices if self.device == "gpu" else (lambda: None)

        def run():
            y = conv(x, w)
            sync()
            return y
        return Prepared(run=run, to_numpy=lambda y: y.numpy())

    def versions(self):
        return {"tensorflow": dist_version("tensorflow", "tensorflow-cpu")}


# --- PyTorch ---------------------------------------------------------------------------------------------

class Torch(Impl):
    kind = "framework"
    memory = "not measured: PyTorch's CPU allocator (c10) is invisible to tracemalloc"

    def __init__(self, device: str):
        self.device = device
        self.name = f"torch-{device}"
        if device == "gpu":
            self.memory = "not measured: CUDA caching allocator"

    def unavailable(self):
        if not _installed("torch"):
            return "not installed (pip install torch)"
        import torch
        if self.device == "gpu" and not torch.cuda.is_available():
            return "PyTorch sees no CUDA device"
        return None

    def prepare(self, case):
        import torch
        import torch.nn.functional as F
        p = case.p
        dev = "cuda" if self.device == "gpu" else "cpu"
        if dev == "cuda":
            torch.backends.cudnn.benchmark = True          # let cuDNN pick its fastest algorithm, as users do
        tdt = getattr(torch, p.dtype.name)

        def tensor(a):
            # torch.from_numpy does not take ml_dtypes' bfloat16: go through float32 (exact) for it.
            host = a.astype(np.float32) if p.dtype.name == "bfloat16" else a
            return torch.from_numpy(np.ascontiguousarray(host)).to(dev, tdt)
        # NHWC / HWIO to PyTorch's NCHW / OIHW index order, both stored channels-last (NHWC in memory).
        x = tensor(case.x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        w = tensor(case.w).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        symmetric = p.PT == p.PB and p.PL == p.PR
        # TF's SAME puts the odd pad after (e.g. 2 before, 3 after for the 7x7/2 stem); conv2d's padding=
        # is symmetric, so such layers are padded explicitly first, as a PyTorch port of a TF model must.
        pad = (p.PL, p.PR, p.PT, p.PB)
        kw = dict(stride=case.strides, dilation=case.dilations, groups=p.G,
                  padding=(p.PT, p.PL) if symmetric else 0)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

        def run():
            with torch.inference_mode():
                y = F.conv2d(x if symmetric else F.pad(x, pad), w, None, **kw)
            sync()
            return y
        return Prepared(run=run, to_numpy=lambda y: y.permute(0, 2, 3, 1).to("cpu", torch.float64).numpy(),
                        note=None if symmetric else f"asymmetric SAME padding via F.pad{pad} inside the timed call")

    def versions(self):
        return {"torch": dist_version("torch")}


# --- JAX -------------------------------------------------------------------------------------------------

class Jax(Impl):
    kind = "framework"
    memory = "not measured: XLA's allocator is invisible to tracemalloc"

    def __init__(self, device: str):
        self.device = device
        self.name = f"jax-{device}"

    def _device(self):
        import jax
        return jax.devices("gpu" if self.device == "gpu" else "cpu")[0]

    def unavailable(self):
        if not _installed("jax"):
            return "not installed (pip install jax jaxlib; jax[cuda13] for the GPU)"
        try:
            self._device()           # also pays for the import before the progress bar starts
        except RuntimeError as e:
            return f"JAX has no {self.device.upper()} backend: {str(e).splitlines()[0]}"
        return None

    def prepare(self, case):
        import jax
        if case.p.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)     # else JAX silently computes float64 in float32
        from jax import lax
        dev = self._device()
        x, w = jax.device_put(case.x, dev), jax.device_put(case.w, dev)
        conv = jax.jit(lambda a, b: lax.conv_general_dilated(
            a, b, window_strides=case.strides, padding=list(case.pads), rhs_dilation=case.dilations,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=case.p.G))
        return Prepared(run=lambda: conv(x, w).block_until_ready(), to_numpy=np.asarray)

    def versions(self):
        return {"jax": dist_version("jax"), "jaxlib": dist_version("jaxlib")}


# --- the seed articles' approaches -----------------------------------------------------------------------

class SeedShiftMatmul(Impl):
    kind = "seed"
    name = "seed-shift-matmul"

    def prepare(self, case):
        return Prepared(run=lambda: seeds.shift_and_matmul(case.x, case.w, case.p), to_numpy=np.asarray)


class SeedPerPixel(Impl):
    kind = "seed"
    name = "seed-per-pixel"
    memory = "not measured: only a sample of the layer is computed"

    def __init__(self, budget_macs: int):
        self.budget_macs = budget_macs

    def prepare(self, case):
        p = case.p
        first, count = seeds.per_pixel_window(p, self.budget_macs)
        sampled, total = seeds.multiply_adds(p, first, count), seeds.multiply_adds(p)
        note = (f"extrapolated: timed {count} output pixel(s) of image 0 ({sampled:,} multiply-adds), "
                f"scaled by x{total / sampled:,.0f} to the layer's {total:,}")
        return Prepared(run=lambda: seeds.per_pixel(case.x, case.w, p, first, count), to_numpy=np.asarray,
                        expected=lambda ref: ref[0].reshape(-1, p.K)[first:first + count],
                        time_scale=total / sampled, note=note, max_repeats=2)


def make_peers(per_pixel_budget: int) -> dict[str, Impl]:
    """Every peer by name, in the order they are timed."""
    impls = [TensorFlow("cpu"), Torch("cpu"), Jax("cpu"), SeedShiftMatmul(), SeedPerPixel(per_pixel_budget),
             TensorFlow("gpu"), Torch("gpu"), Jax("gpu")]
    return {impl.name: impl for impl in impls}


PEER_NAMES = tuple(make_peers(1))
