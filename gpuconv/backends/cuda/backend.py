"""What the two CUDA backends share: the algorithms, output allocation, and dispatch."""
from __future__ import annotations

from ...problem import ConvProblem
from ..base import Backend, pick_first


EMULATED_ARCH = (8, 0)


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

    # element dtype -> dtype of the arrays that hold it, where the array module lacks the type
    storage: dict = {}

    def storage_dtype(self, dtype):
        return self.storage.get(dtype, dtype)

    def launch(self, launch) -> None:
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

    def run(self, p: ConvProblem, x, w, algorithm: str):
        algo = self.choose(p) if algorithm == "auto" else self._algos[algorithm]
        out = self.xp.empty(p.output_shape, self.storage_dtype(p.dtype))
        if not p.is_empty:
            algo.run(p, self.to_device(x, p.dtype), self.to_device(w, p.dtype), out)
        if self.storage_dtype(p.dtype) != p.dtype:
            # a device array of the type (CuPy 14's bfloat16) gets one back; host input, a host result
            return out.view(x.dtype) if self.owns(x) else out.get().view(p.dtype)
        return out
