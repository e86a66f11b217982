// splitk_reduce.cu - the second pass of split-K implicit GEMM: the partial sums' total, in a fixed order.
//
// Computes   y[n, oh, ow, g*KG + k] = sum_{s < splits} part[s][g][m][k]   (s ascending), m = (n*OH + oh)*OW + ow
//            rounded once to y's type. The order never depends on scheduling, so results are
//            reproducible bit for bit (no atomics).
// Layouts: part contiguous [splits][G][M][KG] in the accumulator type (implicit_gemm.cu writes it);
//          y in any layout given by ConvProblem's y strides (NHWC or NCHW).
// Launch:  block = SPLITK_THREADS (1-D); grid.x = any (a grid-stride loop covers G*M*KG elements);
//          no shared memory. Consecutive threads take consecutive k: coalesced reads of part.
#include "common.cuh"

#ifndef SPLITK_THREADS
#define SPLITK_THREADS 256
#endif
static_assert(SPLITK_THREADS % 32 == 0 && SPLITK_THREADS <= 1024, "SPLITK_THREADS: whole warps, at most 1024");

template <typename T, typename I>
__device__ __forceinline__ void splitk_reduce(const ConvProblem p, const typename Acc<T>::type* __restrict__ part,
                                              T* __restrict__ y, int splits) {
    using A = typename Acc<T>::type;
    const int M = p.N * p.OH * p.OW;
    const I slice = I(p.G) * I(M) * I(p.KG);
    for (I idx = I(blockIdx.x) * SPLITK_THREADS + threadIdx.x; idx < slice; idx += I(gridDim.x) * SPLITK_THREADS) {
        A sum = part[idx];
        for (int s = 1; s < splits; ++s) sum += part[I(s) * slice + idx];
        const int k = int(idx % p.KG);
        const I gm = idx / p.KG;
        const int m = int(gm % M), g = int(gm / M);
        const int ow = m % p.OW, rest = m / p.OW;
        y[I(rest / p.OH) * I(p.ysN) + I(rest % p.OH) * I(p.ysH) + I(ow) * I(p.ysW) + I(g * p.KG + k) * I(p.ysK)] =
            store_acc<T>(sum);
    }
}

extern "C" __global__ void __launch_bounds__(SPLITK_THREADS)
conv_splitk_reduce_f32_i32(const ConvProblem p, const float* __restrict__ part, float* __restrict__ y, int splits) { splitk_reduce<float, int>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLITK_THREADS)
conv_splitk_reduce_f32_i64(const ConvProblem p, const float* __restrict__ part, float* __restrict__ y, int splits) { splitk_reduce<float, long long>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLITK_THREADS)
conv_splitk_reduce_f64_i32(const ConvProblem p, const double* __restrict__ part, double* __restrict__ y, int splits) { splitk_reduce<double, int>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLITK_THREADS)
conv_splitk_reduce_f64_i64(const ConvProblem p, const double* __restrict__ part, double* __restrict__ y, int splits) { splitk_reduce<double, long long>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLITK_THREADS)
conv_splitk_reduce_f16_i32(const ConvProblem p, const float* __restrict__ part, __half* __restrict__ y, int splits) { splitk_reduce<__half, int>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLITK_THREADS)
conv_splitk_reduce_f16_i64(const ConvProblem p, const float* __restrict__ part, __half* __restrict__ y, int splits) { splitk_reduce<__half, long long>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLITK_THREADS)
conv_splitk_reduce_bf16_i32(const ConvProblem p, const float* __restrict__ part, __nv_bfloat16* __restrict__ y, int splits) { splitk_reduce<__nv_bfloat16, int>(p, part, y, splits); }
extern "C" __global__ void __launch_bounds__(SPLITK_THREADS)
conv_splitk_reduce_bf16_i64(const ConvProblem p, const float* __restrict__ part, __nv_bfloat16* __restrict__ y, int splits) { splitk_reduce<__nv_bfloat16, long long>(p, part, y, splits); }
