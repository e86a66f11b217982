"""The "cupy" backend: kernels/*.cu compiled by NVRTC through CuPy's RawModule, run on an NVIDIA GPU.

Everything up to the final kernel call (choice of kernel, grid, block, shared memory, arguments and
their check against the kernel's signature and the device's limits) is shared with the emulator
backend, which CI runs. CuPy is imported only when this backend is first used.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional

import numpy as np

from ...dtypes import bfloat16
from .backend import CudaBackend
from .launch import DeviceLimits, Launch
from .sources import cuda_include_dirs, load_source

NVRTC_OPTIONS = ("-std=c++17",)
NVRTC_HELP = ("NVRTC (libnvrtc) could not be loaded: install it with `pip install \"gpuconv[cuda13]\"` "
              "(CuPy 14, CUDA 13) or `pip install \"gpuconv[cuda12]\"` (CUDA 12: nvidia-cuda-nvrtc-cu12), "
              "or install a CUDA toolkit")


@functools.lru_cache(maxsize=None)
def _preload_nvrtc() -> Optional[str]:
    """Load NVRTC through cuda-pathfinder before CuPy is imported; None on success, else why not.

    CuPy 14 finds pip's NVRTC itself (with cuda-pathfinder), but CuPy 13 only dlopens
    libnvrtc.so.12 by name, which the loader does not find inside the nvidia-cuda-nvrtc-cu12 wheel.
    Once pathfinder has loaded the library, that dlopen by name returns the loaded copy. We keep
    CuPy 13 (the cuda12 extra) working this way rather than require CuPy 14 for CUDA 12 too."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError as e:
        return f"cuda-pathfinder is not importable ({e})"
    try:
        load_nvidia_dynamic_lib("nvrtc")
    except Exception as e:  # pathfinder raises its own DynamicLibNotFoundError, among others
        return f"cuda-pathfinder did not find NVRTC ({e})"
    return None


def _import_cupy():
    import cupy
    return cupy


def _cupy():
    _preload_nvrtc()
    return _import_cupy()


@functools.lru_cache(maxsize=None)
def _module(file: str, defines: tuple[tuple[str, int], ...], device_id: int):
    """One compiled module per kernel file, macro set and device, kept alive for the process."""
    cupy = _cupy()
    options = NVRTC_OPTIONS + tuple(f"-I{d}" for d in cuda_include_dirs()) + tuple(f"-D{k}={v}" for k, v in defines)
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=load_source(file), options=options)
        module.compile()
    return module


@functools.lru_cache(maxsize=None)
def _kernel(file: str, defines: tuple[tuple[str, int], ...], device_id: int, name: str):
    """The module's function `name`: looked up once, not on every launch."""
    return _module(file, defines, device_id).get_function(name)


@functools.lru_cache(maxsize=None)
def _device_limits(device_id: int) -> DeviceLimits:
    attrs = _cupy().cuda.Device(device_id).attributes
    return DeviceLimits(threads_per_block=attrs["MaxThreadsPerBlock"],
                        shared_optin=attrs["MaxSharedMemoryPerBlockOptin"])


@functools.lru_cache(maxsize=None)
def _device_identity(device_id: int) -> tuple:
    cupy = _cupy()
    props = cupy.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"]
    return (("name", name.decode() if isinstance(name, bytes) else str(name)),
            ("compute_capability", f"{props['major']}.{props['minor']}"),
            ("runtime", str(cupy.cuda.runtime.runtimeGetVersion())),
            ("driver", str(cupy.cuda.runtime.driverGetVersion())))


def clear_caches() -> None:
    for cache in (_module, _kernel, _device_limits, _device_identity, _preload_nvrtc):
        cache.cache_clear()


def _is_cupy(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def device_scope(**arrays):
    """The device the CuPy arrays among `arrays` (name=array) live on, as a context manager (a null
    context when there are none). Arrays on different devices are refused: CuPy would otherwise copy
    one to the current device silently."""
    devices = {name: a.device for name, a in arrays.items() if _is_cupy(a)}
    if len({d.id for d in devices.values()}) > 1:
        where = ", ".join(f"{name} on GPU {d.id}" for name, d in devices.items())
        raise ValueError(f"arrays on different devices are not allowed: {where}; expected all on one GPU "
                         f"(copy one with cupy.asarray inside `with cupy.cuda.Device(i):`)")
    return next(iter(devices.values())) if devices else contextlib.nullcontext()


class CupyBackend(CudaBackend):
    name = "cupy"
    summary = "gpuconv's CUDA kernels on an NVIDIA GPU through CuPy (NVRTC)"
    # bfloat16 data lives on the GPU as uint16, bit for bit: CuPy 13 has no bfloat16 arrays, and
    # CuPy 14's (experimental) ones are viewed as uint16 in place.
    storage = {bfloat16: np.dtype(np.uint16)}

    @property
    def xp(self):
        return _cupy()

    def unavailable_reason(self) -> Optional[str]:
        try:
            cupy = _cupy()
        except ImportError:
            return "CuPy is not installed (pip install \"gpuconv[cuda13]\" or \"gpuconv[cuda12]\")"
        except Exception as e:  # a broken CuPy install raises all sorts
            return f"CuPy failed to import: {e}"
        try:
            cupy.cuda.nvrtc.getVersion()  # loads NVRTC as RawModule will; needs no GPU
        except Exception as e:
            pathfinder = _preload_nvrtc()
            return f"{NVRTC_HELP} ({e}{'; ' + pathfinder if pathfinder else ''})"
        try:
            if not cupy.is_available():
                return "no usable CUDA device or driver (cupy.is_available() is False)"
        except Exception as e:
            return f"CUDA is not usable: {e}"
        return self.headers_reason()

    def owns(self, array) -> bool:
        return _is_cupy(array)

    def device_identity(self) -> dict:
        """The current device's name, compute capability, CUDA runtime and driver versions (the
        autotuner's cache keys); read once per device."""
        return dict(_device_identity(_cupy().cuda.Device().id))

    def run(self, p, x, w, algorithm: str):
        with device_scope(input=x, filters=w):
            return super().run(p, x, w, algorithm)

    def shared_limit(self) -> int:
        return _device_limits(_cupy().cuda.Device().id).shared_optin

    def compute_capability(self) -> tuple[int, int]:
        cc = _cupy().cuda.Device().compute_capability  # "80", "90", ...
        return int(cc[:-1]), int(cc[-1])

    def launch(self, launch: Launch) -> None:
        device_id = _cupy().cuda.Device().id
        launch.check(self.storage, _device_limits(device_id), opt_in=True)
        kernel = _kernel(launch.file, launch.defines, device_id, launch.kernel)
        if launch.needs_opt_in():
            kernel.max_dynamic_shared_size_bytes = launch.shared_mem
        # A struct goes by value as a one-element host array of its structured dtype, the form CuPy
        # documents for custom structures (examples/custom_struct); its bytes are copied into the launch.
        args = tuple(np.array([a]) if isinstance(a, np.void) else a for a in launch.args)
        kernel(launch.grid, launch.block, args, shared_mem=launch.shared_mem)
