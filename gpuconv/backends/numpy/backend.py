"""The NumPy backend: picks an algorithm per problem and runs it, splitting the batch over worker
threads for the algorithms that ask for them (see threads.py)."""
from __future__ import annotations

import numpy as np

from ...dtypes import accumulator
from ...nonfinite import add_nonfinite_terms, split_filters
from ...problem import ConvProblem
from ..base import Algorithm, Backend, pick_first
from . import gradients, threads
from .depthwise import Depthwise
from .gemm import Im2colGemm
from .pointwise import Pointwise
from .winograd import Winograd, bundle_size

# auto's Winograd limits (see NumpyBackend.choose): output side and 2x2 output tiles over the batch
WINOGRAD_MIN_SIDE = 14
WINOGRAD_MIN_TILES = 256


class NumpyBackend(Backend):
    name = "numpy"
    summary = "NumPy + BLAS on the CPU; any host"
    xp = np                                  # the array module, as the CUDA backends name theirs

    def __init__(self):
        self._algos: dict[str, Algorithm] = {
            a.name: a for a in (Pointwise(), Depthwise(), Im2colGemm(), Winograd())}

    def algorithms(self):
        return dict(self._algos)

    def gradient_algorithms(self, which: str) -> dict[str, Algorithm]:
        """The algorithms of the "input" or "filter" gradient (gradients.py)."""
        return dict(gradients.INPUT if which == "input" else gradients.FILTER)

    def gradient_auto_rule(self, which: str) -> str:
        return gradients.AUTO_RULES[which]

    def choose_gradient(self, which: str, p: ConvProblem) -> Algorithm:
        return gradients.choose(which, p)

    def auto_rule(self) -> str:
        return ("pointwise for 1x1/stride 1/unpadded; depthwise when CG=1; winograd for 3x3 stride-1 "
                "undilated layers whose per-GEMM reduction (input channels of a bundle of groups) is >= 16, "
                f"whose output is at least {WINOGRAD_MIN_SIDE} pixels on each side and at least "
                f"{WINOGRAD_MIN_TILES} 2x2 tiles in all; gemm otherwise")

    def choose(self, p: ConvProblem) -> Algorithm:
        order = [self._algos[n] for n in ("pointwise", "depthwise", "winograd", "gemm")]
        # With a handful of input channels (the seed case's RGB, C = 3) Winograd's GEMMs have a
        # reduction of 3 and run far from peak, while im2col's reduction is 9x longer: measured 2x
        # slower than gemm at C = 3, faster from C = 16 up (bench/tune_numpy.py).
        # Small images: F(2x2,3x3) tiles round 7x7 up to 8x8 (31% more work) and few tiles leave its
        # transforms and 16 GEMMs short: measured 1.2-1.9x gemm's time at 7x7 (N = 1, 8, 32) and at 14x14
        # with N = 1, 0.5-0.63x at 14x14 and 28x28 with N = 8 (C = K = 128-512, 2-core AVX2 host).
        tiles = p.N * -(-p.OH // 2) * -(-p.OW // 2)
        if bundle_size(p) * p.CG < 16 or min(p.OH, p.OW) < WINOGRAD_MIN_SIDE or tiles < WINOGRAD_MIN_TILES:
            order.remove(self._algos["winograd"])
        return pick_first(order, p, self.auto_rule())

    def owns(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def run(self, p, x, w, algorithm):
        algo = self.choose(p) if algorithm == "auto" else self._algos[algorithm]
        out = np.empty(p.output_shape, p.dtype)
        if not p.is_empty:
            self._run(p, x, w, algo, out)
        return out

    def run_into(self, p: ConvProblem, x, w, algo, out) -> None:
        """One forward convolution into `out` (p.output_shape, p.dtype), with conv2d's handling of
        non-finite filter values (a padding zero times inf adds nothing), as the CUDA backends' run_into."""
        w_finite, bad = split_filters(w)
        self._run(p, x, w_finite, algo, out)
        if len(bad):
            add_nonfinite_terms(p, x, w, out, bad)

    @staticmethod
    def _run(p, x, w, algo, out) -> None:
        # The filters in the accumulator type once, before the batch split: every worker reads this copy.
        x, w = np.asarray(x), np.ascontiguousarray(w, dtype=accumulator(p.dtype))
        workers = getattr(algo, "workers", lambda p: 1)(p)
        threads.map_batch(p, workers, lambda q, n0, n1: algo.run(q, x[n0:n1], w, out[n0:n1]))
