// direct.cu - direct 2-D convolution (cross-correlation, as tf.nn.conv2d), one output tile per block.
//
// Computes   y[n, oh, ow, g*KG + k] = sum_{kh, kw, c < CG} x[n, oh*SH - PT + kh*DH, ow*SW - PL + kw*DW, g*CG + c]
//                                                        * w[kh, kw, c, g*KG + k]
// with out-of-image pixels read as zero (the padding). Groups and depthwise (CG = 1) included.
//
// Layouts: x and y in any layout given by the element strides in ConvProblem (NHWC and NCHW both);
//          w is contiguous HWIO [KH, KW, CG, K].
// Launch:  block = DIRECT_THREADS threads (1-D).
//          grid.x = N * ceil(OH / DIRECT_TILE_OH) * ceil(OW / DIRECT_TILE_OW)   (image, output tile)
//          grid.y = G * ceil(KG / DIRECT_TILE_K)                               (group, channel tile)
//          dynamic shared memory = (CC*PH*PW + KH*KW*CC*DIRECT_TILE_K) * sizeof(accumulator), where
//          PH = (DIRECT_TILE_OH-1)*SH + (KH-1)*DH + 1, PW likewise: the input patch with its halo.
//          CC (input channels staged per step) is chosen by the launcher to fit the shared memory.
// Each block stages the input patch of CC channels and the matching filter slice in shared memory,
// then every thread accumulates 1 output pixel x DIRECT_THREAD_K output channels in registers.
// Elements are converted to the accumulator type (float; double for double) when staged and rounded
// once at the store.
#include "common.cuh"

#ifndef DIRECT_TILE_OH
#define DIRECT_TILE_OH 8
#endif
#ifndef DIRECT_TILE_OW
#define DIRECT_TILE_OW 8
#endif
#ifndef DIRECT_TILE_K
#define DIRECT_TILE_K 16
#endif
#ifndef DIRECT_THREAD_K
#define DIRECT_THREAD_K 4
#endif
#ifndef DIRECT_MIN_BLOCKS_F64
#define DIRECT_MIN_BLOCKS_F64 3
#endif
#define DIRECT_TILE_P (DIRECT_TILE_OH * DIRECT_TILE_OW)
#define DIRECT_THREADS (DIRECT_TILE_P * (DIRECT_TILE_K / DIRECT_THREAD_K))

static_assert(DIRECT_TILE_K % DIRECT_THREAD_K == 0,
              "DIRECT_TILE_K must be a multiple of DIRECT_THREAD_K: each thread owns DIRECT_THREAD_K channels");
static_assert(DIRECT_THREADS >= 32 && DIRECT_THREADS <= 1024,
              "a block of DIRECT_TILE_OH*DIRECT_TILE_OW*DIRECT_TILE_K/DIRECT_THREAD_K threads must hold 32 to 1024");

