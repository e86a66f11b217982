"""Process-wide settings. Each can also be set by an environment variable before import."""
from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import threading
import warnings

# Settings are read at import: a malformed variable must not make `import gpuconv` fail (the program
# may not even use gpuconv on that path), so it warns, naming the variable, and the default applies.


def _ignored(name: str, raw: str, allowed: str, default) -> None:
    warnings.warn(f"environment variable {name}={raw!r} is not allowed: expected {allowed}; "
                  f"using the default {default!r}", UserWarning, stacklevel=4)


def _env_bytes(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        _ignored(name, raw, "a positive number of bytes", default)
        return default
    return value


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "")
    if raw.lower() in ("", "0", "false", "no"):
        return False
    if raw.lower() in ("1", "true", "yes"):
        return True
    _ignored(name, raw, "1/0, true/false or yes/no", False)
    return False


def _env_precision() -> str:
    from .precision import PRECISIONS
    raw = os.environ.get("GPUCONV_PRECISION", "")
    if raw == "":
        return "highest"
    if raw.lower() in PRECISIONS:
        return raw.lower()
    _ignored("GPUCONV_PRECISION", raw, f"one of {list(PRECISIONS)}", "highest")
    return "highest"


@dataclasses.dataclass
class Settings:
    # Extra memory the NumPy backend may use beyond input, output and one accumulator-type copy of the
    # filters (made for half, non-native or grouped filters): im2col chunks, transforms, conversions.
    numpy_workspace_bytes: int = dataclasses.field(
        default_factory=lambda: _env_bytes("GPUCONV_NUMPY_WORKSPACE", 64 << 20))
    # GPU workspace for im2col column chunks.
    cuda_workspace_bytes: int = dataclasses.field(
        default_factory=lambda: _env_bytes("GPUCONV_CUDA_WORKSPACE", 256 << 20))
    # NumPy inputs go to the GPU (when usable) only from this many FLOPs on, where copies pay off.
    cuda_min_flops_for_numpy_inputs: int = 1 << 30
    # Use the 64-bit-index kernel variants even when 32 bits would do (tests of the 64-bit path).
    cuda_force_index64: bool = dataclasses.field(default_factory=lambda: _env_flag("GPUCONV_CUDA_INDEX64"))
    # algorithm="auto" on a CUDA backend runs the autotuner's cached winner, tuning a problem on its
    # first call (gpuconv/tuning.py); conv2d(..., autotune=...) overrides it per call.
    autotune: bool = dataclasses.field(default_factory=lambda: _env_flag("GPUCONV_AUTOTUNE"))
    # What precision=None means in conv2d ("highest" or "tf32"; see precision.py); set_precision checks it.
    precision: str = dataclasses.field(default_factory=_env_precision)


settings = Settings()


def set_workspace(numpy_bytes: int | None = None, cuda_bytes: int | None = None) -> None:
    """Set the NumPy backend's and/or the CUDA backends' workspace bound, in bytes (any integer type,
    NumPy's included; not bool).

    The NumPy bound covers every temporary beyond the input, the output and one copy of the filters in
    the accumulator type (float32 for half types; made only for half, non-native-byte-order or grouped
    filters); NumPy's own ufunc buffers (about 100 KiB) come on top."""
    for name, value in (("numpy_bytes", numpy_bytes), ("cuda_bytes", cuda_bytes)):
        if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool)
                                  or value < 1):
            raise ValueError(f"{name}={value!r} is not allowed: expected a positive int (bytes)")
    if numpy_bytes is not None:
        settings.numpy_workspace_bytes = int(numpy_bytes)
    if cuda_bytes is not None:
        settings.cuda_workspace_bytes = int(cuda_bytes)


def set_precision(precision: str) -> None:
    """Set the process default for conv2d's `precision` argument: "highest" (exact float32) or "tf32"
    (float32 inputs may run on tensor cores with TF32 inputs; see gpuconv.precision)."""
    from .precision import check_precision
    settings.precision = check_precision(precision)


_local = threading.local()


def numpy_workspace_bytes() -> int:
    """The NumPy backend's workspace bound for the calling thread: the whole bound, or this worker's
    share of it while a call is split over worker threads."""
    return getattr(_local, "numpy_bytes", None) or settings.numpy_workspace_bytes


@contextlib.contextmanager
def numpy_workspace_share(workers: int):
    """Within the block, this thread may use 1/workers of the NumPy workspace bound."""
    _local.numpy_bytes = max(1, settings.numpy_workspace_bytes // workers)
    try:
        yield
    finally:
        _local.numpy_bytes = None
