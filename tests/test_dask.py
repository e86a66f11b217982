"""gpuconv.dask.conv2d on a real dask.distributed LocalCluster (2 worker processes) against gpuconv.conv2d.

Inputs hold small integers, so every sum is exact in float32 and float64 whatever the order of its terms:
a block that reads one wrong halo row, or an output computed twice or never, shows as an exact mismatch.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install 'gpuconv[dask]')")
distributed = pytest.importorskip("distributed", reason="distributed is not installed (pip install 'gpuconv[dask]')")

import gpuconv  # noqa: E402
import gpuconv.dask as gdask  # noqa: E402
from gpuconv.halo import split_axis  # noqa: E402

WORKER_LIMIT = 256 * 2**20
NO_CUDA = gpuconv.available_backends().get("cupy")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit=WORKER_LIMIT) as cluster, distributed.Client(cluster) as c:
        yield c


def _peak_rss_bytes() -> int:
    """The worker's own peak RSS: VmHWM of its address space. (getrusage's ru_maxrss would also count the
    parent's size at the fork that spawned it: the pytest process, TensorFlow and JAX loaded.)"""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 40), k=st.integers(1, 5), d=st.integers(1, 3), s=st.integers(1, 4),
       pads=st.tuples(st.integers(0, 6), st.integers(0, 6)), cuts=st.lists(st.integers(1, 39), max_size=6))
def test_split_covers_every_output_once_with_its_halo(size, k, d, s, pads, cuts):
    extent = (k - 1) * d + 1
    padded = size + pads[0] + pads[1]
    if padded < extent:
        return
    out = (padded - extent) // s + 1
    edges = sorted({c for c in cuts if c < size})
    chunks = tuple(np.diff([0, *edges, size]).tolist())
    sp = split_axis(size, extent, s, pads[0], out, chunks)
    assert sp.out_bounds[0] == 0 and sp.out_bounds[-1] == out and all(np.diff(sp.out_bounds) > 0)
    assert sum(sp.in_chunks) == size and min(sp.in_chunks) >= 1
    if len(sp.in_chunks) > 1:
        assert min(sp.in_chunks) >= sp.halo_after       # dask's overlap takes the halo from one neighbour
    for i, n_out in enumerate(sp.out_chunks):
        lo, hi, before, after = sp.block_window(i)
        available = sp.in_chunks[i] + (sp.halo_after if i + 1 < len(sp.in_chunks) else 0)
        assert 0 <= lo <= hi <= available
        if hi > lo:  # the block's outputs, from its rows and the padding that falls on them
            assert (before + hi - lo + after - extent) // s + 1 == n_out
            first = sp.out_bounds[i] * s - pads[0]
            assert sp.in_bounds[i] + lo - before == first


def _chunking(rng, shape, spatial):
    """Random cuts along batch and spatial axes: chunks of 1 (smaller than any halo), ragged sizes."""
    chunks = []
    for axis, n in enumerate(shape):
        if n > 1 and (axis in spatial or axis < len(shape) - 3):
            cuts = np.unique(rng.integers(1, n, rng.integers(0, 4)))
            chunks.append(tuple(np.diff([0, *cuts, n]).tolist()))
        else:
            chunks.append((n,) if axis in spatial or axis < len(shape) - 3 else tuple([1] * n) if n < 4 else (n,))
    return tuple(chunks)


