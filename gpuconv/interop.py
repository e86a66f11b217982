"""Arrays from other libraries in, the caller's type out, and `out=`.

Any object with `__dlpack__` (PyTorch, JAX, CuPy, NumPy >= 1.22, ...) or `__cuda_array_interface__`
(Numba, PyTorch, ...) becomes a NumPy or CuPy array *viewing the same memory*: host memory through
`numpy.from_dlpack`, CUDA memory through `cupy.from_dlpack` / `cupy.asarray`. Those importers do the
protocols' stream handshake themselves: CuPy hands its current stream to the producer's `__dlpack__`
(the producer makes that stream wait for its pending work) and synchronises on a
`__cuda_array_interface__`'s `stream` entry; host arrays take no stream (`stream=None`).

The result goes back into the caller's library where that library can import it through DLPack
(`RETURNED_AS`); other libraries get NumPy (host) or CuPy (CUDA) arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from .dtypes import bfloat16

# DLPack device types (dlpack.h, DLDeviceType)
_DL_HOST = {1: "CPU", 3: "CUDA host (pinned)"}
_DL_CUDA = {2: "CUDA", 13: "CUDA managed"}


def module_root(a) -> str:
    return type(a).__module__.split(".")[0]


def is_native(a) -> bool:
    """A NumPy or CuPy array: gpuconv computes on these directly."""
    return isinstance(a, np.ndarray) or module_root(a) == "cupy"


def is_foreign(a) -> bool:
    """An array of another library that gpuconv imports through DLPack or the CUDA array interface."""
    return not is_native(a) and (hasattr(a, "__dlpack__") or hasattr(a, "__cuda_array_interface__"))


def _cupy(name: str, a, where: str):
    try:
        import cupy
    except ImportError as e:
        raise ValueError(f"{name} of type {type(a).__name__} lives in {where} memory, which needs CuPy "
                         f"(pip install 'gpuconv[cuda13]'): {e}") from None
    return cupy


def import_array(name: str, a):
    """`a` as a NumPy or CuPy array viewing the same memory (a copy only where the producer insists)."""
    if is_native(a) or not is_foreign(a):
        return a
    if hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__"):
        dev_type, dev_id = (int(v) for v in a.__dlpack_device__())
        try:
            if dev_type in _DL_HOST:
                return np.from_dlpack(a)
            if dev_type in _DL_CUDA:
                return _cupy(name, a, _DL_CUDA[dev_type]).from_dlpack(a)
        except (RuntimeError, BufferError, TypeError) as e:
            host = _host_fallback(a) if dev_type in _DL_HOST else None
            if host is not None:
                return host
            raise TypeError(f"{name} of type {type(a).__module__}.{type(a).__name__} could not be imported "
                            f"through DLPack: {e}. Allowed: float16, float32, float64 (and bfloat16 from "
                            f"PyTorch, or from a library whose __array__ gives it, as JAX's does)") from None
        if not hasattr(a, "__cuda_array_interface__"):
            raise ValueError(f"{name} of type {type(a).__name__} lives on DLPack device ({dev_type}, {dev_id}); "
                             f"allowed: host memory (types {sorted(_DL_HOST)}) or CUDA memory "
                             f"(types {sorted(_DL_CUDA)})")
    return _cupy(name, a, "CUDA").asarray(a)  # __cuda_array_interface__: zero-copy view


def to_host(name: str, a) -> np.ndarray:
    """`a` as a NumPy array: foreign arrays imported, CuPy arrays copied to the host."""
    a = import_array(name, a)
    return a.get() if module_root(a) == "cupy" else np.asarray(a)


def _host_fallback(a) -> Optional[np.ndarray]:
    """bfloat16 has no DLPack code NumPy reads. A PyTorch CPU tensor hands its bits over as int16 (a view:
    no copy), a library whose __array__ yields ml_dtypes' bfloat16 (JAX) the array itself."""
    if module_root(a) == "torch":
        import torch
        if a.dtype != torch.bfloat16 or a.requires_grad or a.is_conj():
            return None                   # DLPack's own error says why (e.g. use tensor.detach())
        return np.from_dlpack(a.view(torch.int16)).view(bfloat16)
    if not hasattr(a, "__array__"):
        return None
    try:
        arr = np.asarray(a)
    except Exception:
        return None
    return arr if arr.dtype == bfloat16 else None


