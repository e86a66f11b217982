// nonfinite_zero.cu - filters with NaN/Inf values replaced by +0, and a device flag saying whether any was.
//
// Computes  wz[i] = w[i] where finite, else +0 (and then *flag = 1), for the n filter elements.
// Layouts:  w, wz contiguous (HWIO, as the algorithms read them); flag one int, zeroed by the caller.
// Launch:   block = NONFINITE_THREADS (1-D); any grid (a grid-stride loop covers n); no shared memory.
// See nonfinite.cuh for why, and nonfinite_fixup.cu for the terms added afterwards.
#include "nonfinite.cuh"

template <typename T, typename I>
__device__ __forceinline__ void zero_nonfinite(const T* __restrict__ w, T* __restrict__ wz, long long n,
                                               int* __restrict__ flag) {
    for (I i = I(blockIdx.x) * NONFINITE_THREADS + threadIdx.x; i < I(n); i += I(gridDim.x) * NONFINITE_THREADS) {
        const T v = w[i];
        if (is_finite(load_acc(v))) {
            wz[i] = v;
        } else {
            wz[i] = store_acc<T>(0);
            atomicMax(flag, 1);
        }
    }
}

extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS)
nonfinite_zero_f32_i32(const float* __restrict__ w, float* __restrict__ wz, long long n, int* __restrict__ flag) { zero_nonfinite<float, int>(w, wz, n, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS)
nonfinite_zero_f32_i64(const float* __restrict__ w, float* __restrict__ wz, long long n, int* __restrict__ flag) { zero_nonfinite<float, long long>(w, wz, n, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS)
nonfinite_zero_f64_i32(const double* __restrict__ w, double* __restrict__ wz, long long n, int* __restrict__ flag) { zero_nonfinite<double, int>(w, wz, n, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS)
nonfinite_zero_f64_i64(const double* __restrict__ w, double* __restrict__ wz, long long n, int* __restrict__ flag) { zero_nonfinite<double, long long>(w, wz, n, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS)
nonfinite_zero_f16_i32(const __half* __restrict__ w, __half* __restrict__ wz, long long n, int* __restrict__ flag) { zero_nonfinite<__half, int>(w, wz, n, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS)
nonfinite_zero_f16_i64(const __half* __restrict__ w, __half* __restrict__ wz, long long n, int* __restrict__ flag) { zero_nonfinite<__half, long long>(w, wz, n, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS)
nonfinite_zero_bf16_i32(const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ wz, long long n, int* __restrict__ flag) { zero_nonfinite<__nv_bfloat16, int>(w, wz, n, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS)
nonfinite_zero_bf16_i64(const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ wz, long long n, int* __restrict__ flag) { zero_nonfinite<__nv_bfloat16, long long>(w, wz, n, flag); }
