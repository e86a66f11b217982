"""The autotuner: time every configuration of every CUDA algorithm that can run a problem, on the
device that will run it, and keep the fastest in the persistent cache (tune_cache.py).

Timing: on "cupy", CUDA events recorded on the current stream around each run (warm-up runs first,
then the median of `repeats`); on "emulator", time.perf_counter (its times say nothing about a GPU,
but the whole mechanism runs). Before a candidate's time counts, its output is compared with the
output of the default configuration of the algorithm `auto` picks, within the rounding bound of two
correct sums of the same products; a candidate outside it (or one that fails) is excluded and reported.

conv2d uses the cache only when autotuning is on (conv2d(..., autotune=True) or GPUCONV_AUTOTUNE=1):
a miss tunes that problem once (this call then waits for the device) and stores the winner; a hit
runs the stored configuration.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import numbers
import statistics
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from . import tune_cache
from .dtypes import SUPPORTED, accumulator, unit_roundoff
from .problem import ConvProblem, parse_problem

CUDA_BACKENDS = ("cupy", "emulator")
C_ACC = 2.0   # the accumulation constant of tests/tolerances.py: c' * u_acc * sqrt(R) * (|x| conv |w|)


@dataclasses.dataclass
class Candidate:
    algorithm: str
    variant: str
    times_s: list = dataclasses.field(default_factory=list)
    rejected: Optional[str] = None      # why it was excluded: a wrong result, or an error

    @property
    def median_s(self) -> Optional[float]:
        return statistics.median(self.times_s) if self.times_s and self.rejected is None else None


@dataclasses.dataclass
class TuneResult:
    problem: ConvProblem
    backend: str
    device: dict
    candidates: list
    winner: Candidate
    cache_file: Optional[Path]

    def __str__(self) -> str:
        lines = [f"{self.problem.describe()} on {self.backend} ({self.device['name']}):"]
        for c in sorted(self.candidates, key=lambda c: (c.median_s is None, c.median_s or 0.0)):
            mark = "*" if c is self.winner else " "
            what = f"{c.median_s * 1e3:10.3f} ms" if c.median_s is not None else f"  rejected: {c.rejected}"
            lines.append(f" {mark} {c.algorithm:10s} {c.variant:55s} {what}")
        return "\n".join(lines)


def _is_shape(a) -> bool:
    return isinstance(a, (tuple, list)) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                                for v in a)


def _shape_and_dtype(name: str, a, dtype):
    if _is_shape(a):
        return tuple(int(v) for v in a), dtype
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return tuple(a.shape), np.dtype(a.dtype)
    raise TypeError(f"{name}={a!r} is not allowed: expected a shape (a tuple of ints) or an array")


def _cuda_backend(backend):
    from .backends import check_backend_name, get_backend, unusable_reason
    if backend is None:
        name = next((b for b in CUDA_BACKENDS if unusable_reason(b) is None), None)
        if name is None:
            raise ValueError("backend=None is not allowed here: neither the cupy nor the emulator backend is "
                             f"usable ({unusable_reason('cupy')}; {unusable_reason('emulator')})")
        return get_backend(name)
    if not isinstance(backend, str):
        raise TypeError(f"backend={backend!r} is not allowed: expected None or one of {list(CUDA_BACKENDS)}")
    check_backend_name(backend)
    if backend not in CUDA_BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed: tuning covers the CUDA backends "
                         f"{list(CUDA_BACKENDS)} (or None: cupy when usable, else emulator)")
    why = unusable_reason(backend)
    if why is not None:
        raise ValueError(f"backend={backend!r} is not usable on this host: {why}")
    return get_backend(backend)


def _count(name: str, value, least: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name}={value!r} is not allowed: expected an int >= {least}")
    return int(value)


def tune(input, filters, strides=1, padding="VALID", data_format="NHWC", dilations=None, *,
         backend: Optional[str] = None, dtype=None, repeats: int = 5, warmup: int = 1,
         store: bool = True) -> TuneResult:
    """Time every configuration of every CUDA algorithm that can run this conv2d problem and cache the
    fastest (the arguments of gpuconv.conv2d; input and filters as arrays or shapes).

    dtype: the element type when shapes are given (default float32); arrays bring theirs.
    backend: "cupy", "emulator", or None (cupy when usable, else the emulator).
    repeats: timed runs per candidate (the median counts); warmup: untimed runs before them.
    store: write the winner to the cache (gpuconv.tune_cache.cache_path()).
    Random inputs of the problem's shape are used, never the arrays' values."""
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype={dtype!r} is not allowed: expected one of "
                            f"{[np.dtype(d).name for d in SUPPORTED]}") from None
    xs, xdt = _shape_and_dtype("input", input, dtype or np.dtype(np.float32))
    ws, wdt = _shape_and_dtype("filters", filters, dtype or xdt)
    for name, got in (("input", xdt), ("filters", wdt)):
        if dtype is not None and got != dtype:
            raise ValueError(f"dtype={dtype.name!r} is not allowed with {name} of dtype {got}: expected "
                             f"None or {got}")
    p, _ = parse_problem(xs, xdt, ws, wdt, strides, padding, data_format, dilations)
    be = _cuda_backend(backend)
    return tune_problem(be, p, _count("repeats", repeats, 1), _count("warmup", warmup, 0), store)


def _inputs(p: ConvProblem):
    """Seeded inputs of even magnitude, in p's dtype, on the host."""
    rng = np.random.default_rng(0)
    return (rng.uniform(-1, 1, p.input_shape).astype(p.dtype), rng.uniform(-1, 1, p.filter_shape).astype(p.dtype))


