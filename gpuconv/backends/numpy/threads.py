"""Worker threads for the NumPy algorithms dominated by NumPy's single-threaded elementwise passes
(depthwise; Winograd's transforms on large images or bundled groups): the batch is split over them, each
with its share of the workspace and BLAS held to one thread (threadpoolctl, when installed). NumPy
releases the GIL inside its loops, so the passes run in parallel."""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from ... import config
from .ieee import ieee

T = TypeVar("T")

def cpu_workers() -> int:
    """Threads worth running elementwise NumPy work on: the CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def worker_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=cpu_workers(), thread_name_prefix="gpuconv")


def blas_workers() -> int:
    """Worker threads for algorithms whose time is in BLAS calls: all CPUs when BLAS can be held to one thread
    per worker (threadpoolctl), else one (BLAS's own threads then use the cores)."""
    return cpu_workers() if can_limit_blas() else 1


def map_batch(p, workers: int, part: Callable[..., T]) -> list[T]:
    """part(q, n0, n1) for the batch split into up to `workers` contiguous ranges [n0, n1), q being p with
    N = n1 - n0: each on a worker thread with its share of the workspace bound, NumPy's IEEE error state
    and BLAS held to one thread. The results in batch order (so that sums over them are deterministic)."""
    workers = max(1, min(workers, p.N))
    if workers == 1:
        with ieee():
            return [part(p, 0, p.N)]
    bounds = [p.N * i // workers for i in range(workers + 1)]

    def run(i):
        n0, n1 = bounds[i], bounds[i + 1]
        with config.numpy_workspace_share(workers), ieee():   # errstate is per thread
            return part(p.with_(N=n1 - n0), n0, n1)
    with blas_threads(1):
        return list(worker_pool().map(run, range(workers)))


@functools.lru_cache(maxsize=None)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def can_limit_blas() -> bool:
    return _blas_controller() is not None


@contextlib.contextmanager
def blas_threads(n: int):
    """BLAS limited to n threads inside the block (a no-op without threadpoolctl).

    The limit is process-wide, so concurrent calls share one: the first to enter sets it, the last to
    leave restores the original (nested save/restore pairs from several threads would interleave and
    could leave BLAS limited for good)."""
    global _blas_users, _blas_limit
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = controller.limit(limits=n, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit = None


def _reset_after_fork() -> None:
    """In a forked child: the parent's worker threads do not exist there, so a cached pool would wait
    forever on work no thread picks up, and a lock held by a parent thread at the fork stays held."""
    global _blas_lock, _blas_users, _blas_limit
    worker_pool.cache_clear()
    _blas_lock, _blas_users, _blas_limit = threading.Lock(), 0, None


os.register_at_fork(after_in_child=_reset_after_fork)
