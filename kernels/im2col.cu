// im2col.cu - unfold a block of output pixels' receptive fields into GEMM rows ("column matrix").
//
// Computes   col[g][m][r] = x[n, oh*SH - PT + kh*DH, ow*SW - PL + kw*DW, g*CG + c]   (0 outside the image)
//            for the Mc output pixels m0 <= m0 + m < m0 + Mc of the flattened (n, oh, ow) order,
//            with r = (kh*KW + kw)*CG + c: the same order as the rows of the HWIO filter matrix, so
//            gemm.cu multiplies col[g] (Mc x R) by the filters of group g (R x KG) directly.
// Layouts: x in any layout given by ConvProblem's strides; col contiguous [G][Mc][R], same type as x
//          (half types stay half: half the traffic; gemm.cu widens them when it stages tiles).
// Launch:  block = IM2COL_THREADS (1-D); grid.x = any (a grid-stride loop covers G*Mc*R elements);
//          no shared memory. Consecutive threads take consecutive r, i.e. consecutive channels:
//          coalesced reads for NHWC.
// The launcher sizes Mc so that col fits the workspace bound (default 256 MiB).
#include "common.cuh"

#ifndef IM2COL_THREADS
#define IM2COL_THREADS 256
#endif
static_assert(IM2COL_THREADS % 32 == 0 && IM2COL_THREADS <= 1024, "IM2COL_THREADS: whole warps, at most 1024");

template <typename T, typename I>
__device__ __forceinline__ void im2col(const ConvProblem p, const T* __restrict__ x, T* __restrict__ col,
                                       int m0, int Mc) {
    const int R = p.KH * p.KW * p.CG;
    const I total = I(p.G) * I(Mc) * I(R);
    for (I idx = I(blockIdx.x) * IM2COL_THREADS + threadIdx.x; idx < total; idx += I(gridDim.x) * IM2COL_THREADS) {
        const int r = int(idx % R);
        const I rest = idx / R;
        const int m = m0 + int(rest % Mc);
        const int g = int(rest / Mc);
        const int c = r % p.CG, tap = r / p.CG;
        const int kw = tap % p.KW, kh = tap / p.KW;
        const int ow = m % p.OW, oh = (m / p.OW) % p.OH, n = m / (p.OW * p.OH);
        const int ih = oh * p.SH - p.PT + kh * p.DH;
        const int iw = ow * p.SW - p.PL + kw * p.DW;
        T v = store_acc<T>(0);
        if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
            v = x[I(n) * I(p.xsN) + I(ih) * I(p.xsH) + I(iw) * I(p.xsW) + I(g * p.CG + c) * I(p.xsC)];
        col[idx] = v;
    }
}

extern "C" __global__ void __launch_bounds__(IM2COL_THREADS)
conv_im2col_f32_i32(const ConvProblem p, const float* __restrict__ x, float* __restrict__ col, int m0, int Mc) { im2col<float, int>(p, x, col, m0, Mc); }
extern "C" __global__ void __launch_bounds__(IM2COL_THREADS)
conv_im2col_f32_i64(const ConvProblem p, const float* __restrict__ x, float* __restrict__ col, int m0, int Mc) { im2col<float, long long>(p, x, col, m0, Mc); }
extern "C" __global__ void __launch_bounds__(IM2COL_THREADS)
conv_im2col_f64_i32(const ConvProblem p, const double* __restrict__ x, double* __restrict__ col, int m0, int Mc) { im2col<double, int>(p, x, col, m0, Mc); }
extern "C" __global__ void __launch_bounds__(IM2COL_THREADS)
conv_im2col_f64_i64(const ConvProblem p, const double* __restrict__ x, double* __restrict__ col, int m0, int Mc) { im2col<double, long long>(p, x, col, m0, Mc); }
extern "C" __global__ void __launch_bounds__(IM2COL_THREADS)
conv_im2col_f16_i32(const ConvProblem p, const __half* __restrict__ x, __half* __restrict__ col, int m0, int Mc) { im2col<__half, int>(p, x, col, m0, Mc); }
extern "C" __global__ void __launch_bounds__(IM2COL_THREADS)
conv_im2col_f16_i64(const ConvProblem p, const __half* __restrict__ x, __half* __restrict__ col, int m0, int Mc) { im2col<__half, long long>(p, x, col, m0, Mc); }
extern "C" __global__ void __launch_bounds__(IM2COL_THREADS)
conv_im2col_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ col, int m0, int Mc) { im2col<__nv_bfloat16, int>(p, x, col, m0, Mc); }
extern "C" __global__ void __launch_bounds__(IM2COL_THREADS)
conv_im2col_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ col, int m0, int Mc) { im2col<__nv_bfloat16, long long>(p, x, col, m0, Mc); }
