"""Non-finite filter values: the host way (gpuconv/nonfinite.py, for the NumPy backend) and the
device way of the CUDA backends (kernels/nonfinite_*.cu) give the same bits. That no CuPy call reads
device memory is tested in test_cupy_backend.py."""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import nonfinite
from gpuconv.backends import available_backends, get_backend
from gpuconv.backends.cuda import nonfinite_launch
from gpuconv.dtypes import bfloat16

EMULATOR_REASON = available_backends()["emulator"]


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


@pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, bfloat16])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("max_blocks", [256, 1])
def test_device_fixup_gives_the_host_results_bit_for_bit(dtype, data_format, max_blocks, monkeypatch):
    """kernels/nonfinite_*.cu (the CUDA backends' way) against this module's host way, on the same
    zeroed-filter sums: equal bits, NaNs where the host has NaNs. One block makes every thread step
    through several outputs (the fix-up's mixed-radix carries)."""
    monkeypatch.setattr(nonfinite_launch, "FIXUP_MAX_BLOCKS", max_blocks)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 7, 4)).astype(dtype)
    w = rng.standard_normal((3, 3, 2, 6)).astype(dtype)           # two groups
    w[0, 0, 1, 4], w[1, 2, 0, 1], w[2, 1, 1, 1] = np.inf, -np.inf, np.nan
    x[1, 0, 0, 2], x[0, 3, 4, 0] = np.inf, np.nan
    if data_format == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    p = gpuconv.parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "SAME", data_format, None)[0]
    be = get_backend("emulator")
    w_finite, bad = nonfinite.split_filters(w)
    host = be.run(p, x, w_finite, "gemm")
    nonfinite.add_nonfinite_terms(p, x, w, host, bad)
    device = be.run(p, x, w, "gemm")
    assert np.isnan(host.astype(np.float32)).any() and np.isinf(host.astype(np.float32)).any()
    np.testing.assert_array_equal(device.astype(np.float64),
                                  host.astype(np.float64))