def _to_torch(y):
    import torch
    if y.dtype == bfloat16:  # NumPy cannot export bfloat16 through DLPack: its bits go as int16
        return torch.from_dlpack(y.view(np.int16)).view(torch.bfloat16)
    return torch.from_dlpack(y)


def _to_jax(y):
    import jax
    if y.dtype == bfloat16:  # NumPy cannot export bfloat16 through DLPack; JAX reads ml_dtypes' type
        return jax.numpy.asarray(y)
    return jax.dlpack.from_dlpack(y)


# the library of the caller's input -> how its result is handed back (zero-copy through DLPack)
RETURNED_AS: dict[str, Callable[[Any], Any]] = {"torch": _to_torch, "jax": _to_jax, "jaxlib": _to_jax}


@dataclasses.dataclass
class Call:
    """The arrays one public call computes on, and how its result is handed back.

    `input`/`filters` are NumPy or CuPy arrays (or the caller's nested lists, left as they were);
    `result(y)` writes y into `out` and returns `out`, or returns y in the input's library."""
    input: Any
    filters: Any
    out: Any = None
    _out_view: Any = None
    _library: str = ""

    @classmethod
    def enter(cls, input, filters, out=None, names=("input", "filters")) -> "Call":
        """`input` decides the result's library (the gradients pass out_backprop there, and the two
        arguments' own names for the messages)."""
        library = module_root(input) if is_foreign(input) else ""
        call = cls(import_array(names[0], input), import_array(names[1], filters), out, None, library)
        if out is not None:
            view = import_array("out", out)
            if not is_native(view):
                raise TypeError(f"out of type {type(out).__name__} is not allowed: expected a NumPy or CuPy "
                                f"array, or an array with __dlpack__ or __cuda_array_interface__")
            if not _writeable(view):
                raise ValueError(f"out of type {type(out).__name__} is read-only: expected a writeable array "
                                 f"(JAX arrays are immutable; pass none and use the returned array)")
            call._out_view = view
        return call

    def result(self, y):
        if self._out_view is not None:
            _check_out(self._out_view, y)
            _copy_into(self._out_view, y)
            return self.out
        convert = RETURNED_AS.get(self._library)
        return convert(y) if convert is not None else y


def import_shape(name: str, a):
    """A shape argument given as an array of another library (a 1-D PyTorch/JAX integer tensor, as TF
    accepts a tensor for input_sizes) as a NumPy array; anything else as it was."""
    return to_host(name, a) if is_foreign(a) else a


def _writeable(a) -> bool:
    flags = getattr(a, "flags", None)
    return bool(getattr(flags, "writeable", True))  # CuPy arrays have no such flag: always writeable


def _check_out(out_view, y) -> None:
    """`out` must have exactly the result's shape (in the call's data_format) and dtype; any strides."""
    if tuple(out_view.shape) != tuple(y.shape):
        raise ValueError(f"out has shape {tuple(out_view.shape)}; expected the result's shape {tuple(y.shape)} "
                         f"(batch dims, then the output's H, W and channels in the call's data_format order)")
    if np.dtype(out_view.dtype) != np.dtype(y.dtype):
        raise TypeError(f"out has dtype {out_view.dtype}; expected the result's dtype {np.dtype(y.dtype)} "
                        f"(the input's)")


def _copy_into(dst, src) -> None:
    src_cupy, dst_cupy = module_root(src) == "cupy", module_root(dst) == "cupy"
    if src_cupy and not dst_cupy:
        src = src.get()
    elif dst_cupy and not src_cupy:
        import cupy
        with cupy.cuda.Device(dst.device.id):
            src = cupy.asarray(src)
    dst[...] = src
