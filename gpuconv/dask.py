"""gpuconv.dask.conv2d: conv2d over a dask array, lazily, block by block (pip install 'gpuconv[dask]').

Batch chunks map one to one. Channel chunks are merged first (a filter needs every input channel of its
group). Each spatial axis is re-cut at rows aligned to the stride (gpuconv.halo) and
`dask.array.overlap.overlap` hands every block the asymmetric halo (0, E - S) it needs from its next
neighbour; every block then runs gpuconv.conv2d with the padding that falls on it, so each output pixel is
computed once and nothing is trimmed. The filters enter the graph once, as one key every task depends on.
CuPy-backed dask arrays run each block on the GPU (dask-cuda's LocalCUDACluster: one worker per GPU).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import api
from .arg_types import IntOrInts, Padding
from .halo import AxisSplit, split_axis
from .interop import import_array, module_root
from .problem import parse_problem

try:
    import dask.array as da
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"gpuconv.dask needs dask: pip install 'gpuconv[dask]' ({e})") from None


def _axes(ndim: int, data_format: str) -> tuple[int, int, int]:
    """(H axis, W axis, channel axis) of a rank-`ndim` array."""
    return (ndim - 3, ndim - 2, ndim - 1) if data_format == "NHWC" else (ndim - 2, ndim - 1, ndim - 3)


def conv2d(input, filters, strides: IntOrInts = 1, padding: Padding = "VALID", data_format: str = "NHWC",
           dilations: Optional[IntOrInts] = None, *, backend: str = "auto", algorithm: str = "auto") -> Any:
    """gpuconv.conv2d for a dask array `input` (any chunking); returns a lazy dask array.

    filters: a NumPy/CuPy array, any array with __dlpack__, or a dask array (merged into one chunk).
    The other arguments are gpuconv.conv2d's; backend and algorithm apply to every block."""
    if not isinstance(input, da.Array):
        raise TypeError(f"input of type {type(input).__name__} is not allowed: expected a dask array "
                        f"(gpuconv.conv2d takes in-memory arrays)")
    if any(np.isnan(c) for dim in input.chunks for c in dim):
        raise ValueError(f"input has unknown chunk sizes {input.chunks}: expected known chunks "
                         f"(call input.compute_chunk_sizes() first)")
    if not isinstance(filters, da.Array):
        filters = import_array("filters", filters)
        if not (isinstance(filters, np.ndarray) or module_root(filters) == "cupy"):
            filters = np.asarray(filters, dtype=input.dtype if input.dtype.kind == "f" else np.float32)
    p, _ = parse_problem(input.shape, input.dtype, filters.shape, filters.dtype, strides, padding, data_format,
                         dilations)
    ah, aw, ac = _axes(input.ndim, p.layout)
    split_h = split_axis(p.H, (p.KH - 1) * p.DH + 1, p.SH, p.PT, p.OH, input.chunks[ah])
    split_w = split_axis(p.W, (p.KW - 1) * p.DW + 1, p.SW, p.PL, p.OW, input.chunks[aw])

    x = input.rechunk({ac: -1, ah: split_h.in_chunks, aw: split_w.in_chunks})
    depth = {ah: (0, split_h.halo_after), aw: (0, split_w.halo_after)}
    if split_h.halo_after or split_w.halo_after:
        # the cuts above already leave every block at least the halo: no rechunk may move them
        x = da.overlap.overlap(x, depth={a: d for a, d in depth.items() if d[1]}, boundary="none",
                               allow_rechunk=False)

    if isinstance(filters, da.Array):
        w = filters.rechunk(-1)
    else:
        if module_root(x._meta) == "cupy" and module_root(filters) != "cupy":
            import cupy
            filters = cupy.asarray(filters)
        w = da.from_array(filters, chunks=filters.shape)
    chunks = list(x.chunks)
    chunks[ah], chunks[aw], chunks[ac] = split_h.out_chunks, split_w.out_chunks, (p.K,)
    meta = da.utils.meta_from_array(x._meta, ndim=x.ndim, dtype=x.dtype)
    return da.map_blocks(_block, x, w=w, splits=(split_h, split_w), axes=(ah, aw, ac), strides=(p.SH, p.SW),
                         dilations=(p.DH, p.DW), data_format=p.layout, backend=backend, algorithm=algorithm,
                         chunks=tuple(chunks), dtype=x.dtype, meta=meta, token="gpuconv-conv2d")


def _block(xb, *, w, splits: tuple[AxisSplit, AxisSplit], axes, strides, dilations, data_format, backend,
           algorithm, block_id):
    """One output block: this block's rows and columns, with the padding that falls on them."""
    ah, aw, ac = axes
    (h0, h1, pt, pb), (w0, w1, pl, pr) = (s.block_window(block_id[a]) for s, a in zip(splits, (ah, aw)))
    shape = list(xb.shape)
    shape[ah], shape[aw], shape[ac] = (splits[0].out_chunks[block_id[ah]], splits[1].out_chunks[block_id[aw]],
                                       w.shape[3])
    if h0 == h1 or w0 == w1:  # outputs that read only padding: no term at all
        return api._like(np.zeros(shape, xb.dtype), xb)
    index = [slice(None)] * xb.ndim
    index[ah], index[aw] = slice(h0, h1), slice(w0, w1)
    pads = [[0, 0], [pt, pb], [pl, pr], [0, 0]] if data_format == "NHWC" else [[0, 0], [0, 0], [pt, pb], [pl, pr]]
    y = api.conv2d(xb[tuple(index)], w, strides, pads, data_format, dilations, backend=backend, algorithm=algorithm)
    assert y.shape == tuple(shape), (y.shape, shape)  # the split's arithmetic, not the caller's input
    return y
