// split_k_reduce.cu - the second pass of a split-K product: add up partial sums in a fixed order, round once.
//
// Computes   out[i] = round_T( sum_{s = 0 .. splits-1} partials[s*count + i] )   for i < count
//            adding the partials in order s = 0, 1, ..., so the result is the same bits on every run and
//            on every GPU (no floating-point atomics anywhere): the determinism of the split-K GEMMs.
//            Generic: any producer that writes `splits` partial arrays of `count` elements one after the
//            other (the filter gradient's slices today; a forward split-K could use it as is).
// Layouts: partials contiguous [splits][count] in the accumulator type (float; double for double);
//          out contiguous [count] in the element type. The element order is the producer's.
// Launch:  block = SPLIT_K_REDUCE_THREADS (1-D); grid.x = any (a grid-stride loop covers count);
//          no shared memory. Consecutive threads read consecutive elements of each partial: coalesced.
#include "common.cuh"

#ifndef SPLIT_K_REDUCE_THREADS
#define SPLIT_K_REDUCE_THREADS 256
#endif
static_assert(SPLIT_K_REDUCE_THREADS % 32 == 0 && SPLIT_K_REDUCE_THREADS <= 1024,
              "SPLIT_K_REDUCE_THREADS: whole warps, at most 1024");

template <typename T, typename I>
__device__ __forceinline__ void split_k_reduce(const typename Acc<T>::type* __restrict__ partials,
                                               T* __restrict__ out, long long count, int splits) {
    using A = typename Acc<T>::type;
    for (I i = I(blockIdx.x) * SPLIT_K_REDUCE_THREADS + threadIdx.x; i < I(count);
         i += I(gridDim.x) * SPLIT_K_REDUCE_THREADS) {
        A acc = partials[i];
        for (int s = 1; s < splits; ++s) acc += partials[I(s) * I(count) + i];
        out[i] = store_acc<T>(acc);
    }
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