template <typename T, typename I>
__device__ __forceinline__ void direct_conv(const ConvProblem p, const T* __restrict__ x,
                                            const T* __restrict__ w, T* __restrict__ y, int CC) {
    using A = typename Acc<T>::type;
    const int PH = (DIRECT_TILE_OH - 1) * p.SH + (p.KH - 1) * p.DH + 1;
    const int PW = (DIRECT_TILE_OW - 1) * p.SW + (p.KW - 1) * p.DW + 1;
    const int taps = p.KH * p.KW;
    GPUCONV_DYNAMIC_SHARED(A, smem);
    A* patch = smem;                  // [CC][PH][PW]
    A* filt = smem + CC * PH * PW;    // [CC][taps][DIRECT_TILE_K]

    const int tiles_w = ceil_div(p.OW, DIRECT_TILE_OW);
    const int tiles = tiles_w * ceil_div(p.OH, DIRECT_TILE_OH);
    const int n = blockIdx.x / tiles;
    const int tile = blockIdx.x % tiles;
    const int oh0 = (tile / tiles_w) * DIRECT_TILE_OH;
    const int ow0 = (tile % tiles_w) * DIRECT_TILE_OW;
    const int k_tiles = ceil_div(p.KG, DIRECT_TILE_K);
    const int g = blockIdx.y / k_tiles;
    const int k0 = (blockIdx.y % k_tiles) * DIRECT_TILE_K;  // first output channel of the tile, in group g

    const int t = threadIdx.x;
    const int pix = t % DIRECT_TILE_P;  // a warp shares kq: its filter reads are broadcasts
    const int kq = t / DIRECT_TILE_P;
    const int py = pix / DIRECT_TILE_OW, px = pix % DIRECT_TILE_OW;
    const int ih0 = oh0 * p.SH - p.PT, iw0 = ow0 * p.SW - p.PL;
    const I xbase = I(n) * I(p.xsN);  // 64-bit only in the i64 variants
    // Stage in the order x is laid out in memory, so neighbouring threads read neighbouring elements.
    const bool channels_fastest = p.xsC == 1;

    A acc[DIRECT_THREAD_K];
#pragma unroll
    for (int j = 0; j < DIRECT_THREAD_K; ++j) acc[j] = A(0);

    // This thread's output pixel inside the staged patch, and the patch offsets between filter taps.
    const int pix0 = py * p.SH * PW + px * p.SW;
    const int tap_row = p.DH * PW, tap_col = p.DW;
    for (int c0 = 0; c0 < p.CG; c0 += CC) {
        const int cc = min(CC, p.CG - c0);
        const T* xc = x + xbase + I(g * p.CG + c0) * I(p.xsC);
        for (int i = t; i < cc * PH * PW; i += DIRECT_THREADS) {
            int c, ph, pw;
            if (channels_fastest) {
                c = i % cc; pw = (i / cc) % PW; ph = i / (cc * PW);
            } else {
                pw = i % PW; ph = (i / PW) % PH; c = i / (PW * PH);
            }
            const int ih = ih0 + ph, iw = iw0 + pw;
            A v = A(0);
            if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
                v = load_acc(xc[I(ih) * I(p.xsH) + I(iw) * I(p.xsW) + I(c) * I(p.xsC)]);
            patch[(c * PH + ph) * PW + pw] = v;
        }
        // filt[c][tap][kk]: for one channel the taps are consecutive, so the inner loop walks one pointer
        const T* wc = w + I(c0) * I(p.K) + g * p.KG + k0;
        for (int i = t; i < cc * taps * DIRECT_TILE_K; i += DIRECT_THREADS) {
            const int kk = i % DIRECT_TILE_K;
            const int tap = (i / DIRECT_TILE_K) % taps;
            const int c = i / (DIRECT_TILE_K * taps);
            A v = A(0);
            if (k0 + kk < p.KG) v = load_acc(wc[(I(tap) * p.CG + c) * I(p.K) + kk]);
            filt[(c * taps + tap) * DIRECT_TILE_K + kk] = v;
        }
        __syncthreads();
        for (int c = 0; c < cc; ++c) {
            const A* pc = patch + c * PH * PW + pix0;
            const A* f = filt + c * taps * DIRECT_TILE_K + kq * DIRECT_THREAD_K;
            for (int kh = 0; kh < p.KH; ++kh, pc += tap_row)
                for (int kw = 0; kw < p.KW; ++kw, f += DIRECT_TILE_K) {
                    const A v = pc[kw * tap_col];
#pragma unroll
                    for (int j = 0; j < DIRECT_THREAD_K; ++j) acc[j] += v * f[j];
                }
        }
        __syncthreads();  // the next step overwrites the staged tiles
    }

    const int oh = oh0 + py, ow = ow0 + px;
    if (oh < p.OH && ow < p.OW) {
        const I ybase = I(n) * I(p.ysN) + I(oh) * I(p.ysH) + I(ow) * I(p.ysW);
#pragma unroll
        for (int j = 0; j < DIRECT_THREAD_K; ++j) {
            const int k = k0 + kq * DIRECT_THREAD_K + j;
            if (k < p.KG) y[ybase + I(g * p.KG + k) * I(p.ysK)] = store_acc<T>(acc[j]);
        }
    }
}

// Entry points: element type x index type. Same parameters for all; the launcher picks one.
// The double variants hold twice the register bytes per accumulator; left to its own heuristics
// ptxas caps them at 64 registers on some architectures and spills, so they ask for 3 resident
// blocks instead, which allows up to 85 registers.
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS)
conv_direct_f32_i32(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int CC) { direct_conv<float, int>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS)
conv_direct_f32_i64(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int CC) { direct_conv<float, long long>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS_F64)
conv_direct_f64_i32(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, int CC) { direct_conv<double, int>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS_F64)
conv_direct_f64_i64(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, int CC) { direct_conv<double, long long>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS)
conv_direct_f16_i32(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int CC) { direct_conv<__half, int>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS)
conv_direct_f16_i64(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int CC) { direct_conv<__half, long long>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS)
conv_direct_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, int CC) { direct_conv<__nv_bfloat16, int>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS)
conv_direct_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, int CC) { direct_conv<__nv_bfloat16, long long>(p, x, w, y, CC); }
