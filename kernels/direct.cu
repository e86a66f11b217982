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
//          dynamic shared memory = (round4(CC*PH*(PW|1)) + KH*KW*CC*DIRECT_TILE_K) * sizeof(accumulator),
//          where PH = (DIRECT_TILE_OH-1)*SH + (KH-1)*DH + 1, PW likewise: the input patch with its halo,
//          its rows PW|1 apart (odd, see below), rounded up to 4 elements so that the filter slice
//          after it starts 16-byte aligned.
//          CC (input channels staged per step) is chosen by the launcher to fit the shared memory.
// Each block stages the input patch of CC channels and the matching filter slice in shared memory,
// then every thread accumulates DIRECT_THREAD_OW neighbouring pixels of a row x DIRECT_THREAD_K output
// channels in registers: per tap one vector load of its DIRECT_THREAD_K filter values (16 bytes for
// 4 floats; a warp shares them, a broadcast) and DIRECT_THREAD_OW patch loads feed
// DIRECT_THREAD_OW*DIRECT_THREAD_K multiply-adds. 3x3 filters at stride and dilation 1 keep a row
// window of DIRECT_THREAD_OW + 2 patch values in registers for the row's three taps.
// Bank conflicts: a warp's lanes start DIRECT_THREAD_OW*SW words apart along a row; an odd row pitch
// puts the rows of one warp on different residues mod 4, so with the default 4x32 tile (a warp: 4 rows
// x 8 pixel groups) a stride-1 patch load touches 32 distinct banks.
// Elements are converted to the accumulator type (float; double for double) when staged and rounded
// once at the store.
#include "common.cuh"

#ifndef DIRECT_TILE_OH
#define DIRECT_TILE_OH 4
#endif
#ifndef DIRECT_TILE_OW
#define DIRECT_TILE_OW 32
#endif
#ifndef DIRECT_TILE_K
#define DIRECT_TILE_K 16
#endif
#ifndef DIRECT_THREAD_K
#define DIRECT_THREAD_K 4
#endif
#ifndef DIRECT_THREAD_OW
#define DIRECT_THREAD_OW 4
#endif
#define DIRECT_GROUPS_P (DIRECT_TILE_OH * (DIRECT_TILE_OW / DIRECT_THREAD_OW))  // pixel groups per tile
#define DIRECT_THREADS (DIRECT_GROUPS_P * (DIRECT_TILE_K / DIRECT_THREAD_K))
// Resident blocks asked of ptxas: 512 threads' worth, which allows 128 registers. Left to its own
// heuristics ptxas aims at more blocks for some variants (the 64-bit index ones) and spills.
#ifndef DIRECT_MIN_BLOCKS
#define DIRECT_MIN_BLOCKS (DIRECT_THREADS >= 512 ? 1 : 512 / DIRECT_THREADS)
#endif

static_assert(DIRECT_TILE_K % DIRECT_THREAD_K == 0,
              "DIRECT_TILE_K must be a multiple of DIRECT_THREAD_K: each thread owns DIRECT_THREAD_K channels");
static_assert(DIRECT_THREAD_K == 1 || DIRECT_THREAD_K == 2 || DIRECT_THREAD_K == 4 || DIRECT_THREAD_K == 8,
              "DIRECT_THREAD_K must be 1, 2, 4 or 8: a thread's filter values are one aligned vector");
static_assert(DIRECT_TILE_OW % DIRECT_THREAD_OW == 0,
              "DIRECT_TILE_OW must be a multiple of DIRECT_THREAD_OW: each thread owns DIRECT_THREAD_OW pixels of a row");
static_assert(DIRECT_THREADS >= 32 && DIRECT_THREADS <= 1024,
              "a block of DIRECT_TILE_OH*DIRECT_TILE_OW/DIRECT_THREAD_OW*DIRECT_TILE_K/DIRECT_THREAD_K threads "
              "must hold 32 to 1024");

// A thread's DIRECT_THREAD_K filter values, read as one access (two for 4 doubles: 16-byte alignment
// is what the shared memory base guarantees).
template <typename A>
struct alignas(DIRECT_THREAD_K * sizeof(A) < 16 ? DIRECT_THREAD_K * sizeof(A) : 16) FilterLanes {
    A v[DIRECT_THREAD_K];
};