CASES = [  # (batch, H, W, C, KH, KW, CG, K, strides, padding, dilations, data_format)
    ((2,), 13, 11, 3, 3, 3, 3, 4, 1, "VALID", 1, "NHWC"),
    ((2,), 13, 11, 3, 3, 3, 3, 4, 1, "SAME", 1, "NHWC"),
    ((1,), 17, 16, 2, 3, 3, 2, 3, 2, "SAME", 1, "NHWC"),        # SAME + stride: asymmetric pads
    ((1,), 17, 19, 2, 5, 4, 2, 3, (3, 2), "SAME", 1, "NCHW"),
    ((2,), 16, 15, 4, 3, 3, 2, 4, 1, "SAME", 2, "NHWC"),        # groups, dilation
    ((1,), 20, 18, 4, 3, 2, 1, 8, 2, "VALID", (2, 3), "NCHW"),  # depthwise, stride with dilation
    ((1,), 15, 14, 2, 2, 2, 2, 2, 3, "VALID", 1, "NHWC"),       # filter smaller than the stride: no halo
    ((1,), 12, 13, 2, 3, 3, 2, 2, 1, [[0, 0], [4, 1], [0, 5], [0, 0]], 1, "NHWC"),  # rows of padding only
    ((1,), 12, 13, 2, 3, 3, 2, 2, 2, [[0, 0], [0, 0], [2, 3], [1, 0]], 1, "NCHW"),
    ((1,), 10, 9, 2, 1, 1, 2, 3, 1, "VALID", 1, "NHWC"),        # 1x1
    ((2, 3), 9, 10, 2, 3, 3, 2, 2, 2, "SAME", 1, "NCHW"),       # two leading batch dims
]


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[-1]}-{c[9] if isinstance(c[9], str) else 'explicit'}"
                         f"-k{c[4]}x{c[5]}-s{c[8]}-d{c[10]}")
def test_matches_in_memory_conv2d_exactly(client, case, seed):
    batch, H, W, C, KH, KW, CG, K, strides, padding, dilations, fmt = case
    rng = np.random.default_rng(seed)
    shape = (*batch, H, W, C) if fmt == "NHWC" else (*batch, C, H, W)
    x = rng.integers(-3, 4, shape).astype(np.float32)
    w = rng.integers(-3, 4, (KH, KW, CG, K)).astype(np.float32)
    nd = len(shape)
    spatial = (nd - 3, nd - 2) if fmt == "NHWC" else (nd - 2, nd - 1)
    xd = da.from_array(x, chunks=_chunking(rng, shape, spatial))
    yd = gdask.conv2d(xd, w, strides, padding, fmt, dilations, backend="numpy")
    expected = gpuconv.conv2d(x, w, strides, padding, fmt, dilations, backend="numpy")
    assert yd.shape == expected.shape and yd.dtype == expected.dtype
    assert yd.chunks[:nd - 3] == xd.chunks[:nd - 3]       # batch chunks map one to one
    y = client.compute(yd).result()
    np.testing.assert_array_equal(y, expected)


def test_a_block_of_outputs_that_read_only_padding(client):
    # stride 3, 1x1, 5 rows of top padding: outputs 0 and 1 read padding; H chunks of 1 cut after them
    x = np.arange(1, 1 + 10 * 4 * 2, dtype=np.float32).reshape(1, 10, 4, 2)
    w = np.ones((1, 1, 2, 3), np.float32)
    pads = [[0, 0], [5, 0], [0, 0], [0, 0]]
    yd = gdask.conv2d(da.from_array(x, chunks=(1, 1, 4, 2)), w, 3, pads)
    assert yd.chunks[1][0] == 2
    np.testing.assert_array_equal(client.compute(yd).result(), gpuconv.conv2d(x, w, 3, pads))


def test_filters_sit_in_the_graph_once():
    import cloudpickle
    w = np.ones((3, 3, 8, 256), np.float32)                 # 72 KiB, 64 output blocks
    yd = gdask.conv2d(da.zeros((4, 64, 64, 8), dtype=np.float32, chunks=(1, 16, 16, 4)), w, padding="SAME")
    assert yd.npartitions == 64
    assert len(cloudpickle.dumps(dict(yd.__dask_graph__()))) < 2 * w.nbytes


def test_different_convolutions_get_different_keys():
    # a fixed output name would make two graphs share keys, and the scheduler mix their blocks
    x = da.ones((1, 8, 8, 2), dtype=np.float32, chunks=4)
    names = {gdask.conv2d(x, np.full((3, 3, 2, 1), v, np.float32), padding=p).name
             for v in (1, 2) for p in ("SAME", "VALID")}
    assert len(names) == 4 and all(n.startswith("gpuconv-conv2d-") for n in names)


