// grad_filter_depthwise.cu - the filter gradient of a depthwise convolution (CG = 1), as split-K partials.
//
// Computes   partials[s][kh][kw][k] = sum over the output pixels m of slice s (m in [s*L, s*L + L), the
//            flattened (n, oh, ow) order) of  x[n, oh*SH - PT + kh*DH, ow*SW - PL + kw*DW, k / KG] * dy[n, oh, ow, k]
//            in the accumulator type; split_k_reduce.cu then adds the slices in order and rounds once, giving
//            dW[kh, kw, 0, k]. One thread owns one (slice, tap, k) sum: no atomics, a fixed order.
// Why not gemm_splitk.cu: with one input channel per group the GEMM of a group is KH*KW x KG (9 x 1 for
//            MobileNet), so a 64x64 tile would be almost all idle threads, and there would be one GEMM per
//            channel. Here every thread does useful multiply-adds, KH*KW*K threads per slice.
// Layouts: x and dy in any layout given by ConvProblem's strides (xs*, ys*); partials contiguous
//          [slices][KH][KW][K] (HWIO with CG = 1).
// Launch:  block = GRAD_FILTER_DW_THREADS (1-D); grid = (any, slices): grid.x strides over KH*KW*K
//          (consecutive threads take consecutive k: coalesced NHWC loads), grid.y is the slice; no shared
//          memory. L = slice_len pixels per slice (the last slice may be shorter).
#include "common.cuh"

#ifndef GRAD_FILTER_DW_THREADS
#define GRAD_FILTER_DW_THREADS 256
#endif
static_assert(GRAD_FILTER_DW_THREADS % 32 == 0 && GRAD_FILTER_DW_THREADS <= 1024,
              "GRAD_FILTER_DW_THREADS: whole warps, at most 1024");

template <typename T, typename I>
__device__ __forceinline__ void grad_filter_depthwise(const ConvProblem p, const T* __restrict__ x,
                                                      const T* __restrict__ dy,
                                                      typename Acc<T>::type* __restrict__ partials, int slice_len) {
    using A = typename Acc<T>::type;
    // the filter's KH*KW*K elements fit int (the launcher checks, grid stride included): only pixel
    // indices need I, and the slice's first pixel is the only 64-bit division
    const int count = p.KH * p.KW * p.K;
    const I pixels = I(p.N) * I(p.OH) * I(p.OW);
    const I m_begin = I(blockIdx.y) * I(slice_len);
    const I m_end = m_begin + I(slice_len) < pixels ? m_begin + I(slice_len) : pixels;
    const int n_begin = int(m_begin / (I(p.OH) * I(p.OW)));
    const int first = int(m_begin - I(n_begin) * I(p.OH) * I(p.OW));  // pixel within its image
    for (int idx = blockIdx.x * GRAD_FILTER_DW_THREADS + threadIdx.x; idx < count;
         idx += gridDim.x * GRAD_FILTER_DW_THREADS) {
        const int k = idx % p.K, tap = idx / p.K;
        const int kh = tap / p.KW, kw = tap - kh * p.KW;
        const T* xc = x + I(k / p.KG) * I(p.xsC);
        const T* dyk = dy + I(k) * I(p.ysK);
        // the slice's first pixel, then stepped along ow, oh, n without dividing again
        int ow = first % p.OW, oh = first / p.OW, n = n_begin;
        A acc = A(0);
        for (I m = m_begin; m < m_end; ++m) {
            const int ih = oh * p.SH - p.PT + kh * p.DH, iw = ow * p.SW - p.PL + kw * p.DW;
            if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
                acc += load_acc(xc[I(n) * I(p.xsN) + I(ih) * I(p.xsH) + I(iw) * I(p.xsW)]) *
                       load_acc(dyk[I(n) * I(p.ysN) + I(oh) * I(p.ysH) + I(ow) * I(p.ysW)]);
            if (++ow == p.OW) {
                ow = 0;
                if (++oh == p.OH) { oh = 0; ++n; }
            }
        }
        partials[I(blockIdx.y) * I(count) + I(idx)] = acc;
    }
}

extern "C" __global__ void __launch_bounds__(GRAD_FILTER_DW_THREADS)
conv_grad_filter_dw_f32_i32(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partials, int slice_len) { grad_filter_depthwise<float, int>(p, x, dy, partials, slice_len); }
extern "C" __global__ void __launch_bounds__(GRAD_FILTER_DW_THREADS)
conv_grad_filter_dw_f32_i64(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partials, int slice_len) { grad_filter_depthwise<float, long long>(p, x, dy, partials, slice_len); }
extern "C" __global__ void __launch_bounds__(GRAD_FILTER_DW_THREADS)
conv_grad_filter_dw_f64_i32(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ dy, double* __restrict__ partials, int slice_len) { grad_filter_depthwise<double, int>(p, x, dy, partials, slice_len); }
extern "C" __global__ void __launch_bounds__(GRAD_FILTER_DW_THREADS)
conv_grad_filter_dw_f64_i64(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ dy, double* __restrict__ partials, int slice_len) { grad_filter_depthwise<double, long long>(p, x, dy, partials, slice_len); }
extern "C" __global__ void __launch_bounds__(GRAD_FILTER_DW_THREADS)
conv_grad_filter_dw_f16_i32(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ dy, float* __restrict__ partials, int slice_len) { grad_filter_depthwise<__half, int>(p, x, dy, partials, slice_len); }
extern "C" __global__ void __launch_bounds__(GRAD_FILTER_DW_THREADS)
conv_grad_filter_dw_f16_i64(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ dy, float* __restrict__ partials, int slice_len) { grad_filter_depthwise<__half, long long>(p, x, dy, partials, slice_len); }
extern "C" __global__ void __launch_bounds__(GRAD_FILTER_DW_THREADS)
conv_grad_filter_dw_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ dy, float* __restrict__ partials, int slice_len) { grad_filter_depthwise<__nv_bfloat16, int>(p, x, dy, partials, slice_len); }
extern "C" __global__ void __launch_bounds__(GRAD_FILTER_DW_THREADS)
conv_grad_filter_dw_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ dy, float* __restrict__ partials, int slice_len) { grad_filter_depthwise<__nv_bfloat16, long long>(p, x, dy, partials, slice_len); }
