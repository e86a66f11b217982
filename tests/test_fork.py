"""A forked child (multiprocessing's 'fork' start method, gunicorn, dask fork workers) can use gpuconv
after its parent used the NumPy backend's worker threads."""
from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import pytest

import gpuconv
from gpuconv.backends.numpy import threads


def _depthwise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9, 9, 6)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 6)).astype(np.float32)
    return gpuconv.conv2d(x, w, padding="SAME", backend="numpy", algorithm="depthwise")


def _child(queue):
    queue.put(float(np.abs(_depthwise()).sum()))


@pytest.mark.skipif(not hasattr(os, "register_at_fork") or sys.platform == "win32", reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")  # JAX, when another test imported it
def test_forked_child_runs_worker_threads(monkeypatch):
    monkeypatch.setattr(threads, "cpu_workers", lambda: 2)   # the split over worker threads even on one CPU
    expected = float(np.abs(_depthwise()).sum())        # the parent's pool now has live threads
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the forked child's conv2d did not finish within 30 s (a worker pool from the parent?)")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == expected
