"""Emulator calls from several Python threads at once (ctypes releases the GIL during a launch)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import gpuconv


def integer_cases(seed: int, count: int, x_shape: tuple, w_shape: tuple) -> list:
    """Small-integer inputs and filters: every backend's result is exact, so results compare bit for bit."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(-3, 4, x_shape).astype(np.float32), rng.integers(-3, 4, w_shape).astype(np.float32))
            for _ in range(count)]


def assert_exact_from_threads(cases: list, threads: int, algorithm: str) -> None:
    """Runs every case on the emulator from `threads` threads; each result must equal the reference."""
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda c: gpuconv.conv2d(*c, padding="SAME", backend="emulator",
                                                         algorithm=algorithm), cases))
    for (x, w), y in zip(cases, results):
        p, _ = gpuconv.parse_problem(x.shape, x.dtype, w.shape, w.dtype, 1, "SAME", "NHWC", None)
        np.testing.assert_array_equal(y, gpuconv.conv2d_reference(x, w, p))
