"""Splitting one spatial axis of a convolution into blocks that each compute their own outputs.

Output o reads input rows [o*S - P, o*S - P + E) with E = (KH - 1) * D + 1 (rows outside [0, size) are
padding). Cutting the input at b_i = o_i*S - P for output boundaries o_i gives block i the outputs
[o_i, o_{i+1}): its own rows [b_i, b_{i+1}) plus the first E - S rows of the next block (none when
E <= S), and nothing of the previous one. That is an asymmetric halo (0, max(E - S, 0)), every output is
computed exactly once, and the blocks need no trimming. The first and last blocks add the padding.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class AxisSplit:
    """One spatial axis: input size, filter extent E, stride, pad before, output size, and the blocks."""
    size: int
    extent: int
    stride: int
    pad: int
    out_size: int
    out_bounds: tuple[int, ...]   # o_0 = 0 < o_1 < ... < o_n = out_size

    @property
    def in_bounds(self) -> tuple[int, ...]:
        """Where the input is cut: b_0 = 0, b_i = o_i*S - P, b_n = size."""
        inner = tuple(o * self.stride - self.pad for o in self.out_bounds[1:-1])
        return (0,) + inner + (self.size,)

    @property
    def in_chunks(self) -> tuple[int, ...]:
        b = self.in_bounds
        return tuple(hi - lo for lo, hi in zip(b[:-1], b[1:]))

    @property
    def out_chunks(self) -> tuple[int, ...]:
        o = self.out_bounds
        return tuple(hi - lo for lo, hi in zip(o[:-1], o[1:]))

    @property
    def halo_after(self) -> int:
        """Rows block i takes from block i + 1 (0 with a single block)."""
        return max(self.extent - self.stride, 0) if len(self.out_bounds) > 2 else 0

    def block_window(self, i: int) -> tuple[int, int, int, int]:
        """Block i's rows to use, relative to the block's start, and its pads: (lo, hi, pad_before, pad_after).
        lo == hi when its outputs read only padding."""
        o0, o1 = self.out_bounds[i], self.out_bounds[i + 1]
        need_lo = o0 * self.stride - self.pad
        need_hi = (o1 - 1) * self.stride - self.pad + self.extent
        lo, hi = max(need_lo, 0), min(need_hi, self.size)
        start = self.in_bounds[i]
        if hi <= lo:
            return 0, 0, 0, 0
        return lo - start, hi - start, lo - need_lo, need_hi - hi


def split_axis(size: int, extent: int, stride: int, pad: int, out_size: int,
               in_chunks: Sequence[int]) -> AxisSplit:
    """Output blocks that follow the input's chunk boundaries as closely as the stride allows.

    A boundary of the input moves to the nearest row b = o*S - P; boundaries that would leave a block
    smaller than the halo (which dask's overlap needs from each neighbour) or empty are dropped, so
    chunks smaller than the halo are merged with their neighbours."""
    halo = max(extent - stride, 0)
    least = max(halo, 1)
    bounds, prev_b, edge = [0], 0, 0
    for c in in_chunks[:-1]:
        edge += c
        o = min(max((edge + pad + stride // 2) // stride, 1), out_size - 1)  # nearest aligned row
        b = o * stride - pad
        if o > bounds[-1] and b - prev_b >= least and size - b >= least:
            bounds.append(o)
            prev_b = b
    bounds.append(out_size)
    return AxisSplit(size, extent, stride, pad, out_size, tuple(bounds))
