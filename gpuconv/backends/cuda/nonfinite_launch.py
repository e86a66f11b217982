"""Non-finite filter values handled on the device: the launches of kernels/nonfinite_zero.cu and
kernels/nonfinite_fixup.cu, which give the results of gpuconv/nonfinite.py (the NumPy backend's host
version) with no device-to-host transfer and no synchronisation.

The zeroing kernel writes a copy of the filters with NaN/Inf replaced by 0 and sets a one-int flag in
device memory; the algorithm runs on that copy; the fix-up kernel then reads the flag on the device and
returns at once when it is clear. Its grid is capped: when clear (the common case) it costs one small
launch whatever the output's size, and when set (rare) a grid-stride loop covers every output.
"""
from __future__ import annotations

import math

import numpy as np

from ... import config
from ...problem import ConvProblem
from .launch import Launch, entry_name, grid_stride_end, index_bits
from .params import conv_problem_struct
from .sources import default_macros

FIXUP_MAX_BLOCKS = 256


def _threads() -> int:
    return default_macros("nonfinite_zero")["NONFINITE_THREADS"]


def _blocks(total: int, threads: int) -> int:
    return max(1, min(-(-total // threads), FIXUP_MAX_BLOCKS))


def _bits(total: int, blocks: int, threads: int, *spans: int) -> int:
    return index_bits(*spans, grid_stride_end(total, blocks, threads), force64=config.settings.cuda_force_index64)


def zeroed_filters(backend, p: ConvProblem, w):
    """(w with non-finite values zeroed, the device flag saying whether any was): enqueued, not awaited."""
    xp = backend.xp
    wz = xp.empty(w.shape, w.dtype)
    flag = xp.zeros(1, np.int32)
    n = math.prod(w.shape)
    threads = _threads()
    blocks = _blocks(n, threads)
    kernel = entry_name("nonfinite_zero", p.dtype, _bits(n, blocks, threads, n))
    backend.launch(Launch(file="nonfinite_zero", kernel=kernel, grid=(blocks, 1, 1), block=(threads, 1, 1),
                          shared_mem=0, args=(w, wz, np.int64(n), flag)))
    return wz, flag


def add_nonfinite_terms(backend, p: ConvProblem, x, w, y, flag) -> None:
    """y += the terms of w's non-finite taps (w the original filters) where `flag` is set, on the device."""
    total = math.prod(p.output_shape)
    threads = _threads()
    blocks = _blocks(total, threads)
    bits = _bits(total, blocks, threads, math.prod(p.input_shape), math.prod(p.filter_shape))
    backend.launch(Launch(file="nonfinite_fixup", kernel=entry_name("nonfinite_fixup", p.dtype, bits),
                          grid=(blocks, 1, 1), block=(threads, 1, 1), shared_mem=0,
                          args=(conv_problem_struct(p), x, w, y, flag)))