def _to_host(a, dtype) -> np.ndarray:
    host = a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)
    return host.view(dtype).astype(np.float64)


def _tolerance(p: ConvProblem, x, w) -> np.ndarray:
    """How far two correct results of p may be apart: twice one result's rounding bound (final
    rounding + accumulation in the accumulator type, as tests/tolerances.py bounds it)."""
    from .reference import abs_conv_bound
    scale = abs_conv_bound(x, w, p)
    u, u_acc = unit_roundoff(np.dtype(p.dtype)), unit_roundoff(accumulator(p.dtype))
    return 2 * ((u + C_ACC * u_acc * math.sqrt(p.R)) * scale) + np.finfo(np.float32).tiny


class _EventTimer:
    """CUDA events on CuPy's current stream around each run."""

    def __init__(self, cupy):
        self.cupy = cupy

    def __call__(self, run) -> float:
        cuda = self.cupy.cuda
        stream = cuda.get_current_stream()
        start, end = cuda.Event(), cuda.Event()
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        return cuda.get_elapsed_time(start, end) / 1e3


def _perf_counter_timer(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _timer(be):
    return _EventTimer(be.xp) if be.name == "cupy" else _perf_counter_timer


def candidates_of(be, p: ConvProblem) -> list:
    """The default (what `auto` runs untuned) first, then every variant of every algorithm that can run p."""
    default = be.choose(p).variants(p)[0]
    out, seen = [default], {(default.name, default.variant_key)}
    for algo in be.algorithms().values():
        if algo.why_not(p) is not None:
            continue
        for v in algo.variants(p):
            if (v.name, v.variant_key) not in seen:
                seen.add((v.name, v.variant_key))
                out.append(v)
    return out


def tune_problem(be, p: ConvProblem, repeats: int = 5, warmup: int = 1, store: bool = True) -> TuneResult:
    """tune() for a parsed problem on a CUDA backend object."""
    if p.is_empty:
        raise ValueError(f"the problem {p.describe()} has an empty input or output: nothing to tune")
    xh, wh = _inputs(p)
    x, w = be.to_device(xh, p.dtype), be.to_device(wh, p.dtype)
    timer = _timer(be)
    algos = candidates_of(be, p)
    results, reference, bound = [], None, None
    for algo in algos:
        c = Candidate(algo.name, algo.variant_key)
        results.append(c)
        out = be.xp.empty(p.output_shape, be.storage_dtype(p.dtype))
        try:
            for _ in range(warmup):
                algo.run(p, x, w, out)
            c.times_s = [timer(lambda: algo.run(p, x, w, out)) for _ in range(repeats)]
            y = _to_host(out, p.dtype)
        except Exception as e:  # a failed build (NVRTC's own exception type) or launch: that candidate only
            c.rejected = f"failed: {e}"
            continue
        if reference is None:                      # the default configuration: the yardstick
            reference, bound = y, _tolerance(p, xh, wh)
            continue
        err = np.abs(y - reference)
        if not (err <= bound).all():
            worst = np.unravel_index(np.argmax(np.where(np.isfinite(err), err - bound, np.inf)), err.shape)
            c.rejected = (f"wrong result: differs from {algos[0].name} {algos[0].variant_key} by {err[worst]:.3g} "
                          f"at {tuple(int(i) for i in worst)} (bound {bound[worst]:.3g})")
    if reference is None:
        raise RuntimeError(f"the default configuration failed on {p.describe()}: {results[0].rejected}")
    timed = [c for c in results if c.median_s is not None]
    winner = min(timed, key=lambda c: c.median_s)
    result = TuneResult(p, be.name, be.device_identity(), results, winner, None)
    if store:
        algo = next(a for a in algos if (a.name, a.variant_key) == (winner.algorithm, winner.variant))
        _store(be, result.device, p, algo, result)
        _remember(be, result.device, p, algo)
    return result


def _store(be, device: dict, p: ConvProblem, algo, result: TuneResult) -> None:
    sig = tune_cache.problem_signature(p)
    entry = {"backend": be.name, "device": device, "source_hash": algo.source_hash(), "problem": sig,
             "algorithm": algo.name, "variant": algo.variant_key, "median_ms": result.winner.median_s * 1e3,
             "rejected": {f"{c.algorithm} {c.variant}": c.rejected for c in result.candidates if c.rejected},
             "tuned_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    result.cache_file = tune_cache.store(tune_cache.entry_key(be.name, device, sig), entry)


# conv2d's lookups: (backend, device, problem) -> configured algorithm, once per process.
_memo: dict = {}
_memo_lock = threading.Lock()


def _memo_key(be, device: dict, p: ConvProblem) -> tuple:
    return be.name, tuple(sorted(device.items())), tune_cache.signature_text(tune_cache.problem_signature(p))


def _remember(be, device: dict, p: ConvProblem, algo) -> None:
    with _memo_lock:
        _memo[_memo_key(be, device, p)] = algo


def clear_memo() -> None:
    """Forget the winners this process has looked up (the cache file is read again)."""
    with _memo_lock:
        _memo.clear()


def lookup(be, p: ConvProblem, device: Optional[dict] = None):
    """The cached winner for p on this device as a configured algorithm, or None (missing or stale)."""
    device = be.device_identity() if device is None else device
    sig = tune_cache.problem_signature(p)
    entry = tune_cache.read().get(tune_cache.entry_key(be.name, device, sig))
    if entry is None or entry.get("problem") != sig or tune_cache.stale_reason(entry, be, device) is not None:
        return None
    algo = be.algorithms()[entry["algorithm"]]
    return next(v for v in algo.variants(p) if v.variant_key == entry["variant"])


def tuned_algorithm(be, p: ConvProblem):
    """What conv2d runs for p with autotuning on: the remembered or cached winner, else tune p now."""
    device = be.device_identity()
    key = _memo_key(be, device, p)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is not None:
        return hit
    algo = lookup(be, p, device)
    if algo is None:
        result = tune_problem(be, p, store=False)
        winner = result.winner
        algo = next(v for v in candidates_of(be, p) if (v.name, v.variant_key) == (winner.algorithm, winner.variant))
        _store(be, device, p, algo, result)
    _remember(be, device, p, algo)
    return algo
