"""The input gradient as forward convolutions, for every backend's "forward-conv" algorithm.

With stride 1, dx is the forward convolution of dy with the filters flipped in space and their channels
swapped within each group, w'[kh, kw, k, g*CG + c] = w[KH-1-kh, KW-1-kw, c, g*KG + k], at the same
dilation, with padding (KH-1)*DH - PT above, (KH-1)*DH - PB below (likewise across): each dx pixel then
sums exactly the (dy pixel, tap) products that the definition's scatter adds into it.

With stride S (per axis), dx splits into S stride phases (rows ih = ph, ph + S, ...). Only the taps kh
with (ph + PT - kh*DH) divisible by S reach phase ph, every S/g-th tap (g = gcd(S, DH)), and they read
dy rows a + e_0, a + e_0 - DH/g, ... for the phase's row a: a stride-1 forward convolution of dy with
that sub-filter, flipped, at dilation DH/g (CUTLASS calls this strided dgrad). A phase's padding that
comes out negative crops dy instead; a phase that no tap reaches is zero. Each phase's result is written
into dx's strided view; stride 1 is one phase, computed in place. No multiply-add is wasted on the zeros
a stride would insert between dy's pixels.

The padded dy positions are read as zeros the way conv2d reads padding (a non-finite filter value times a
padding zero adds nothing), so the result matches TensorFlow's Conv2DBackpropInput, which adds only
products of real dy values.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

from ..problem import ConvProblem, parse_problem


@dataclasses.dataclass(frozen=True)
class AxisPhase:
    """One stride phase of one spatial axis: dx positions start, start + S, ... (count of them)."""
    start: int
    count: int
    taps: Optional[slice] = None     # the filter taps reaching it, in the forward convolution's order
    pads: tuple[int, int] = (0, 0)   # the forward convolution's padding on this axis
    dy: tuple[int, int] = (0, 0)     # the dy positions [lo, hi) it reads (a crop where a padding was negative)
    dilation: int = 1


def axis_phases(size: int, out: int, k: int, s: int, d: int, pad: int) -> list[AxisPhase]:
    """The non-empty stride phases of one axis (input size, output size, filter size, stride, dilation,
    padding before); taps None: no tap reaches the phase."""
    g = math.gcd(s, d)
    phases = []
    for ph in range(min(s, size)):
        count = len(range(ph, size, s))
        taps = [kk for kk in range(k) if (ph + pad - kk * d) % s == 0]
        if not taps:
            phases.append(AxisPhase(ph, count))
            continue
        dil, t = d // g, len(taps)
        e0 = (ph + pad - taps[0] * d) // s          # dy offset of the first tap
        before, after = (t - 1) * dil - e0, count + e0 - out
        lo, hi = max(0, -before), min(out, out + after)
        if hi <= lo:                                # every product falls outside dy
            phases.append(AxisPhase(ph, count))
            continue
        last = taps[-1]
        flipped = slice(last, taps[0] - 1 if taps[0] > 0 else None, -(s // g))
        phases.append(AxisPhase(ph, count, flipped, (max(before, 0), max(after, 0)), (lo, hi), dil))
    return phases


def is_one_phase(p: ConvProblem) -> bool:
    """Whether dx is one forward convolution computed in place: stride 1 and no padding beyond the
    dilated filter's extent (no dy crop)."""
    eh, ew = (p.KH - 1) * p.DH, (p.KW - 1) * p.DW
    return (p.SH, p.SW) == (1, 1) and min(eh - p.PT, eh - p.PB, ew - p.PL, ew - p.PR) >= 0


def _padding(layout: str, rows: tuple[int, int], cols: tuple[int, int]) -> list:
    spatial = [list(rows), list(cols)]
    return [[0, 0]] + spatial + [[0, 0]] if layout == "NHWC" else [[0, 0], [0, 0]] + spatial


@dataclasses.dataclass(frozen=True)
class Phase:
    rows: AxisPhase
    cols: AxisPhase

    @property
    def reached(self) -> bool:
        return self.rows.taps is not None and self.cols.taps is not None

    def problem(self, p: ConvProblem) -> ConvProblem:
        """The forward convolution of the phase (input: dy's crop, output: the phase of dx)."""
        n_h, n_w = self.rows.dy[1] - self.rows.dy[0], self.cols.dy[1] - self.cols.dy[0]
        dy_shape = (p.N, n_h, n_w, p.K) if p.layout == "NHWC" else (p.N, p.K, n_h, n_w)
        th = len(range(p.KH)[self.rows.taps])
        tw = len(range(p.KW)[self.cols.taps])
        return parse_problem(dy_shape, p.dtype, (th, tw, p.KG, p.C), p.dtype, 1,
                             _padding(p.layout, self.rows.pads, self.cols.pads), p.layout,
                             (self.rows.dilation, self.cols.dilation))[0]

    def filters(self, p: ConvProblem, w, xp):
        """The phase's HWIO filters (its taps flipped, channels swapped per group), contiguous in xp."""
        w5 = w.reshape(p.KH, p.KW, p.CG, p.G, p.KG)[self.rows.taps, self.cols.taps]
        return xp.ascontiguousarray(w5.transpose(0, 1, 4, 3, 2).reshape(w5.shape[:2] + (p.KG, p.C)))

    def dy(self, p: ConvProblem, dy, xp):
        """dy's crop the phase reads (dy itself where it reads all of it), contiguous in xp."""
        if (self.rows.dy, self.cols.dy) == ((0, p.OH), (0, p.OW)):
            return dy
        rows, cols = slice(*self.rows.dy), slice(*self.cols.dy)
        crop = dy[:, rows, cols] if p.layout == "NHWC" else dy[:, :, rows, cols]
        return xp.ascontiguousarray(crop)

    def target(self, p: ConvProblem, dx):
        """The phase's strided view of dx (in p's layout)."""
        rows, cols = slice(self.rows.start, None, p.SH), slice(self.cols.start, None, p.SW)
        return dx[:, rows, cols] if p.layout == "NHWC" else dx[:, :, rows, cols]


