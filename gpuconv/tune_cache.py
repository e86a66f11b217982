"""The autotuner's persistent cache: one JSON file of winners, safe when several processes tune at once.

An entry is kept under "<backend>|<device>|<compute capability>|<problem signature>" and records the keys
it is valid for: device name, compute capability, CUDA runtime and driver versions, the hash of the
winning algorithm's kernel sources, and the problem (every ConvProblem field, dtype and layout). When
any of them differs from the current ones, or the variant is no longer one the algorithm lists for the
problem, the entry is stale: ignored, and replaced by the next tuning of that problem.

Writers take an exclusive lock on "<file>.lock" (fcntl), re-read the file, add their entry and replace
the file atomically (write a temporary file, then os.replace), so concurrent tuners lose nothing and a
reader never sees a partial file. Readers take no lock.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from .problem import ConvProblem

FORMAT = 1
FILE_NAME = "autotune.json"


def cache_path() -> Path:
    """GPUCONV_AUTOTUNE_CACHE, else autotune.json in gpuconv's cache directory (GPUCONV_CACHE_DIR, else
    ~/.cache/gpuconv, as for the emulator's compiled kernels)."""
    explicit = os.environ.get("GPUCONV_AUTOTUNE_CACHE")
    if explicit:
        return Path(explicit)
    from .backends.cuda.emulator_build import cache_dir
    return cache_dir().parent / FILE_NAME


def problem_signature(p: ConvProblem) -> dict:
    """Every field of p, with the dtype by name: what makes two calls the same tuning problem."""
    fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    fields["dtype"] = np.dtype(p.dtype).name
    return fields


def problem_from_signature(sig: dict) -> ConvProblem:
    from .dtypes import SUPPORTED
    names = {np.dtype(d).name: np.dtype(d) for d in SUPPORTED}
    return ConvProblem(**{**sig, "dtype": names[sig["dtype"]]})


def signature_text(sig: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sig.items())


def entry_key(backend: str, device: dict, sig: dict) -> str:
    return f"{backend}|{device['name']}|{device['compute_capability']}|{signature_text(sig)}"


def read(path: Optional[Path] = None) -> dict:
    """The cache's entries ({} when the file is missing or not a cache file)."""
    path = cache_path() if path is None else path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def store(key: str, entry: dict, path: Optional[Path] = None) -> Path:
    """Add or replace one entry, atomically, keeping every other process's entries."""
    path = cache_path() if path is None else path
    with _locked(path):
        entries = read(path)
        entries[key] = entry
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"format": FORMAT, "entries": entries}, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path


def stale_reason(entry: dict, backend, device: dict) -> Optional[str]:
    """None when `entry` is valid for this backend and device with today's kernel sources, else why not."""
    if entry.get("backend") != backend.name:
        return f"backend changed ({entry.get('backend')!r} -> {backend.name!r})"
    for k, v in device.items():
        if entry.get("device", {}).get(k) != v:
            return f"device {k} changed ({entry.get('device', {}).get(k)!r} -> {v!r})"
    algo = backend.algorithms().get(entry.get("algorithm"))
    if algo is None:
        return f"unknown algorithm {entry.get('algorithm')!r}"
    if entry.get("source_hash") != algo.source_hash():
        return "kernel sources changed"
    try:
        p = problem_from_signature(entry["problem"])
    except (KeyError, TypeError, ValueError):
        return "unreadable problem"
    if entry.get("variant") not in [v.variant_key for v in algo.variants(p)]:
        return f"unknown variant {entry.get('variant')!r}"
    return None
