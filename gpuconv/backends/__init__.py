"""The backend registry: every backend gpuconv knows, usable or not, and why not."""
from __future__ import annotations

import functools
from typing import Optional

from .base import Algorithm, Backend


def _numpy() -> Backend:
    from .numpy import NumpyBackend
    return NumpyBackend()


def _cupy() -> Backend:
    from .cuda.cupy_backend import CupyBackend
    return CupyBackend()


def _emulator() -> Backend:
    from .cuda.emulator import EmulatorBackend
    return EmulatorBackend()


# Order matters for "auto": the first usable backend that owns the input's array type wins.
_FACTORIES = {"numpy": _numpy, "cupy": _cupy, "emulator": _emulator}


def check_backend_name(name, where: str = "", auto: bool = False) -> None:
    """Raise for a name that is no backend; "auto" passes only where the caller resolves it (conv2d)."""
    if auto and name == "auto":
        return
    if not isinstance(name, str) or name not in _FACTORIES:
        why = " ('auto' picks a backend per conv2d call, not one this can describe)" if name == "auto" else ""
        allowed = f"'auto' or one of {sorted(_FACTORIES)}" if auto else f"one of {sorted(_FACTORIES)}"
        raise ValueError(f"backend={name!r} is not allowed{where}{why}: expected {allowed}")


@functools.lru_cache(maxsize=None)
def get_backend(name: str) -> Backend:
    check_backend_name(name)
    return _FACTORIES[name]()


@functools.lru_cache(maxsize=None)
def unusable_reason(name: str) -> Optional[str]:
    """None when backend `name` is usable on this host, else why not (probes only that backend)."""
    check_backend_name(name)
    try:
        return get_backend(name).unavailable_reason()
    except ImportError as e:  # a backend module whose own dependency is missing
        return f"cannot import it: {e}"


def available_backends() -> dict[str, Optional[str]]:
    """Every backend name mapped to None when usable on this host, else the reason it is not."""
    return {name: unusable_reason(name) for name in _FACTORIES}


def usable_backends() -> list[str]:
    return [name for name, why in available_backends().items() if why is None]


def algorithms(backend: str = "numpy") -> dict[str, str]:
    """The algorithms of a backend, each with a one-line summary."""
    check_backend_name(backend, " for algorithms()")
    return {name: algo.summary for name, algo in get_backend(backend).algorithms().items()}


__all__ = ["Algorithm", "Backend", "available_backends", "usable_backends", "algorithms", "get_backend"]
