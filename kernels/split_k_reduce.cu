// split_k_reduce.cu - the second pass of a split-K product: add up partial sums in a fixed order, round once.
//
// Computes   out[i] = round_T( sum_{s = 0 .. splits-1} partials[s*count + i] )   for i < count
//            adding the partials in order s = 0, 1, ..., so the result is the same bits on every run and
//            on every GPU (no floating-point atomics anywhere): the determinism of the split-K GEMMs.
//            Two entry families share that sum:
//   split_k_reduce_*       out contiguous [count] in the producer's element order (the filter
//                          gradient's slices: gemm_splitk.cu, grad_filter_depthwise.cu).
//   conv_splitk_reduce_*   the forward implicit GEMM's slices: partials [splits][G][M][KG], element
//                          (g, m, k) written to y[n, oh, ow, g*KG + k] through ConvProblem's y strides
//                          (NHWC or NCHW), m = (n*OH + oh)*OW + ow, count = G*M*KG.
// Layouts: partials contiguous [splits][count] in the accumulator type (float; double for double).
// Launch:  block = SPLIT_K_REDUCE_THREADS (1-D); grid.x = any (a grid-stride loop covers count);
//          no shared memory. Consecutive threads read consecutive elements of each partial: coalesced.
#include "common.cuh"

#ifndef SPLIT_K_REDUCE_THREADS
#define SPLIT_K_REDUCE_THREADS 256
#endif
static_assert(SPLIT_K_REDUCE_THREADS % 32 == 0 && SPLIT_K_REDUCE_THREADS <= 1024,
              "SPLIT_K_REDUCE_THREADS: whole warps, at most 1024");

// Calls store(i, sum of element i over the slices) for every i < count, the slices added in order.
template <typename I, typename A, typename F>
__device__ __forceinline__ void for_each_sum(const A* __restrict__ partials, I count, int splits, F store) {
    for (I i = I(blockIdx.x) * SPLIT_K_REDUCE_THREADS + threadIdx.x; i < count;
         i += I(gridDim.x) * SPLIT_K_REDUCE_THREADS) {
        A acc = partials[i];
        for (int s = 1; s < splits; ++s) acc += partials[I(s) * count + i];
        store(i, acc);
    }
}

template <typename T, typename I>
__device__ __forceinline__ void split_k_reduce(const typename Acc<T>::type* __restrict__ partials,
                                               T* __restrict__ out, long long count, int splits) {
    using A = typename Acc<T>::type;
    for_each_sum<I>(partials, I(count), splits, [&](I i, A sum) { out[i] = store_acc<T>(sum); });
}

template <typename T, typename I>
__device__ __forceinline__ void conv_splitk_reduce(const ConvProblem p, const typename Acc<T>::type* __restrict__ part,
                                                   T* __restrict__ y, int splits) {
    using A = typename Acc<T>::type;
    const int M = p.N * p.OH * p.OW;
    for_each_sum<I>(part, I(p.G) * I(M) * I(p.KG), splits, [&](I idx, A sum) {
        const int k = int(idx % p.KG);
        const I gm = idx / p.KG;
        const int m = int(gm % M), g = int(gm / M);
        const int ow = m % p.OW, rest = m / p.OW;
        y[I(rest / p.OH) * I(p.ysN) + I(rest % p.OH) * I(p.ysH) + I(ow) * I(p.ysW) + I(g * p.KG + k) * I(p.ysK)] =
            store_acc<T>(sum);
    });
}

extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
split_k_reduce_f32_i32(const float* __restrict__ partials, float* __restrict__ out, long long count, int splits) { split_k_reduce<float, int>(partials, out, count, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
split_k_reduce_f32_i64(const float* __restrict__ partials, float* __restrict__ out, long long count, int splits) { split_k_reduce<float, long long>(partials, out, count, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
split_k_reduce_f64_i32(const double* __restrict__ partials, double* __restrict__ out, long long count, int splits) { split_k_reduce<double, int>(partials, out, count, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
split_k_reduce_f64_i64(const double* __restrict__ partials, double* __restrict__ out, long long count, int splits) { split_k_reduce<double, long long>(partials, out, count, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
split_k_reduce_f16_i32(const float* __restrict__ partials, __half* __restrict__ out, long long count, int splits) { split_k_reduce<__half, int>(partials, out, count, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
split_k_reduce_f16_i64(const float* __restrict__ partials, __half* __restrict__ out, long long count, int splits) { split_k_reduce<__half, long long>(partials, out, count, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
split_k_reduce_bf16_i32(const float* __restrict__ partials, __nv_bfloat16* __restrict__ out, long long count, int splits) { split_k_reduce<__nv_bfloat16, int>(partials, out, count, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
split_k_reduce_bf16_i64(const float* __restrict__ partials, __nv_bfloat16* __restrict__ out, long long count, int splits) { split_k_reduce<__nv_bfloat16, long long>(partials, out, count, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
conv_splitk_reduce_f32_i32(const ConvProblem p, const float* __restrict__ part, float* __restrict__ y, int splits) { conv_splitk_reduce<float, int>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
conv_splitk_reduce_f32_i64(const ConvProblem p, const float* __restrict__ part, float* __restrict__ y, int splits) { conv_splitk_reduce<float, long long>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
conv_splitk_reduce_f64_i32(const ConvProblem p, const double* __restrict__ part, double* __restrict__ y, int splits) { conv_splitk_reduce<double, int>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
conv_splitk_reduce_f64_i64(const ConvProblem p, const double* __restrict__ part, double* __restrict__ y, int splits) { conv_splitk_reduce<double, long long>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
conv_splitk_reduce_f16_i32(const ConvProblem p, const float* __restrict__ part, __half* __restrict__ y, int splits) { conv_splitk_reduce<__half, int>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
conv_splitk_reduce_f16_i64(const ConvProblem p, const float* __restrict__ part, __half* __restrict__ y, int splits) { conv_splitk_reduce<__half, long long>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
conv_splitk_reduce_bf16_i32(const ConvProblem p, const float* __restrict__ part, __nv_bfloat16* __restrict__ y, int splits) { conv_splitk_reduce<__nv_bfloat16, int>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLIT_K_REDUCE_THREADS)
conv_splitk_reduce_bf16_i64(const ConvProblem p, const float* __restrict__ part, __nv_bfloat16* __restrict__ y, int splits) { conv_splitk_reduce<__nv_bfloat16, long long>(p, part, y, splits); }
