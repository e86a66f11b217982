"""The NumPy backend: convolution as BLAS GEMMs over bounded chunks, on any host.

Algorithms, one module each
    pointwise  1x1 filter, stride 1, no padding: the input already is the GEMM's A matrix.
    gemm       im2col of one block of output pixels at a time into a workspace, then one batched
               GEMM over groups (numpy.matmul, BLAS). Any problem.
    depthwise  one input channel per group: multiply-adds of shifted input views, vectorised over
               channels, no GEMM (a GEMM with a reduction of KH*KW is mostly overhead).
    winograd   3x3 stride-1 undilated: Winograd F(2x2,3x3) / F(4x4,3x3) tiles.
    gradients  the two gradients: col2im, im2col, depthwise, per-tap GEMMs, and the stride-1 input
               gradient as a forward convolution on the algorithms above.

Shared helpers: slabs (tap slices and zero-padded input slabs of an output block), workspace (block
budgets under config's workspace bound), threads (the worker pool and the BLAS thread limit), ieee (the
floating-point error state); backend.py picks an algorithm, threads.map_batch splits the batch over the
workers.

Half types are widened to float32 chunk by chunk and the result rounded once; float64 stays float64.
Extra memory stays within config.settings.numpy_workspace_bytes beyond input, output and one copy of the
filters in the accumulator type (see config.set_workspace).
"""
from .backend import NumpyBackend

__all__ = ["NumpyBackend"]
