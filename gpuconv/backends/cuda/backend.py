"""What the two CUDA backends share: the algorithms, output allocation, and dispatch."""
from __future__ import annotations

from ...problem import ConvProblem
from ..base import Backend, pick_first


EMULATED_ARCH = (8, 0)


class CudaBackend(Backend):
    """A backend that runs kernels/*.cu; subclasses provide `xp` (array module) and `launch`."""

    xp = None
    nonfinite_on_device = True

    def __init__(self):
        from .algorithms import make_algorithms
        from .gradients import make_gradient_algorithms
        self._algos = make_algorithms(self)
        self._grad_algos = make_gradient_algorithms(self)

    def algorithms(self):
        return dict(self._algos)

    def gradient_algorithms(self, which: str):
        """The algorithms of the "input" or "filter" gradient."""
        return dict(self._grad_algos[which])

    def gradient_auto_rule(self, which: str) -> str:
        from .gradients import AUTO_RULES
        return AUTO_RULES[which]

    def choose_gradient(self, which: str, p: ConvProblem):
        from .gradients import auto_order
        return pick_first(auto_order(self._grad_algos[which], which, p), p, self.gradient_auto_rule(which))

    def auto_rule(self) -> str:
        from .algorithms import AUTO_RULE
        return AUTO_RULE

    def choose(self, p: ConvProblem):
        from .algorithms import auto_order
        return pick_first([self._algos[n] for n in auto_order(p)], p, self.auto_rule())

    # element dtype -> dtype of the arrays that hold it, where the array module lacks the type
    storage: dict = {}

    def storage_dtype(self, dtype):
        return self.storage.get(dtype, dtype)

    def launch(self, launch) -> None:
        raise NotImplementedError

    def device_identity(self) -> dict:
        """name, compute_capability, runtime, driver (strings) of the device that runs the kernels."""
        raise NotImplementedError

    def compute_capability(self) -> tuple[int, int]:
        """The architecture algorithms are chosen for: the current device's (cupy); the emulator states
        EMULATED_ARCH, sm_80: its host builds take every sm_80+ code path (cp.async pipelines, bf16 and
        TF32 tensor-core fragments), and nothing they run is specific to a newer one."""
        return EMULATED_ARCH

    def shared_limit(self) -> int:
        """Shared memory (bytes, static + dynamic) a block may use on the current device with the opt-in:
        algorithms offer larger tiles only where it allows them. The emulator: what every GPU allows."""
        from .launch import PORTABLE_LIMITS
        return PORTABLE_LIMITS.shared_optin

    @staticmethod
    def headers_reason():
        """None when CUDA's half-precision headers are found (every kernel file includes them), else why."""
        from .sources import CudaHeadersNotFound, cuda_include_dirs
        try:
            cuda_include_dirs()
        except CudaHeadersNotFound as e:
            return str(e)
        return None

    def to_device(self, a, dtype):
        stored = self.storage_dtype(dtype)
        if stored != dtype:  # reinterpret the bits where they are: a device array stays on the device
            a = a.view(stored)
        return self.xp.ascontiguousarray(self.xp.asarray(a))

    def run(self, p: ConvProblem, x, w, algorithm):
        """algorithm: "auto", a name, or a configured CudaAlgorithm (a variant, as the autotuner picks).
        Non-finite filter values are handled on the device (nonfinite_launch.py): nothing here waits
        for the device or reads its memory."""
        if isinstance(algorithm, str):
            algo = self.choose(p) if algorithm == "auto" else self._algos[algorithm]
        else:
            algo = algorithm
        out = self.xp.empty(p.output_shape, self.storage_dtype(p.dtype))
        if not p.is_empty:
            self.run_into(p, self.to_device(x, p.dtype), self.to_device(w, p.dtype), algo, out)
        return self._returned(out, x, p.dtype)

    def run_into(self, p: ConvProblem, xd, wd, algo, out) -> None:
        """One forward convolution of device arrays into `out` (p.output_shape, the storage dtype), with
        conv2d's handling of non-finite filter values (a padding zero times inf adds nothing)."""
        from .nonfinite_launch import add_nonfinite_terms, zeroed_filters
        w_finite, flag = zeroed_filters(self, p, wd)
        algo.run(p, xd, w_finite, out)
        add_nonfinite_terms(self, p, xd, wd, out, flag)

    def run_gradient(self, algo, p: ConvProblem, a, dy, shape: tuple):
        """One gradient (algo from gradient_algorithms) of the result's `shape` (in p's layout), from the
        other operand `a` (filters for the input gradient, input for the filter gradient) and dy."""
        out = self.xp.empty(shape, self.storage_dtype(p.dtype))
        algo.run(p, self.to_device(a, p.dtype), self.to_device(dy, p.dtype), out)
        return self._returned(out, dy, p.dtype)

    def _returned(self, out, like, dtype):
        if self.storage_dtype(dtype) != dtype:
            # a device array of the type (CuPy 14's bfloat16) gets one back; host input, a host result
            return out.view(like.dtype) if self.owns(like) else out.get().view(dtype)
        return out
