"""The "cupy" backend: kernels/*.cu compiled by NVRTC through CuPy's RawModule, run on an NVIDIA GPU.

Everything up to the final kernel call (choice of kernel, grid, block, shared memory, arguments and
their check against the kernel's signature) is shared with the emulator backend, which CI runs.
CuPy is imported only when this backend is first used.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from ...dtypes import bfloat16
from .backend import CudaBackend
from .launch import Launch
from .sources import cuda_include_dirs, load_source

NVRTC_OPTIONS = ("-std=c++17",)


def _cupy():
    import cupy
    return cupy


@functools.lru_cache(maxsize=None)
def _module(file: str, defines: tuple[tuple[str, int], ...], device_id: int):
    """One compiled module per kernel file, macro set and device, kept alive for the process."""
    cupy = _cupy()
    options = NVRTC_OPTIONS + tuple(f"-I{d}" for d in cuda_include_dirs()) + tuple(f"-D{k}={v}" for k, v in defines)
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=load_source(file), options=options)
        module.compile()
    return module


class CupyBackend(CudaBackend):
    name = "cupy"
    summary = "gpuconv's CUDA kernels on an NVIDIA GPU through CuPy (NVRTC)"
    # CuPy has no bfloat16 arrays: bfloat16 data travels and lives on the GPU as uint16, bit for bit,
    # and comes back as NumPy bfloat16.
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
            if not cupy.is_available():
                return "no usable CUDA device or driver (cupy.is_available() is False)"
        except Exception as e:
            return f"CUDA is not usable: {e}"
        return self.headers_reason()

    def owns(self, array) -> bool:
        return type(array).__module__.split(".")[0] == "cupy"

    def launch(self, launch: Launch) -> None:
        launch.check(self.storage)
        cupy = _cupy()
        module = _module(launch.file, launch.defines, cupy.cuda.Device().id)
        kernel = module.get_function(launch.kernel)
        # A struct goes by value as a one-element host array of its structured dtype, the form CuPy
        # documents for custom structures (examples/custom_struct); its bytes are copied into the launch.
        args = tuple(np.array([a]) if isinstance(a, np.void) else a for a in launch.args)
        kernel(launch.grid, launch.block, args, shared_mem=launch.shared_mem)
