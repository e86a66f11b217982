// gemm_splitk.cu - gemm.cu's tiled matrix product writing partial sums in the accumulator type.
//
// Computes   C[m, k] = sum_{r < R} A[m, r] * B[r, k]   exactly as gemm.cu (the same body, gemm.cuh, the
//            same GemmProblem strides), except that C holds float (double for double) and is not rounded
//            to the element type: the filter gradient splits its reduction over N*OH*OW output pixels
//            into slices, each block z of the grid computes one slice's (or one group's) product into its
//            own partial matrix, and split_k_reduce.cu adds the partials in a fixed order and rounds once.
// Layouts: as gemm.cu. For the filter gradient (gpuconv/backends/cuda/gradients.py):
//            A[m, r] = col[r][m]    the im2col rows of a slice of pixels, read transposed (a_s_r = R)
//            B[r, k] = dy[r][k]     the slice's output-gradient rows (NHWC, b_s_r = K)
//            C[m, k] = ws[m*K + k]  one HWIO-ordered partial [KH*KW*CG, K] per slice
// Launch:  block = GEMM_THREADS (1-D); grid = (ceil(M / GEMM_BM), ceil(KG / GEMM_BN), slices or groups);
//          static shared memory only, as gemm.cu (the tile macros are gemm.cuh's).
#include "gemm.cuh"

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_splitk_f32_i32(const GemmProblem q, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c) { gemm<float, int, float>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_splitk_f32_i64(const GemmProblem q, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c) { gemm<float, long long, float>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_splitk_f64_i32(const GemmProblem q, const double* __restrict__ a, const double* __restrict__ b, double* __restrict__ c) { gemm<double, int, double>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_splitk_f64_i64(const GemmProblem q, const double* __restrict__ a, const double* __restrict__ b, double* __restrict__ c) { gemm<double, long long, double>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_splitk_f16_i32(const GemmProblem q, const __half* __restrict__ a, const __half* __restrict__ b, float* __restrict__ c) { gemm<__half, int, float>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_splitk_f16_i64(const GemmProblem q, const __half* __restrict__ a, const __half* __restrict__ b, float* __restrict__ c) { gemm<__half, long long, float>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_splitk_bf16_i32(const GemmProblem q, const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b, float* __restrict__ c) { gemm<__nv_bfloat16, int, float>(q, a, b, c); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_gemm_splitk_bf16_i64(const GemmProblem q, const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b, float* __restrict__ c) { gemm<__nv_bfloat16, long long, float>(q, a, b, c); }
