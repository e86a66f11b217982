"""What the two CUDA backends share: the algorithms, output allocation, and dispatch."""
from __future__ import annotations

from ...problem import ConvProblem
from ..base import Backend, pick_first


class CudaBackend(Backend):
    """A backend that runs kernels/*.cu; subclasses provide `xp` (array module) and `launch`."""

    xp = None

    def __init__(self):
        from .algorithms import make_algorithms
        self._algos = make_algorithms(self)

    def algorithms(self):
        return dict(self._algos)

    def auto_rule(self) -> str:
        from .algorithms import AUTO_RULE
        return AUTO_RULE

    def choose(self, p: ConvProblem):
        from .algorithms import auto_order
        return pick_first([self._algos[n] for n in auto_order(p)], p, self.auto_rule())

    def launch(self, launch) -> None:
        raise NotImplementedError

    def run(self, p: ConvProblem, x, w, algorithm: str):
        xp = self.xp
        algo = self.choose(p) if algorithm == "auto" else self._algos[algorithm]
        out = xp.empty(p.output_shape, p.dtype)
        if not p.is_empty:
            algo.run(p, xp.ascontiguousarray(xp.asarray(x)), xp.ascontiguousarray(xp.asarray(w)), out)
        return out