def test_dask_filters_and_float64(client):
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (2, 12, 12, 4)).astype(np.float64)
    w = rng.integers(-3, 4, (3, 3, 4, 5)).astype(np.float64)
    yd = gdask.conv2d(da.from_array(x, chunks=(1, 5, 7, 2)), da.from_array(w, chunks=(1, 3, 2, 5)), 2, "SAME")
    np.testing.assert_array_equal(client.compute(yd).result(), gpuconv.conv2d(x, w, 2, "SAME"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a worker's own peak RSS is read from /proc (Linux)")
def test_worker_memory_stays_bounded_on_an_input_larger_than_a_worker(client):
    x = da.ones((8, 4096, 4096, 1), dtype=np.float32, chunks=(1, 1024, 1024, 1))  # made on the workers
    assert x.nbytes > 2 * WORKER_LIMIT - 1
    y = gdask.conv2d(x, np.ones((3, 3, 1, 1), np.float32), backend="numpy")
    assert client.compute(y.sum(dtype=np.float64)).result() == 9 * 8 * 4094 * 4094
    peaks = client.run(_peak_rss_bytes)
    assert all(peak < WORKER_LIMIT for peak in peaks.values()), peaks


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((1, 5, 5, 1), np.float32), TypeError, "input of type ndarray is not allowed: expected a dask array"),
    (None, ValueError, "unknown chunk sizes"),
])
def test_refuses_what_it_cannot_split(bad, error, match):
    if bad is None:
        x = da.ones((1, 8, 8, 1), dtype=np.float32, chunks=2)
        bad = x[x[:, :, :, 0].sum(axis=(1, 2)) > 0]          # boolean indexing: unknown batch chunks
    with pytest.raises(error, match=match):
        gdask.conv2d(bad, np.ones((3, 3, 1, 1), np.float32))


def test_invalid_arguments_raise_as_in_memory():
    with pytest.raises(ValueError, match="padding='FULL' is not allowed"):
        gdask.conv2d(da.ones((1, 8, 8, 1), dtype=np.float32), np.ones((3, 3, 1, 1), np.float32), padding="FULL")


@pytest.mark.skipif(NO_CUDA is not None, reason=f"no CUDA device: {NO_CUDA}")
def test_cupy_backed_dask_array_runs_blocks_on_the_gpu():
    import cupy
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 4, (2, 20, 20, 3)).astype(np.float32)
    w = rng.integers(-3, 4, (3, 3, 3, 4)).astype(np.float32)
    xd = da.from_array(cupy.asarray(x), chunks=(1, 7, 9, 3))
    y = gdask.conv2d(xd, w, 1, "SAME").compute(scheduler="threads")
    assert type(y) is cupy.ndarray
    np.testing.assert_array_equal(y.get(), gpuconv.conv2d(x, w, 1, "SAME", backend="numpy"))


@pytest.mark.skipif(NO_CUDA is not None, reason=f"no CUDA device: {NO_CUDA}")
def test_local_cuda_cluster_runs_cupy_blocks_one_worker_per_gpu():
    """The README's multi-GPU recipe: dask-cuda's LocalCUDACluster (the GPU workflow installs dask-cuda)."""
    dask_cuda = pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (pip install dask-cuda)")
    import cupy
    rng = np.random.default_rng(7)
    x = rng.integers(-3, 4, (4, 24, 20, 3)).astype(np.float32)
    w = rng.integers(-3, 4, (3, 3, 3, 4)).astype(np.float32)
    with dask_cuda.LocalCUDACluster(dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        xd = da.from_array(x, chunks=(1, 11, 20, 3)).map_blocks(cupy.asarray)
        y = c.compute(gdask.conv2d(xd, w, 2, "SAME")).result()
    assert type(y) is cupy.ndarray
    np.testing.assert_array_equal(y.get(), gpuconv.conv2d(x, w, 2, "SAME", backend="numpy"))
