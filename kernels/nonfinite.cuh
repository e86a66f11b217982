// nonfinite.cuh - what nonfinite_zero.cu and nonfinite_fixup.cu share: non-finite filter values handled
// on the device, with no transfer to the host.
//
// In tf.nn.conv2d a filter tap that falls on padding adds no term; the GEMM-style kernels multiply
// padding zeros instead (0 * Inf = NaN). So, as gpuconv/nonfinite.py does on the host (with the same
// results, bit for bit), the algorithms run on the filters with non-finite values zeroed
// (nonfinite_zero.cu, which also sets a flag in device memory), and afterwards every output adds the
// terms of its non-finite taps (nonfinite_fixup.cu, which returns at once while the flag is clear); an
// output where such a tap meets a non-finite input is recomputed from the definition instead (the
// zeroed sum holds an Inf * 0 = NaN there). The flag is written and read on the same stream: the host
// never reads it.
#pragma once

#include "common.cuh"

#ifndef NONFINITE_THREADS
#define NONFINITE_THREADS 128
#endif
static_assert(NONFINITE_THREADS % 32 == 0 && NONFINITE_THREADS <= 1024, "NONFINITE_THREADS: whole warps, at most 1024");

// Products and sums rounded one at a time: the host computes y + x * w with two roundings, so the GPU
// must not contract them into one FMA, and neither may g++ on hosts with FMA instructions.
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
#else
template <typename A> inline A mul_rn(A a, A b) { volatile A r = a * b; return r; }
template <typename A> inline A add_rn(A a, A b) { volatile A r = a + b; return r; }
#endif

// v - v is 0 for every finite v and NaN for NaN and +-Inf: no library call, any accumulator type.
template <typename A> __device__ __forceinline__ bool is_finite(A v) { return v - v == A(0); }
