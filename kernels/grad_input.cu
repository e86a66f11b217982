// grad_input.cu - the input gradient of a convolution (the transposed convolution) as a gather.
//
// Computes   dx[n, ih, iw, c] = sum over the taps (kh, kw) that read (ih, iw) and the KG output channels k
//            of c's group g:  dy[n, oh, ow, g*KG + k] * w[kh, kw, c - g*CG, g*KG + k],
//            where oh*SH = ih + PT - kh*DH and ow*SW = iw + PL - kw*DW (0 <= oh < OH, 0 <= ow < OW).
//            One thread owns one dx element: it adds exactly its own terms, in a fixed order, and writes
//            once, rounded once (no scatter, no atomics, no zero-initialised output). Strided layers:
//            only the taps with kh*DH = ih + PT (mod SH) read the pixel; they are every SH/gcd(SH, DH)-th
//            tap from the first such one, so the loop visits those and never the zero taps between them.
// Why a gather and not dy @ w^T into a workspace followed by col2im: the same multiply-adds
//            (KH*KW*KG / (SH*SW) per dx element on average), but no workspace of N*OH*OW*KH*KW*CG
//            elements, no second pass over it, and a single rounding for half types (gemm.cu rounds its
//            output to the element type, which col2im would then add up: two roundings). The GEMM would
//            win on data reuse for large KG; this kernel relies on the caches for that (the dy values of
//            a pixel are shared by the CG threads of a group, the filter values by neighbouring pixels).
// Depthwise (CG = 1): the cheap path is this kernel as is: KH*KW*KG/(SH*SW) multiply-adds per element,
//            and the host passes the filters without the transposed copy (for CG = 1 it is the same array).
// Layouts: dy and dx in any layout given by ConvProblem's strides (ys* for dy, xs* for dx);
//          wt contiguous [KH][KW][G][KG][CG] (the HWIO filters with CG innermost: consecutive threads of
//          an NHWC dx take consecutive c and read consecutive filter values).
// Launch:  block = GRAD_INPUT_THREADS (1-D); grid.x = any (a grid-stride loop covers N*H*W*C elements
//          in dx's memory order: channels fastest for NHWC, columns for NCHW); no shared memory.
#include "common.cuh"

#ifndef GRAD_INPUT_THREADS
#define GRAD_INPUT_THREADS 256
#endif
static_assert(GRAD_INPUT_THREADS % 32 == 0 && GRAD_INPUT_THREADS <= 1024, "GRAD_INPUT_THREADS: whole warps, at most 1024");

__device__ __forceinline__ int gcd_int(int a, int b) {
    while (b != 0) { const int t = a % b; a = b; b = t; }
    return a;
}

// The first tap k < step whose offset t - k*d is a multiple of s (the taps that read this pixel are k,
// k + step, ...), or `none` when there is none.
__device__ __forceinline__ int first_tap(int t, int d, int s, int step, int none) {
    for (int k = 0; k < step; ++k)
        if ((t - k * d) % s == 0) return k;
    return none;
}