def phases(p: ConvProblem) -> list[Phase]:
    """dx's stride phases, each with its forward convolution (see the module's docstring)."""
    hs = axis_phases(p.H, p.OH, p.KH, p.SH, p.DH, p.PT)
    ws = axis_phases(p.W, p.OW, p.KW, p.SW, p.DW, p.PL)
    return [Phase(h, w) for h in hs for w in ws]


def forward_problem(p: ConvProblem) -> ConvProblem:
    """The one forward convolution of a one-phase problem (is_one_phase)."""
    (phase,) = phases(p)
    return phase.problem(p)


def _forward(backend, q: ConvProblem, a, f, out) -> None:
    """One forward convolution on `backend` into the contiguous array `out`, by its auto rule and with
    conv2d's non-finite filter handling."""
    backend.run_into(q, a, f, backend.choose(q), out)


def run(p: ConvProblem, w, dy, dx, backend) -> None:
    """dx (p's input shape and layout, contiguous, in backend.xp) from the filters w and dy, as forward
    convolutions on `backend`."""
    xp = backend.xp
    parts = phases(p)
    if is_one_phase(p):
        (phase,) = parts
        _forward(backend, phase.problem(p), dy, phase.filters(p, w, xp), dx)
        return
    for phase in parts:
        target = phase.target(p, dx)
        if not phase.reached:
            target[...] = 0
            continue
        fp = phase.problem(p)
        out = xp.empty(fp.output_shape, dx.dtype)
        _forward(backend, fp, phase.dy(p, dy, xp), phase.filters(p, w, xp), out)
        target[...] = out


# The filter gradient as one forward convolution. dw[kh, kw, c, k] = sum over (n, oh, ow) of
# x[n, oh*SH + kh*DH - PT, ow*SW + kw*DW - PL, c] * dy[n, oh, ow, k], for c and k of one group g: the
# convolution of the input with batch and channels swapped (CG images of G*N channels,
# x'[cg, h, w, g*N + n] = x[n, h, w, g*CG + cg]) with dy as the filters (OH x OW taps, N in and KG out per
# group: dy'[oh, ow, n, k]), in G groups, at stride (DH, DW) and dilation (SH, SW); its output
# [CG, KH, KW, K] is dw with one axis moved. The padding below (right) is cut to what the last tap row
# (column) reads, so that the output is exactly KH x KW; a cut below zero drops input rows (columns) that
# no output pixel reads.

def filter_problem(p: ConvProblem) -> tuple[ConvProblem, tuple[int, int]]:
    """The filter gradient's forward problem and the input rows and columns it reads."""
    pb = (p.KH - 1) * p.DH + (p.OH - 1) * p.SH + 1 - p.H - p.PT
    pr = (p.KW - 1) * p.DW + (p.OW - 1) * p.SW + 1 - p.W - p.PL
    rows, cols = p.H + min(pb, 0), p.W + min(pr, 0)
    q = parse_problem((p.CG, rows, cols, p.G * p.N), p.dtype, (p.OH, p.OW, p.N, p.K), p.dtype, (p.DH, p.DW),
                      [[0, 0], [p.PT, max(pb, 0)], [p.PL, max(pr, 0)], [0, 0]], "NHWC", (p.SH, p.SW))[0]
    return q, (rows, cols)


def run_filter(p: ConvProblem, x, dy, dw, backend) -> None:
    """dw (HWIO, contiguous, in backend.xp) from x and dy as one forward convolution (above) on `backend`.
    Holds x and dy once more, transposed."""
    xp = backend.xp
    q, (rows, cols) = filter_problem(p)
    xn, dyn = (x, dy) if p.layout == "NHWC" else (x.transpose(0, 2, 3, 1), dy.transpose(0, 2, 3, 1))
    x5 = xn[:, :rows, :cols].reshape(p.N, rows, cols, p.G, p.CG)
    xt = xp.ascontiguousarray(x5.transpose(4, 1, 2, 3, 0)).reshape(q.input_shape)   # [CG, rows, cols, G*N]
    dyt = xp.ascontiguousarray(dyn.transpose(1, 2, 0, 3))                           # [OH, OW, N, K]
    out = xp.empty(q.output_shape, dw.dtype)                                        # [CG, KH, KW, K]
    _forward(backend, q, xt, dyt, out)
    dw[...] = out.transpose(1, 2, 0, 3)
