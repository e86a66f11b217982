"""What a backend and an algorithm are.

A backend owns an array module (NumPy, CuPy, ...) and a set of algorithms. Every algorithm answers
`why_not(problem)`: None when it can run the problem, else the reason in words. The dispatcher,
`algorithm="auto"`, the tests' skips and the benchmarks all use that one answer.
"""
from __future__ import annotations

from typing import Optional

from ..problem import ConvProblem


class Algorithm:
    name: str = ""
    summary: str = ""

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None

    def run(self, p: ConvProblem, x, w, out):
        """Write conv(x, w) into `out` (shape p.output_shape, dtype p.dtype); x, w contiguous."""
        raise NotImplementedError


class Backend:
    name: str = ""
    summary: str = ""
    # True when run() itself gives non-finite filter values their tf.nn.conv2d meaning (the CUDA
    # backends, on the device); else conv2d does it around run() (gpuconv/nonfinite.py).
    nonfinite_on_device: bool = False

    def unavailable_reason(self) -> Optional[str]:
        """None when usable on this host, else why not."""
        return None

    def algorithms(self) -> dict[str, Algorithm]:
        raise NotImplementedError

    def auto_rule(self) -> str:
        """The documented rule `algorithm="auto"` follows, in words."""
        return ""

    def choose(self, p: ConvProblem) -> Algorithm:
        raise NotImplementedError

    def gradient_algorithms(self, which: str) -> dict[str, Algorithm]:
        """The algorithms of the "input" or "filter" gradient of conv2d."""
        raise NotImplementedError

    def gradient_auto_rule(self, which: str) -> str:
        return ""

    def choose_gradient(self, which: str, p: ConvProblem) -> Algorithm:
        raise NotImplementedError

    def owns(self, array) -> bool:
        """True when `array` lives in this backend's memory (e.g. a CuPy array for "cupy")."""
        return False

    def run(self, p: ConvProblem, x, w, algorithm: str):
        """Convert inputs to this backend, run, and return in the array type the caller gave."""
        raise NotImplementedError


def pick_first(candidates: list[Algorithm], p: ConvProblem, rule: str) -> Algorithm:
    """The first algorithm of `candidates` that can run p, or an error that gives every reason."""
    reasons = []
    for algo in candidates:
        why = algo.why_not(p)
        if why is None:
            return algo
        reasons.append(f"{algo.name}: {why}")
    raise ValueError(f"no algorithm can run {p.describe()} ({rule}): " + "; ".join(reasons))

