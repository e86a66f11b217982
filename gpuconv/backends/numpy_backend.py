"""The NumPy backend: convolution as BLAS GEMMs over bounded chunks, on any host.

Algorithms
    pointwise  1x1 filter, stride 1, no padding: the input already is the GEMM's A matrix.
    gemm       im2col of one block of output pixels at a time into a workspace, then one batched
               GEMM over groups (numpy.matmul, BLAS). Any problem.
    depthwise  one input channel per group: multiply-adds of shifted input views, vectorised over
               channels, no GEMM (a GEMM with a reduction of KH*KW is mostly overhead).
    winograd   3x3 stride-1 undilated (see winograd.py), when present.

Half types are widened to float32 chunk by chunk and the result rounded once; float64 stays float64.
Extra memory stays within config.settings.numpy_workspace_bytes beyond input, output and one copy of the
filters in the accumulator type (see config.set_workspace).

Algorithms dominated by NumPy's single-threaded elementwise passes (depthwise; Winograd's transforms on
large images or bundled groups) split the batch over worker threads, each with its share of the
workspace and BLAS held to one thread (threadpoolctl, when installed). NumPy releases the GIL inside
its loops, so the passes run in parallel.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

from .. import config
from ..chunks import output_blocks, valid_range
from ..dtypes import accumulator
from ..problem import ConvProblem
from .base import Algorithm, Backend, pick_first


def nhwc_view(a: np.ndarray, layout: str) -> np.ndarray:
    return a if layout == "NHWC" else a.transpose(0, 2, 3, 1)


def group_filters(w: np.ndarray, p: ConvProblem, dtype) -> np.ndarray:
    """HWIO filters as G stacked [R, KG] matrices (R = KH*KW*CG in (kh, kw, c) order)."""
    return np.ascontiguousarray(w.astype(dtype, copy=False).reshape(p.R, p.G, p.KG).transpose(1, 0, 2))


def _taps(p: ConvProblem, block):
    """For each filter tap of an output block: the valid output sub-block and the input slices it reads."""
    n0, n1, oh0, oh1, ow0, ow1 = block
    for kh in range(p.KH):
        off_h = kh * p.DH - p.PT
        a, b = valid_range(oh0, oh1, p.SH, off_h, p.H)
        for kw in range(p.KW):
            off_w = kw * p.DW - p.PL
            c, d = valid_range(ow0, ow1, p.SW, off_w, p.W)
            rows = slice(a * p.SH + off_h, (b - 1) * p.SH + off_h + 1, p.SH) if b > a else None
            cols = slice(c * p.SW + off_w, (d - 1) * p.SW + off_w + 1, p.SW) if d > c else None
            yield kh, kw, (a - oh0, b - oh0), (c - ow0, d - ow0), rows, cols


def _covers(tap, block) -> bool:
    _, _, (a, b), (c, d), _, _ = tap
    return a == 0 and b == block[3] - block[2] and c == 0 and d == block[5] - block[4]


# Block sizes in bytes of workspace, below the workspace bound: chosen so that a block's working set stays
# in the caches between the copy and the GEMM (im2col) or across the KH*KW multiply-adds (depthwise).
# Measured with bench/tune_numpy.py on a 2-core EPYC (2 MiB L2 per core, 32 MiB L3).
GEMM_BLOCK_BYTES = 4 << 20
DEPTHWISE_BLOCK_BYTES = 4 << 20


def block_budget(cap: int) -> int:
    return min(cap, config.numpy_workspace_bytes())


def input_slab(p: ConvProblem, xv, block, ct, slab_buf):
    """The input pixels an output block reads, zero outside the image: [nb, hs, ws, C] in NHWC and dtype
    ct. A view of the input when the block reads no padding and no conversion is needed; else a copy
    in slab_buf (grown when too small). Returns (slab, slab_buf)."""
    n0, n1, oh0, oh1, ow0, ow1 = block
    h0, w0 = oh0 * p.SH - p.PT, ow0 * p.SW - p.PL
    hs = (oh1 - oh0 - 1) * p.SH + (p.KH - 1) * p.DH + 1
    ws = (ow1 - ow0 - 1) * p.SW + (p.KW - 1) * p.DW + 1
    inside = h0 >= 0 and w0 >= 0 and h0 + hs <= p.H and w0 + ws <= p.W
    if inside and xv.dtype == ct and xv.strides[3] == xv.itemsize:
        return xv[n0:n1, h0:h0 + hs, w0:w0 + ws], slab_buf
    C = xv.shape[3]  # p.C, or a channel slice of it (Winograd's filter blocks)
    need = (n1 - n0) * hs * ws * C
    if slab_buf is None or slab_buf.size < need:
        slab_buf = np.empty(need, ct)
    slab = slab_buf[:need].reshape(n1 - n0, hs, ws, C)
    a0, a1 = max(h0, 0), min(h0 + hs, p.H)
    b0, b1 = max(w0, 0), min(w0 + ws, p.W)
    if not inside:
        slab.fill(0)
    if a1 > a0 and b1 > b0:
        slab[:, a0 - h0:a1 - h0, b0 - w0:b1 - w0] = xv[n0:n1, a0:a1, b0:b1]
    return slab, slab_buf


class Pointwise(Algorithm):
    name = "pointwise"
    summary = "1x1 stride-1 unpadded: a plain (grouped) GEMM on the input, no im2col"

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None if p.is_pointwise else "needs a 1x1 filter with stride 1 and no padding"

    def run(self, p, x, w, out):
        ct = accumulator(p.dtype)
        wg = group_filters(w, p, ct)                      # [G, C/G, K/G]
        budget = config.numpy_workspace_bytes()
        if p.layout == "NHWC":
            # Groups as strided views of the rows ([G, rows, CG] with row stride C): BLAS reads and writes
            # them in place, so a chunk needs only its conversions to and from the compute type.
            xm, ym = x.reshape(p.M, p.C), out.reshape(p.M, p.K)
            per_row = ct.itemsize * (p.C * (x.dtype != ct) + p.K * (out.dtype != ct)) or 1
            step = max(1, budget // per_row)
            for m0 in range(0, p.M, step):
                a = xm[m0:m0 + step].astype(ct, copy=False)
                a3 = a.reshape(-1, p.G, p.CG).transpose(1, 0, 2)
                y3 = ym[m0:m0 + step].reshape(-1, p.G, p.KG).transpose(1, 0, 2)
                if out.dtype == ct:
                    np.matmul(a3, wg, out=y3)
                else:
                    y3[...] = np.matmul(a3, wg)
        else:
            # NCHW: per image, y[n] (K, HW) = w^T (K, C) @ x[n] (C, HW), batched over groups.
            wt = np.ascontiguousarray(wg.transpose(0, 2, 1))  # [G, KG, CG]
            hw = p.H * p.W
            xm, ym = x.reshape(p.N, p.G, p.CG, hw), out.reshape(p.N, p.G, p.KG, hw)
            per_col = ct.itemsize * (p.C * (x.dtype != ct) + p.K * (out.dtype != ct)) or 1
            step = max(1, budget // per_col)
            for n in range(p.N):
                for j in range(0, hw, step):
                    a = xm[n, :, :, j:j + step].astype(ct, copy=False)
                    if out.dtype == ct:
                        np.matmul(wt, a, out=ym[n, :, :, j:j + step])
                    else:
                        ym[n, :, :, j:j + step] = np.matmul(wt, a)


class Im2colGemm(Algorithm):
    name = "gemm"
    summary = "im2col of bounded output blocks + batched BLAS GEMM over groups; runs every problem"

    def run(self, p, x, w, out):
        ct = accumulator(p.dtype)
        wg = group_filters(w, p, ct)                      # [G, R, KG]
        xv, yv = nhwc_view(x, p.layout), nhwc_view(out, p.layout)
        # Per output pixel: its column row and its GEMM result row, plus (G = 1) its share of the block's
        # input slab, SH*SW*C values, taken 4x for the halo the filter's reach adds to a block.
        per_pixel = ct.itemsize * (p.G * p.R + p.K + (p.G == 1) * p.SH * p.SW * p.C * 4)
        budget = block_budget(GEMM_BLOCK_BYTES)
        buf, slab_buf = None, None
        for block in output_blocks(p, per_pixel, budget):
            n0, n1, oh0, oh1, ow0, ow1 = block
            nb, hb, wb = n1 - n0, oh1 - oh0, ow1 - ow0
            rows = nb * hb * wb
            if buf is None:
                buf = np.empty(rows * p.G * p.R, ct)       # the first block is the largest
            col = buf[:rows * p.G * p.R].reshape(p.G, nb, hb, wb, p.KH, p.KW, p.CG)
            slab_bytes = ct.itemsize * nb * p.C * ((hb - 1) * p.SH + (p.KH - 1) * p.DH + 1) * (
                (wb - 1) * p.SW + (p.KW - 1) * p.DW + 1)
            if p.G == 1 and slab_bytes <= budget - ct.itemsize * rows * (p.R + p.K):
                # One strided copy from a zero-padded slab of the block's input: for dilation 1 a filter
                # row's KW*C inputs are contiguous, so the copy moves runs of KW*C values, not C (the
                # 7x7 stem with C = 3 copies 21-value runs instead of 3-value ones). Blocks whose slab
                # would break the workspace bound (a wide dilated filter over a thin block) take the
                # per-tap copies below instead.
                slab, slab_buf = input_slab(p, xv, block, ct, slab_buf)
                sn, sh, sw, sc = slab.strides
                view = np.lib.stride_tricks.as_strided(
                    slab, (nb, hb, wb, p.KH, p.KW, p.C),
                    (sn, p.SH * sh, p.SW * sw, p.DH * sh, p.DW * sw, sc), writeable=False)
                np.copyto(col[0], view)
            else:
                taps = list(_taps(p, block))
                if not all(_covers(t, block) for t in taps):
                    col.fill(0)
                for kh, kw, (a, b), (c, d), rs, cs in taps:
                    if rs is None or cs is None:
                        continue
                    src = xv[n0:n1, rs, cs].reshape(nb, b - a, d - c, p.G, p.CG)
                    col[:, :, a:b, c:d, kh, kw, :] = src.transpose(3, 0, 1, 2, 4)
            target = yv[n0:n1, oh0:oh1, ow0:ow1]
            a_mat = col.reshape(p.G, rows, p.R)
            if p.G == 1 and out.dtype == ct and target.flags.c_contiguous:
                np.matmul(a_mat[0], wg[0], out=target.reshape(rows, p.K))
            else:
                r = np.matmul(a_mat, wg)                  # [G, rows, KG]
                target[...] = r.transpose(1, 0, 2).reshape(nb, hb, wb, p.K)


class Depthwise(Algorithm):
    name = "depthwise"
    summary = "one input channel per group: shifted multiply-adds vectorised over channels"

    def workers(self, p: ConvProblem) -> int:
        # no BLAS at all: elementwise passes only, measured 1.5x faster on 2 threads (mobilenet layer)
        return cpu_workers()

    def why_not(self, p: ConvProblem) -> Optional[str]:
        return None if p.CG == 1 else f"needs one input channel per group (CG=1), got CG={p.CG}"

    def run(self, p, x, w, out):
        ct = accumulator(p.dtype)
        mult = p.KG                                       # channel multiplier
        wt = w.astype(ct, copy=False).reshape(p.KH, p.KW, p.C, mult)
        xv, yv = nhwc_view(x, p.layout), nhwc_view(out, p.layout)
        per_pixel = 2 * ct.itemsize * p.K                 # accumulator + product
        bufs = None
        for block in output_blocks(p, per_pixel, block_budget(DEPTHWISE_BLOCK_BYTES)):
            n0, n1, oh0, oh1, ow0, ow1 = block
            shape = (n1 - n0, oh1 - oh0, ow1 - ow0, p.C, mult)
            if bufs is None:                              # the first block is the largest: reuse it
                bufs = np.empty((2, int(np.prod(shape))), ct)
            acc, tmp = (b[:int(np.prod(shape))].reshape(shape) for b in bufs)
            acc.fill(0)
            for kh, kw, (a, b), (c, d), rs, cs in _taps(p, block):
                if rs is None or cs is None:
                    continue
                t = tmp[:, a:b, c:d]
                if mult == 1:      # no broadcast axis: NumPy runs the multiply unbuffered
                    np.multiply(xv[n0:n1, rs, cs], wt[kh, kw, :, 0], out=t[..., 0])
                else:
                    np.multiply(xv[n0:n1, rs, cs][..., None], wt[kh, kw], out=t)
                np.add(acc[:, a:b, c:d], t, out=acc[:, a:b, c:d])
            yv[n0:n1, oh0:oh1, ow0:ow1] = acc.reshape(acc.shape[:3] + (p.K,))


class NumpyBackend(Backend):
    name = "numpy"
    summary = "NumPy + BLAS on the CPU; any host"

    def __init__(self):
        self._algos: dict[str, Algorithm] = {a.name: a for a in (Pointwise(), Depthwise(), Im2colGemm())}
        try:
            from .winograd import Winograd
        except ImportError:
            pass
        else:
            self._algos[Winograd.name] = Winograd()

    def algorithms(self):
        return dict(self._algos)

    def auto_rule(self) -> str:
        return ("pointwise for 1x1/stride 1/unpadded; depthwise when CG=1; winograd for 3x3 stride-1 "
                "undilated layers whose per-GEMM reduction (input channels of a bundle of groups) is >= 16; "
                "gemm otherwise")

    def choose(self, p: ConvProblem) -> Algorithm:
        order = [self._algos[n] for n in ("pointwise", "depthwise", "winograd", "gemm") if n in self._algos]
        if "winograd" in self._algos:
            from .winograd import bundle_size
            # With a handful of input channels (the seed case's RGB, C = 3) Winograd's GEMMs have a
            # reduction of 3 and run far from peak, while im2col's reduction is 9x longer: measured 2x
            # slower than gemm at C = 3, faster from C = 16 up (bench/tune_numpy.py).
            if bundle_size(p) * p.CG < 16:
                order.remove(self._algos["winograd"])
        return pick_first(order, p, self.auto_rule())

    def owns(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def run(self, p, x, w, algorithm):
        algo = self.choose(p) if algorithm == "auto" else self._algos[algorithm]
        out = np.empty(p.output_shape, p.dtype)
        if p.is_empty:
            return out
        x, w = np.asarray(x), np.ascontiguousarray(w)
        workers = min(getattr(algo, "workers", lambda p: 1)(p), p.N)
        if workers <= 1:
            with _ieee():
                algo.run(p, x, w, out)
            return out
        bounds = np.linspace(0, p.N, workers + 1).astype(int)

        def part(i):
            n0, n1 = bounds[i], bounds[i + 1]
            with config.numpy_workspace_share(workers), _ieee():   # errstate is per thread
                algo.run(p.with_(N=int(n1 - n0)), x[n0:n1], w, out[n0:n1])
        with blas_threads(1):
            list(worker_pool().map(part, range(workers)))
        return out


def _ieee():
    """NaN and Inf results are IEEE arithmetic's answers (Inf * 0 = NaN, overflow = Inf), part of the
    contract, not something to warn a user about."""
    return np.errstate(all="ignore")


def cpu_workers() -> int:
    """Threads worth running elementwise NumPy work on: the CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def worker_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=cpu_workers(), thread_name_prefix="gpuconv")


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
