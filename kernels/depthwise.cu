// depthwise.cu - depthwise convolution (one input channel per group, CG = 1), one thread per output.
//
// Computes   y[n, oh, ow, k] = sum_{kh, kw} x[n, oh*SH - PT + kh*DH, ow*SW - PL + kw*DW, k / KG] * w[kh, kw, 0, k]
// for G = C groups of one input channel each, KG = K / C output channels per input channel (the
// channel multiplier); taps on padding add nothing.
//
// Layouts: x and y in any layout given by ConvProblem's strides (NHWC and NCHW); w contiguous HWIO
//          [KH, KW, 1, K].
// Launch:  block = DEPTHWISE_THREADS (1-D); grid.x = any (a grid-stride loop covers N*OH*OW*K outputs);
//          no shared memory.
// Why not direct.cu: with one input channel per group, direct.cu's channel tile (DIRECT_TILE_K output
// channels of one group) is mostly idle threads. Depthwise work is KH*KW multiply-adds per output and
// memory-bound, so the simplest mapping wins: consecutive threads take consecutive outputs in memory
// order (channels for NHWC, columns for NCHW), every load is coalesced, and the KH*KW neighbouring
// reads of a thread hit in L1/L2 because its neighbours read the same pixels.
#include "common.cuh"

#ifndef DEPTHWISE_THREADS
#define DEPTHWISE_THREADS 256
#endif
static_assert(DEPTHWISE_THREADS % 32 == 0 && DEPTHWISE_THREADS <= 1024,
              "DEPTHWISE_THREADS: whole warps, at most 1024");

template <typename T, typename I>
__device__ __forceinline__ void depthwise(const ConvProblem p, const T* __restrict__ x,
                                          const T* __restrict__ w, T* __restrict__ y) {
    using A = typename Acc<T>::type;
    const I total = I(p.N) * I(p.OH) * I(p.OW) * I(p.K);
    const bool channels_fastest = p.ysK == 1;
    for (I idx = I(blockIdx.x) * DEPTHWISE_THREADS + threadIdx.x; idx < total;
         idx += I(gridDim.x) * DEPTHWISE_THREADS) {
        int k, ow, oh, n;
        if (channels_fastest) {  // idx = ((n*OH + oh)*OW + ow)*K + k
            k = int(idx % p.K);
            const I r = idx / p.K;
            ow = int(r % p.OW); oh = int((r / p.OW) % p.OH); n = int(r / (I(p.OW) * p.OH));
        } else {                 // idx = ((n*K + k)*OH + oh)*OW + ow
            ow = int(idx % p.OW);
            const I r = idx / p.OW;
            oh = int(r % p.OH); k = int((r / p.OH) % p.K); n = int(r / (I(p.OH) * p.K));
        }
        const T* xc = x + I(n) * I(p.xsN) + I(k / p.KG) * I(p.xsC);
        A acc = A(0);
        for (int kh = 0; kh < p.KH; ++kh) {
            const int ih = oh * p.SH - p.PT + kh * p.DH;
            if (ih < 0 || ih >= p.H) continue;
            for (int kw = 0; kw < p.KW; ++kw) {
                const int iw = ow * p.SW - p.PL + kw * p.DW;
                if (iw < 0 || iw >= p.W) continue;
                acc += load_acc(xc[I(ih) * I(p.xsH) + I(iw) * I(p.xsW)]) * load_acc(w[(kh * p.KW + kw) * p.K + k]);
            }
        }
        y[I(n) * I(p.ysN) + I(oh) * I(p.ysH) + I(ow) * I(p.ysW) + I(k) * I(p.ysK)] = store_acc<T>(acc);
    }
}

extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS)
conv_depthwise_f32_i32(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y) { depthwise<float, int>(p, x, w, y); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS)
conv_depthwise_f32_i64(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y) { depthwise<float, long long>(p, x, w, y); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS)
conv_depthwise_f64_i32(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y) { depthwise<double, int>(p, x, w, y); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS)
conv_depthwise_f64_i64(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y) { depthwise<double, long long>(p, x, w, y); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS)
conv_depthwise_f16_i32(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y) { depthwise<__half, int>(p, x, w, y); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS)
conv_depthwise_f16_i64(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y) { depthwise<__half, long long>(p, x, w, y); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS)
conv_depthwise_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y) { depthwise<__nv_bfloat16, int>(p, x, w, y); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS)
conv_depthwise_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y) { depthwise<__nv_bfloat16, long long>(p, x, w, y); }
