// gemm.cu - the tiled matrix product behind im2col + GEMM and 1x1 convolutions (no cuBLAS).
//
// Computes, for each group g:   C[m, k] = sum_{r < R} A[m, r] * B[r, k]     m < M, k < KG
// where, in GemmProblem's strides (common.cuh),
//   A[m, r] = a[g*a_s_g + (m / a_mi)*a_s_img + (m % a_mi)*a_s_m + r*a_s_r]   im2col rows, or the input itself
//   B[r, k] = b[g*b_s_g + r*b_s_r + k]                                     HWIO filters: b_s_r = K, b_s_g = KG
//   C[m, k] = c[g*c_s_g + (mc / c_mi)*c_s_img + (mc % c_mi)*c_s_m + k*c_s_k], mc = c_m0 + m
// so the result lands directly in the NHWC or NCHW output, and an NCHW input is read in place.
//
// Launch:  block = GEMM_THREADS = (GEMM_BM/GEMM_TM) * (GEMM_BN/GEMM_TN) threads (1-D)
//          grid  = (ceil(M / GEMM_BM), ceil(KG / GEMM_BN), G); static shared memory only:
//          (GEMM_BK*(GEMM_BM+GEMM_PAD) + GEMM_BK*GEMM_BN) accumulator elements.
// Tiling:  each block computes a GEMM_BM x GEMM_BN tile of C, stepping through R GEMM_BK at a time:
//          A and B tiles are staged in shared memory (A transposed, so the inner loop reads both tiles
//          along rows), and each thread accumulates a GEMM_TM x GEMM_TN register tile.
//          Tiles are widened to the accumulator type when staged (float; double for double), and C is
//          rounded once at the store. When the host found rows aligned (vec_a / vec_b), tiles are loaded
//          4 elements per instruction (16 bytes for float).
// The body and its tile macros are in gemm.cuh, shared with gemm_splitk.cu (the filter gradient's partials).
#include "gemm.cuh"

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_f32_i32(const GemmProblem q, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c) { gemm<float, int>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_f32_i64(const GemmProblem q, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c) { gemm<float, long long>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_f64_i32(const GemmProblem q, const double* __restrict__ a, const double* __restrict__ b, double* __restrict__ c) { gemm<double, int>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_f64_i64(const GemmProblem q, const double* __restrict__ a, const double* __restrict__ b, double* __restrict__ c) { gemm<double, long long>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_f16_i32(const GemmProblem q, const __half* __restrict__ a, const __half* __restrict__ b, __half* __restrict__ c) { gemm<__half, int>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_f16_i64(const GemmProblem q, const __half* __restrict__ a, const __half* __restrict__ b, __half* __restrict__ c) { gemm<__half, long long>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_bf16_i32(const GemmProblem q, const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b, __nv_bfloat16* __restrict__ c) { gemm<__nv_bfloat16, int>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_bf16_i64(const GemmProblem q, const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b, __nv_bfloat16* __restrict__ c) { gemm<__nv_bfloat16, long long>(q, a, b, c); }