template <typename T, typename I>
__device__ __forceinline__ void grad_input(const ConvProblem p, const T* __restrict__ dy,
                                           const T* __restrict__ wt, T* __restrict__ dx) {
    using A = typename Acc<T>::type;
    const I total = I(p.N) * I(p.H) * I(p.W) * I(p.C);
    const bool channels_fastest = p.xsC == 1;
    const int step_h = p.SH / gcd_int(p.SH, p.DH), step_w = p.SW / gcd_int(p.SW, p.DW);
    const I tap_stride = I(p.K) * I(p.CG);  // wt elements per (kh, kw)
    for (I idx = I(blockIdx.x) * GRAD_INPUT_THREADS + threadIdx.x; idx < total;
         idx += I(gridDim.x) * GRAD_INPUT_THREADS) {
        int c, iw, ih, n;
        if (channels_fastest) {  // idx = ((n*H + ih)*W + iw)*C + c
            c = int(idx % p.C);
            const I r = idx / p.C;
            iw = int(r % p.W); ih = int((r / p.W) % p.H); n = int(r / (I(p.W) * p.H));
        } else {                 // idx = ((n*C + c)*H + ih)*W + iw
            iw = int(idx % p.W);
            const I r = idx / p.W;
            ih = int(r % p.H); c = int((r / p.H) % p.C); n = int(r / (I(p.H) * p.C));
        }
        const int g = c / p.CG, cg = c - g * p.CG;
        const T* dyn = dy + I(n) * I(p.ysN) + I(g) * I(p.KG) * I(p.ysK);
        const T* wg = wt + I(g) * I(p.KG) * I(p.CG) + cg;
        const int th0 = ih + p.PT, tw0 = iw + p.PL;
        const int kw_first = first_tap(tw0, p.DW, p.SW, step_w, p.KW);
        A acc = A(0);
        for (int kh = first_tap(th0, p.DH, p.SH, step_h, p.KH); kh < p.KH; kh += step_h) {
            const int th = th0 - kh * p.DH;
            if (th < 0) break;  // th only falls as kh grows
            const int oh = th / p.SH;
            if (oh >= p.OH) continue;
            for (int kw = kw_first; kw < p.KW; kw += step_w) {
                const int tw = tw0 - kw * p.DW;
                if (tw < 0) break;
                const int ow = tw / p.SW;
                if (ow >= p.OW) continue;
                const T* d = dyn + I(oh) * I(p.ysH) + I(ow) * I(p.ysW);
                const T* ww = wg + I(kh * p.KW + kw) * tap_stride;
#pragma unroll 2  // ptxas' own choice, and an unroll of 4, spilled some variants on sm_80 / sm_90
                for (int k = 0; k < p.KG; ++k)
                    acc += load_acc(d[I(k) * I(p.ysK)]) * load_acc(ww[I(k) * I(p.CG)]);
            }
        }
        dx[I(n) * I(p.xsN) + I(ih) * I(p.xsH) + I(iw) * I(p.xsW) + I(c) * I(p.xsC)] = store_acc<T>(acc);
    }
}

extern "C" __global__ void __launch_bounds__(GRAD_INPUT_THREADS)
conv_grad_input_f32_i32(const ConvProblem p, const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx) { grad_input<float, int>(p, dy, wt, dx); }
extern "C" __global__ void __launch_bounds__(GRAD_INPUT_THREADS)
conv_grad_input_f32_i64(const ConvProblem p, const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx) { grad_input<float, long long>(p, dy, wt, dx); }
extern "C" __global__ void __launch_bounds__(GRAD_INPUT_THREADS)
conv_grad_input_f64_i32(const ConvProblem p, const double* __restrict__ dy, const double* __restrict__ wt, double* __restrict__ dx) { grad_input<double, int>(p, dy, wt, dx); }
extern "C" __global__ void __launch_bounds__(GRAD_INPUT_THREADS)
conv_grad_input_f64_i64(const ConvProblem p, const double* __restrict__ dy, const double* __restrict__ wt, double* __restrict__ dx) { grad_input<double, long long>(p, dy, wt, dx); }
extern "C" __global__ void __launch_bounds__(GRAD_INPUT_THREADS)
conv_grad_input_f16_i32(const ConvProblem p, const __half* __restrict__ dy, const __half* __restrict__ wt, __half* __restrict__ dx) { grad_input<__half, int>(p, dy, wt, dx); }
extern "C" __global__ void __launch_bounds__(GRAD_INPUT_THREADS)
conv_grad_input_f16_i64(const ConvProblem p, const __half* __restrict__ dy, const __half* __restrict__ wt, __half* __restrict__ dx) { grad_input<__half, long long>(p, dy, wt, dx); }
extern "C" __global__ void __launch_bounds__(GRAD_INPUT_THREADS)
conv_grad_input_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ dy, const __nv_bfloat16* __restrict__ wt, __nv_bfloat16* __restrict__ dx) { grad_input<__nv_bfloat16, int>(p, dy, wt, dx); }
extern "C" __global__ void __launch_bounds__(GRAD_INPUT_THREADS)
conv_grad_input_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ dy, const __nv_bfloat16* __restrict__ wt, __nv_bfloat16* __restrict__ dx) { grad_input<__nv_bfloat16, long long>(p, dy, wt, dx); }
