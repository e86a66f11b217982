"""`gpuconv info`: what gpuconv can use on this host, and why not where it cannot."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import numpy as np

import gpuconv
from .backends import available_backends, get_backend


def add_arguments(parser) -> None:
    pass


def _blas() -> list[str]:
    """The BLAS NumPy calls, with its thread count (threadpoolctl), else NumPy's build configuration."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if libs:
            return [f"{i.get('internal_api')} {i.get('version') or ''} ({i.get('threading_layer', '?')} threading), "
                    f"{i.get('num_threads')} threads: {i.get('filepath')}" for i in libs]
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception as e:  # numpy < 1.25 has no mode="dicts"
        return [f"unknown (threadpoolctl not installed; numpy.show_config gave no dict: {e})"]
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    return [f"{cfg.get('name')} {cfg.get('version', '')} (from numpy's build configuration; threads: {threads}; "
            f"install threadpoolctl for the loaded library and its thread count)"]


def _compiler() -> str:
    try:
        from .backends.cuda.emulator import compiler
        cxx = compiler()
    except ImportError:
        cxx = (shutil.which(os.environ.get("GPUCONV_CXX", "g++")) or shutil.which("c++")
               or shutil.which("clang++"))
    if cxx is None:
        return "not found (the emulator backend needs g++ or clang++; GPUCONV_CXX names another)"
    try:
        first = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=20).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        return f"{cxx} (cannot run --version: {e})"
    return f"{cxx}: {first[0] if first else '?'}"


def _headers() -> str:
    from .backends.cuda.sources import CudaHeadersNotFound, cuda_include_dirs
    try:
        return "found: " + ", ".join(cuda_include_dirs())
    except CudaHeadersNotFound as e:
        return f"not found: {e}"


def _nvrtc() -> str:
    from .backends.cuda import nvrtc
    why = nvrtc.available()
    if why is not None:
        return f"not found: {why}"
    archs = ", ".join(a for a in nvrtc.supported_archs())
    return f"{'.'.join(map(str, nvrtc.version()))} at {nvrtc.library_path()} (archs: {archs})"


def _tune_cache() -> list[str]:
    """The autotuner's cache: its file, its entries, and for each usable CUDA backend's device how many
    of its entries are current and how many stale (kernel sources, CUDA versions or variants changed)."""
    from . import tune_cache
    path = tune_cache.cache_path()
    entries = tune_cache.read(path)
    lines = [f"autotune cache: {path} ({len(entries)} entries{'' if path.exists() else '; no file yet'})"]
    for name, why in available_backends().items():
        if name not in ("cupy", "emulator") or why is not None:
            continue
        be = get_backend(name)
        device = be.device_identity()
        mine = [e for e in entries.values() if e.get("backend") == name
                and e.get("device", {}).get("name") == device["name"]
                and e.get("device", {}).get("compute_capability") == device["compute_capability"]]
        stale = sum(tune_cache.stale_reason(e, be, device) is not None for e in mine)
        lines.append(f"  {name} on {device['name']}: {len(mine) - stale} current, {stale} stale")
    return lines


def run(args) -> int:
    print(f"gpuconv {gpuconv.__version__}  (Python {platform.python_version()}, NumPy {np.__version__}, "
          f"{platform.system()} {platform.machine()})")
    print("backends:")
    for name, why in available_backends().items():
        if why is not None:
            print(f"  {name:9s} unusable: {why}")
            continue
        be = get_backend(name)
        print(f"  {name:9s} usable: {be.summary}")
        rule = be.auto_rule()
        if rule:
            print(f"            auto: {rule}")
        for algo, algo_obj in be.algorithms().items():
            print(f"            - {algo}: {algo_obj.summary}")
    print("BLAS:")
    for line in _blas():
        print(f"  {line}")
    print(f"CUDA headers (cuda_fp16.h, cuda_bf16.h): {_headers()}")
    print(f"NVRTC: {_nvrtc()}")
    print(f"C++ compiler: {_compiler()}")
    for line in _tune_cache():
        print(line)
    sys.stdout.flush()
    return 0
