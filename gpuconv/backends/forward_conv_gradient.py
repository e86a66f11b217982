"""The input gradient of a stride-1 convolution as a forward convolution, for every backend's
"forward-conv" algorithm.

With stride 1, dx is the forward convolution of dy with the filters flipped in space and their channels
swapped within each group, w'[kh, kw, k, g*CG + c] = w[KH-1-kh, KW-1-kw, c, g*KG + k], at the same
dilation, with padding (KH-1)*DH - PT above, (KH-1)*DH - PB below (likewise across): each dx pixel then
sums exactly the (dy pixel, tap) products that the strided scatter of the definition adds into it. The
padded dy positions are read as zeros the way conv2d reads padding (a non-finite filter value times a
padding zero adds nothing), so the result matches TensorFlow's Conv2DBackpropInput, which adds only
products of real dy values.
"""
from __future__ import annotations

from typing import Optional

from ..problem import ConvProblem, parse_problem


def pads(p: ConvProblem) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of the forward convolution computing p's input gradient."""
    eh, ew = (p.KH - 1) * p.DH, (p.KW - 1) * p.DW
    return eh - p.PT, eh - p.PB, ew - p.PL, ew - p.PR


def why_not(p: ConvProblem) -> Optional[str]:
    """Why p's input gradient is not a forward convolution (None: it is)."""
    if (p.SH, p.SW) != (1, 1):
        return f"strides ({p.SH}, {p.SW}): only stride 1 makes the input gradient a forward convolution"
    if min(pads(p)) < 0:
        return (f"padding ({p.PT}, {p.PB}, {p.PL}, {p.PR}) beyond the dilated filter's extent "
                f"({(p.KH - 1) * p.DH}, {(p.KW - 1) * p.DW}) would need negative padding")
    return None


def padding(p: ConvProblem) -> list:
    """conv2d's explicit `padding` argument for the forward convolution, in p's layout."""
    pt, pb, pl, pr = pads(p)
    spatial = [[pt, pb], [pl, pr]]
    return [[0, 0]] + spatial + [[0, 0]] if p.layout == "NHWC" else [[0, 0], [0, 0]] + spatial


def forward_problem(p: ConvProblem) -> ConvProblem:
    """The forward convolution (input dy, output dx) as a problem of its own."""
    dy_shape = p.output_shape if p.layout == "NHWC" else (p.N, p.K, p.OH, p.OW)
    return parse_problem(dy_shape, p.dtype, (p.KH, p.KW, p.KG, p.C), p.dtype, 1, padding(p), p.layout,
                         (p.DH, p.DW))[0]


def flipped_filters(p: ConvProblem, w, xp):
    """The forward convolution's HWIO filters, contiguous, in xp (numpy or cupy): one small copy."""
    return xp.ascontiguousarray(w.reshape(p.KH, p.KW, p.CG, p.G, p.KG)[::-1, ::-1].transpose(0, 1, 4, 3, 2)
                                .reshape(p.KH, p.KW, p.KG, p.C))
