"""split_filters on a device array: one reduction on the device, one scalar fetched, and no host copy
of the filters unless they hold a non-finite value. A stand-in array class counts the transfers (this
host has no GPU; the CuPy calls split_filters makes are the few the stand-in module provides)."""
from __future__ import annotations

import types

import numpy as np

from gpuconv import nonfinite


class DeviceArray:
    """A NumPy array behind the device boundary: .get() and bool() are the transfers to the host."""
    transfers: list[str] = []

    def __init__(self, a):
        self.a = np.asarray(a)

    dtype = property(lambda self: self.a.dtype)

    def all(self):
        return DeviceArray(self.a.all())

    def __invert__(self):
        return DeviceArray(~self.a)

    def __bool__(self):
        DeviceArray.transfers.append(f"scalar {self.a.shape}")
        return bool(self.a)

    def get(self):
        DeviceArray.transfers.append(f"array {self.a.shape}")
        return self.a.copy()


def _unwrap(v):
    return v.a if isinstance(v, DeviceArray) else v


fake_cupy = types.SimpleNamespace(
    isfinite=lambda a: DeviceArray(np.isfinite(a.a)),
    where=lambda c, a, b: DeviceArray(np.where(_unwrap(c), _unwrap(a), _unwrap(b))),
    zeros=lambda shape, dtype: DeviceArray(np.zeros(shape, dtype)))


def test_finite_device_filters_cost_one_scalar_fetch(monkeypatch):
    monkeypatch.setattr(nonfinite, "_xp", lambda a: fake_cupy)
    monkeypatch.setattr(DeviceArray, "transfers", [])
    w = DeviceArray(np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32))
    w_finite, bad = nonfinite.split_filters(w)
    assert w_finite is w and bad.shape == (0, 4)
    assert DeviceArray.transfers == ["scalar ()"]


def test_nonfinite_device_filters_are_searched_on_the_host_once(monkeypatch):
    monkeypatch.setattr(nonfinite, "_xp", lambda a: fake_cupy)
    monkeypatch.setattr(DeviceArray, "transfers", [])
    host = np.ones((3, 3, 4, 5), np.float32)
    host[1, 2, 3, 4], host[0, 0, 0, 0] = np.inf, np.nan
    w_finite, bad = nonfinite.split_filters(DeviceArray(host))
    assert bad.tolist() == [[0, 0, 0, 0], [1, 2, 3, 4]]
    assert isinstance(w_finite, DeviceArray) and np.isfinite(w_finite.a).all() and w_finite.a.sum() == host.size - 2
    assert DeviceArray.transfers == ["scalar ()", "array (3, 3, 4, 5)"]   # the mask, not the filters


def test_numpy_filters_checked_without_a_filter_sized_temporary():
    import tracemalloc
    w = np.ones((3, 3, 256, 256), np.float32)
    tracemalloc.start()
    try:
        assert nonfinite.split_filters(w)[0] is w
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < w.size // 4, f"{peak} bytes traced: a temporary of the filters' size (np.isfinite(w))"
