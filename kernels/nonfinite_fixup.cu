// nonfinite_fixup.cu - adds the terms of non-finite filter taps to outputs computed with them zeroed.
//
// Computes  y[n, oh, ow, k] += x * w for every non-finite tap w[kh, kw, c, k] that reads an input pixel,
//           in (kh, kw, c) order, each product and sum rounded to the element type (as NumPy/CuPy
//           compute y + x * w); an output where such a tap meets a non-finite input is replaced by the
//           definition (per tap the sum over channels, then the sum over taps, in the accumulator type).
// Returns at once while *flag is 0 (no filter value was non-finite): the common case is one small
// launch that does nothing, decided on the device.
// Layouts:  x, y in any layout given by ConvProblem's strides; w HWIO contiguous (the original filters).
// Launch:   block = NONFINITE_THREADS (1-D); any grid (a grid-stride loop covers N*OH*OW*K outputs,
//           one per thread); no shared memory. y is updated in place.
#include "nonfinite.cuh"

template <typename T, typename I>
__device__ __forceinline__ void add_nonfinite_terms(const ConvProblem p, const T* __restrict__ x,
                                                    const T* __restrict__ w, T* __restrict__ y,
                                                    const int* __restrict__ flag) {
    if (*flag == 0) return;
    using A = typename Acc<T>::type;
    const I total = I(p.N) * I(p.OH) * I(p.OW) * I(p.K);
    // Flat NHWC output index idx = ((n*OH + oh)*OW + ow)*K + k, stepped by the grid's thread count S in
    // mixed radix: the start and S are below 2^31 (the launcher caps the grid), so only they are divided,
    // in 32 bits; each step adds S's digits with carries (no 64-bit division call in the loop).
    const int start = int(blockIdx.x) * NONFINITE_THREADS + int(threadIdx.x);
    const int S = int(gridDim.x) * NONFINITE_THREADS;
    int k = start % p.K, ow = start / p.K % p.OW, oh = start / p.K / p.OW % p.OH, n = start / p.K / p.OW / p.OH;
    const int sk = S % p.K, sow = S / p.K % p.OW, soh = S / p.K / p.OW % p.OH, sn = S / p.K / p.OW / p.OH;
    for (I idx = start; idx < total; idx += S) {
        if (idx != start) {
            int carry;
            k += sk;
            carry = k >= p.K; k -= carry ? p.K : 0;
            ow += sow + carry;
            carry = ow >= p.OW; ow -= carry ? p.OW : 0;
            oh += soh + carry;
            carry = oh >= p.OH; oh -= carry ? p.OH : 0;
            n += sn + carry;
        }
        const int c0 = (k / p.KG) * p.CG;
        const I yo = I(n) * I(p.ysN) + I(oh) * I(p.ysH) + I(ow) * I(p.ysW) + I(k) * I(p.ysK);
        T acc = y[yo];
        A sum = A(0);  // the definition, used only where a non-finite tap meets a non-finite input
        bool touched = false, polluted = false;
        // The rare path (a non-finite filter value): compact loops, not unrolled.
        #pragma unroll 1
        for (int kh = 0; kh < p.KH; ++kh) {
            const int ih = oh * p.SH - p.PT + kh * p.DH;
            if (ih < 0 || ih >= p.H) continue;
            #pragma unroll 1
            for (int kw = 0; kw < p.KW; ++kw) {
                const int iw = ow * p.SW - p.PL + kw * p.DW;
                if (iw < 0 || iw >= p.W) continue;
                const I xo = I(n) * I(p.xsN) + I(ih) * I(p.xsH) + I(iw) * I(p.xsW);
                const I wo = (I(kh * p.KW + kw) * p.CG) * p.K + I(k);
                A tap = A(0);  // as on the host: per tap the channel sum, then the sum over taps
                #pragma unroll 1
                for (int c = 0; c < p.CG; ++c) {
                    const A wv = load_acc(w[wo + I(c) * I(p.K)]);
                    const A xv = load_acc(x[xo + I(c0 + c) * I(p.xsC)]);
                    tap = add_rn(tap, mul_rn(xv, wv));
                    if (is_finite(wv)) continue;
                    const T term = store_acc<T>(mul_rn(xv, wv));
                    acc = store_acc<T>(add_rn(load_acc(acc), load_acc(term)));
                    touched = true;
                    polluted = polluted || !is_finite(xv);
                }
                sum = add_rn(sum, tap);
            }
        }
        if (polluted) acc = store_acc<T>(sum);
        if (touched) y[yo] = acc;
    }
}

// Minimum 1 block per SM: without it ptxas (CUDA 13) keeps some variants to 32 registers and spills.
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS, 1)
nonfinite_fixup_f32_i32(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, const int* __restrict__ flag) { add_nonfinite_terms<float, int>(p, x, w, y, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS, 1)
nonfinite_fixup_f32_i64(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, const int* __restrict__ flag) { add_nonfinite_terms<float, long long>(p, x, w, y, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS, 1)
nonfinite_fixup_f64_i32(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, const int* __restrict__ flag) { add_nonfinite_terms<double, int>(p, x, w, y, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS, 1)
nonfinite_fixup_f64_i64(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, const int* __restrict__ flag) { add_nonfinite_terms<double, long long>(p, x, w, y, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS, 1)
nonfinite_fixup_f16_i32(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, const int* __restrict__ flag) { add_nonfinite_terms<__half, int>(p, x, w, y, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS, 1)
nonfinite_fixup_f16_i64(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, const int* __restrict__ flag) { add_nonfinite_terms<__half, long long>(p, x, w, y, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS, 1)
nonfinite_fixup_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, const int* __restrict__ flag) { add_nonfinite_terms<__nv_bfloat16, int>(p, x, w, y, flag); }
extern "C" __global__ void __launch_bounds__(NONFINITE_THREADS, 1)
nonfinite_fixup_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, const int* __restrict__ flag) { add_nonfinite_terms<__nv_bfloat16, long long>(p, x, w, y, flag); }
