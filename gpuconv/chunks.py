"""Splitting the output into blocks whose workspace fits a byte budget.

A block is (n0, n1, oh0, oh1, ow0, ow1). Blocks are as large as the budget allows: whole images when
one image fits, else whole output rows of one image, else a segment of one row. Used by the NumPy
backend's im2col chunks and by the GPU im2col workspace.
"""
from __future__ import annotations

from typing import Iterator

from .problem import ConvProblem

Block = tuple[int, int, int, int, int, int]


def output_blocks(p: ConvProblem, bytes_per_pixel: int, budget: int) -> Iterator[Block]:
    pixels = max(1, budget // max(1, bytes_per_pixel))
    per_image = p.OH * p.OW
    if pixels >= per_image:
        nb = max(1, pixels // max(1, per_image))
        for n0 in range(0, p.N, nb):
            yield n0, min(p.N, n0 + nb), 0, p.OH, 0, p.OW
    elif pixels >= p.OW:
        rb = pixels // p.OW
        for n in range(p.N):
            for oh0 in range(0, p.OH, rb):
                yield n, n + 1, oh0, min(p.OH, oh0 + rb), 0, p.OW
    else:
        for n in range(p.N):
            for oh in range(p.OH):
                for ow0 in range(0, p.OW, pixels):
                    yield n, n + 1, oh, oh + 1, ow0, min(p.OW, ow0 + pixels)


def valid_range(o0: int, o1: int, stride: int, offset: int, size: int) -> tuple[int, int]:
    """Outputs o in [o0, o1) whose input index o*stride + offset lies in [0, size); empty as (a, a)."""
    lo = max(o0, -(-(-offset) // stride))  # ceil(-offset / stride)
    hi = min(o1, (size - 1 - offset) // stride + 1) if size - 1 - offset >= 0 else o0
    return (lo, hi) if lo < hi else (o0, o0)