// Multiply-adds of the staged channels: cc channels of the patch (pc: this thread's first pixel in
// channel 0) times the filter slice (f: this thread's channels, tap 0 of channel 0).
template <bool K3, typename A>
__device__ __forceinline__ void direct_accumulate(const ConvProblem& p, A (&acc)[DIRECT_THREAD_OW][DIRECT_THREAD_K],
                                                  const A* pc, const A* f, int cc, int PH, int PWP) {
    const int taps = p.KH * p.KW;
    for (int c = 0; c < cc; ++c, pc += PH * PWP, f += taps * DIRECT_TILE_K) {
        if constexpr (K3) {  // 3x3, stride 1, dilation 1: a row window serves the row's three taps
#pragma unroll
            for (int kh = 0; kh < 3; ++kh) {
                A win[DIRECT_THREAD_OW + 2];
#pragma unroll
                for (int i = 0; i < DIRECT_THREAD_OW + 2; ++i) win[i] = pc[kh * PWP + i];
#pragma unroll
                for (int kw = 0; kw < 3; ++kw) {
                    const FilterLanes<A> fv = *reinterpret_cast<const FilterLanes<A>*>(f + (kh * 3 + kw) * DIRECT_TILE_K);
#pragma unroll
                    for (int j = 0; j < DIRECT_THREAD_OW; ++j)
#pragma unroll
                        for (int q = 0; q < DIRECT_THREAD_K; ++q) acc[j][q] += win[j + kw] * fv.v[q];
                }
            }
        } else {
            const A* ft = f;
            for (int kh = 0; kh < p.KH; ++kh) {
                const A* prow = pc + kh * p.DH * PWP;
                for (int kw = 0; kw < p.KW; ++kw, ft += DIRECT_TILE_K) {
                    const FilterLanes<A> fv = *reinterpret_cast<const FilterLanes<A>*>(ft);
                    const A* px = prow + kw * p.DW;
#pragma unroll
                    for (int j = 0; j < DIRECT_THREAD_OW; ++j) {
                        const A v = px[j * p.SW];
#pragma unroll
                        for (int q = 0; q < DIRECT_THREAD_K; ++q) acc[j][q] += v * fv.v[q];
                    }
                }
            }
        }
    }
}

template <typename T, typename I>
__device__ __forceinline__ void direct_conv(const ConvProblem p, const T* __restrict__ x,
                                            const T* __restrict__ w, T* __restrict__ y, int CC) {
    using A = typename Acc<T>::type;
    const int PH = (DIRECT_TILE_OH - 1) * p.SH + (p.KH - 1) * p.DH + 1;
    const int PW = (DIRECT_TILE_OW - 1) * p.SW + (p.KW - 1) * p.DW + 1;
    const int PWP = PW | 1;  // row pitch
    const int taps = p.KH * p.KW;
    GPUCONV_DYNAMIC_SHARED(A, smem);
    A* patch = smem;                  // [CC][PH][PWP]
    A* filt = smem + ((CC * PH * PWP + 3) & ~3);  // [CC][taps][DIRECT_TILE_K], 16-byte aligned

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
    const int pg = t % DIRECT_GROUPS_P;  // a warp shares kq: its filter reads are broadcasts
    const int kq = t / DIRECT_GROUPS_P;
    constexpr int GROUPS_W = DIRECT_TILE_OW / DIRECT_THREAD_OW;
    const int py = pg / GROUPS_W, px = (pg % GROUPS_W) * DIRECT_THREAD_OW;
    const int ih0 = oh0 * p.SH - p.PT, iw0 = ow0 * p.SW - p.PL;
    const I xbase = I(n) * I(p.xsN);  // 64-bit only in the i64 variants
    // Stage in the order x is laid out in memory, so neighbouring threads read neighbouring elements.
    const bool channels_fastest = p.xsC == 1;

    A acc[DIRECT_THREAD_OW][DIRECT_THREAD_K];
#pragma unroll
    for (int j = 0; j < DIRECT_THREAD_OW; ++j)
#pragma unroll
        for (int q = 0; q < DIRECT_THREAD_K; ++q) acc[j][q] = A(0);

    // This thread's first output pixel inside the staged patch.
    const int pix0 = py * p.SH * PWP + px * p.SW;
    const bool k3 = p.KH == 3 && p.KW == 3 && p.SH == 1 && p.SW == 1 && p.DH == 1 && p.DW == 1;
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
            patch[(c * PH + ph) * PWP + pw] = v;
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
        const A* pc = patch + pix0;
        const A* f = filt + kq * DIRECT_THREAD_K;
        if (k3) direct_accumulate<true>(p, acc, pc, f, cc, PH, PWP);
        else    direct_accumulate<false>(p, acc, pc, f, cc, PH, PWP);
        __syncthreads();  // the next step overwrites the staged tiles
    }

    const int oh = oh0 + py;
    if (oh < p.OH) {
#pragma unroll
        for (int j = 0; j < DIRECT_THREAD_OW; ++j) {
            const int ow = ow0 + px + j;
            if (ow >= p.OW) break;
            const I ybase = I(n) * I(p.ysN) + I(oh) * I(p.ysH) + I(ow) * I(p.ysW);
#pragma unroll
            for (int q = 0; q < DIRECT_THREAD_K; ++q) {
                const int k = k0 + kq * DIRECT_THREAD_K + q;
                if (k < p.KG) y[ybase + I(g * p.KG + k) * I(p.ysK)] = store_acc<T>(acc[j][q]);
            }
        }
    }
}

// Entry points: element type x index type. Same parameters for all; the launcher picks one.
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS)
conv_direct_f32_i32(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int CC) { direct_conv<float, int>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS)
conv_direct_f32_i64(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int CC) { direct_conv<float, long long>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS)
conv_direct_f64_i32(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, int CC) { direct_conv<double, int>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS)
conv_direct_f64_i64(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, int CC) { direct_conv<double, long long>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS)
conv_direct_f16_i32(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int CC) { direct_conv<__half, int>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS)
conv_direct_f16_i64(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int CC) { direct_conv<__half, long long>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS)
conv_direct_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, int CC) { direct_conv<__nv_bfloat16, int>(p, x, w, y, CC); }
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS, DIRECT_MIN_BLOCKS)
conv_direct_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, int CC) { direct_conv<__nv_bfloat16, long long>(p, x, w, y, CC); }
