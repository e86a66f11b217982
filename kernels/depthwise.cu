// depthwise.cu - depthwise convolution (one input channel per group, CG = 1), several outputs per thread.
//
// Computes   y[n, oh, ow, k] = sum_{kh, kw} x[n, oh*SH - PT + kh*DH, ow*SW - PL + kw*DW, k / KG] * w[kh, kw, 0, k]
// for G = C groups of one input channel each, KG = K / C output channels per input channel (the
// channel multiplier); taps on padding add nothing.
//
// Layouts: x and y in any layout given by ConvProblem's strides (NHWC and NCHW); w contiguous HWIO
//          [KH, KW, 1, K].
// Work item: DEPTHWISE_PX consecutive output pixels of one row (ow0 .. ow0 + PX - 1) x V consecutive
//          output channels. V = 16 bytes / sizeof(T) when `vec` is set: the host found NHWC, KG = 1,
//          K a multiple of V and 16-byte aligned arrays, so x, w and y move in 16-byte accesses across
//          channels; V = 1 otherwise. Half types with V = 8 take half the pixels (register budget).
//          An item is (n, oh, pg) for the PG = ceil(OW / PX) pixel groups of a row, and a channel group.
// Launch:  block = (bx, by) with bx*by = DEPTHWISE_THREADS; no shared memory.
//          NHWC: x over channel groups (lanes read neighbouring channels), y over items;
//          NCHW: x over items (lanes read neighbouring columns of a row), y over output channels.
//          Both axes are grid-stride loops, so any grid covers the problem.
// Why this shape: depthwise work is KH*KW multiply-adds per output, memory-bound once the instruction
// count per output is small. Each thread reads a row window of (PX-1)*SW + KW input columns once into
// registers and reuses it for all PX outputs (3x3 at stride 1 or 2, dilation 1: compile-time window);
// other shapes load each tap straight from global memory, still PX x V outputs per filter load. Items
// whose whole window lies inside the image take a path without bounds checks; the item's
// coordinates are divided out once per PX x V outputs, never inside the tap loops.
#include "common.cuh"

#ifndef DEPTHWISE_THREADS
#define DEPTHWISE_THREADS 256
#endif
#ifndef DEPTHWISE_PX
#define DEPTHWISE_PX 4
#endif
// Resident blocks asked of ptxas: 512 threads' worth, which allows 128 registers. Left to its own
// heuristics ptxas aims at more blocks for some variants and spills.
#ifndef DEPTHWISE_MIN_BLOCKS
#define DEPTHWISE_MIN_BLOCKS (DEPTHWISE_THREADS >= 512 ? 1 : 512 / DEPTHWISE_THREADS)
#endif
static_assert(DEPTHWISE_THREADS % 32 == 0 && DEPTHWISE_THREADS <= 1024,
              "DEPTHWISE_THREADS: whole warps, at most 1024");
static_assert(DEPTHWISE_PX >= 1 && DEPTHWISE_PX <= 16, "DEPTHWISE_PX: 1 to 16 output pixels per thread");

// V consecutive elements moved as one access of V * sizeof(T) bytes.
template <typename T, int V>
struct alignas(V * sizeof(T)) Lanes { T v[V]; };

template <typename T> struct VecLanes { static constexpr int value = 16 / sizeof(T); };

// Output pixels per thread: 8-lane half vectors hold twice the accumulators, so half the pixels.
template <typename T, int V> struct PixelsPerThread {
    static constexpr int value = (V * sizeof(T) == 16 && sizeof(T) == 2 && DEPTHWISE_PX > 1) ? DEPTHWISE_PX / 2
                                                                                              : DEPTHWISE_PX;
};

template <typename T, int V, typename A>
__device__ __forceinline__ void load_lanes(A (&out)[V], const T* src) {
    const Lanes<T, V> l = *reinterpret_cast<const Lanes<T, V>*>(src);
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = load_acc(l.v[v]);
}

// Column iw of an input row, zeros on the padding when CHECK.
template <typename T, typename I, int V, bool CHECK, typename A>
__device__ __forceinline__ void load_column(A (&out)[V], const T* row, int iw, const ConvProblem& p) {
    if (!CHECK || (iw >= 0 && iw < p.W)) {
        load_lanes<T, V>(out, row + I(iw) * I(p.xsW));
    } else {
#pragma unroll
        for (int v = 0; v < V; ++v) out[v] = A(0);
    }
}

// One item: PX pixels x V channels. xn: x at image n and the item's input channel; wk: w at its first
// output channel; yo: y at image n, row oh and its first output channel. KW_ > 0 selects the
// compile-time KH_ x KW_ filter at column stride SW_, dilation 1, with a register window per row;
// KW_ = 0 reads the filter shape, strides and dilations from p.
template <typename T, typename I, int V, int PX, int KH_, int KW_, int SW_, bool CHECK>
__device__ __forceinline__ void depthwise_item(const ConvProblem& p, const T* __restrict__ xn,
                                               const T* __restrict__ wk, T* __restrict__ yo,
                                               int ih0, int iw0, int ow0) {
    static_assert(KW_ == 0 || !CHECK, "the compile-time windows serve interior items only");
    using A = typename Acc<T>::type;
    A acc[PX][V];
#pragma unroll
    for (int j = 0; j < PX; ++j)
#pragma unroll
        for (int v = 0; v < V; ++v) acc[j][v] = A(0);
    const I tap_stride = I(p.K);
    if constexpr (KW_ > 0) {
        constexpr int WIN = (PX - 1) * SW_ + KW_;
        // one row at a time: unrolled, the rows' loads would all be hoisted and hold 3x the registers
#pragma unroll 1
        for (int kh = 0; kh < KH_; ++kh) {
            const T* row = xn + I(ih0 + kh * p.DH) * I(p.xsH);
            const T* wrow = wk + I(kh * KW_) * tap_stride;
            A win[WIN][V];
#pragma unroll
            for (int c = 0; c < WIN; ++c) load_column<T, I, V, CHECK>(win[c], row, iw0 + c, p);
            A f[KW_][V];
#pragma unroll
            for (int kw = 0; kw < KW_; ++kw) load_lanes<T, V>(f[kw], wrow + I(kw) * tap_stride);
#pragma unroll
            for (int j = 0; j < PX; ++j)
#pragma unroll
                for (int kw = 0; kw < KW_; ++kw)
#pragma unroll
                    for (int v = 0; v < V; ++v) acc[j][v] += win[j * SW_ + kw][v] * f[kw][v];
        }
    } else {
        for (int kh = 0; kh < p.KH; ++kh) {
            const int ih = ih0 + kh * p.DH;
            if (CHECK && (ih < 0 || ih >= p.H)) continue;
            const T* row = xn + I(ih) * I(p.xsH);
            const T* wrow = wk + I(kh * p.KW) * tap_stride;
#pragma unroll 1
            for (int kw = 0; kw < p.KW; ++kw) {  // rolled: the rare shapes need not cost registers
                A f[V];
                load_lanes<T, V>(f, wrow + I(kw) * tap_stride);
                const int iw = iw0 + kw * p.DW;
#pragma unroll
                for (int j = 0; j < PX; ++j) {
                    A xv[V];
                    load_column<T, I, V, CHECK>(xv, row, iw + j * p.SW, p);
#pragma unroll
                    for (int v = 0; v < V; ++v) acc[j][v] += xv[v] * f[v];
                }
            }
        }
    }
#pragma unroll
    for (int j = 0; j < PX; ++j) {
        if (CHECK && ow0 + j >= p.OW) break;
        Lanes<T, V> out;
#pragma unroll
        for (int v = 0; v < V; ++v) out.v[v] = store_acc<T>(acc[j][v]);
        *reinterpret_cast<Lanes<T, V>*>(yo + I(ow0 + j) * I(p.ysW)) = out;
    }
}

// floor(a / b) for b > 0 and any a (C's division truncates towards zero).
__device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The items split in two sets, each walked by a grid-stride loop. Interior items (every tap inside the
// image, all PX outputs inside the row) form a rectangle of rows [oh_lo, oh_hi) x pixel groups
// [pg_lo, pg_hi) in each image: their loop advances (n, oh, pg) by carries, without division, and
// calls the unchecked item. The rest (the frame around the rectangle: top rows, the ends of the
// interior rows, bottom rows) take the checked, runtime-shaped item and divide out their coordinates.
template <typename T, typename I, int V, int KH_, int KW_, int SW_>
__device__ __forceinline__ void depthwise_pass(const ConvProblem& p, const T* __restrict__ x,
                                               const T* __restrict__ w, T* __restrict__ y) {
    constexpr int PX = PixelsPerThread<T, V>::value;
    const int groups = ceil_div(p.OW, PX);  // pixel groups per output row
    const int channel_groups = p.K / V;     // V divides K whenever V > 1
    I ch, ch_step, it0, it_step;
    if (p.ysK == 1) {  // NHWC
        ch = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); ch_step = I(gridDim.x) * I(blockDim.x);
        it0 = I(blockIdx.y) * I(blockDim.y) + I(threadIdx.y); it_step = I(gridDim.y) * I(blockDim.y);
    } else {           // NCHW
        it0 = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); it_step = I(gridDim.x) * I(blockDim.x);
        ch = I(blockIdx.y) * I(blockDim.y) + I(threadIdx.y); ch_step = I(gridDim.y) * I(blockDim.y);
    }
    // The interior rectangle: oh*SH - PT >= 0 and oh*SH - PT + rows <= H; likewise for the columns of
    // pixel group pg, which start at pg*PX*SW - PL and span `span` columns; and ow0 + PX <= OW.
    const int rows = (p.KH - 1) * p.DH + 1;
    const int span = (PX - 1) * p.SW + (p.KW - 1) * p.DW + 1;
    int oh_lo = ceil_div(p.PT, p.SH), oh_hi = min(p.OH, floor_div(p.H - rows + p.PT, p.SH) + 1);
    int pg_lo = ceil_div(p.PL, PX * p.SW), pg_hi = min(p.OW / PX, floor_div(p.W - span + p.PL, PX * p.SW) + 1);
    if (oh_hi <= oh_lo || pg_hi <= pg_lo) { oh_lo = oh_hi = p.OH; pg_lo = pg_hi = 0; }
    const int IH = oh_hi - oh_lo, IP = pg_hi - pg_lo;
    const I interior = I(p.N) * I(IH) * I(IP);
    // frame items per image: top rows, the IH rows' PG - IP outer groups, bottom rows
    const I top = I(oh_lo) * groups, middle = I(IH) * (groups - IP), per_image = I(p.OH) * groups - I(IH) * IP;
    const I frame = I(p.N) * per_image;
    // the interior loop's step as carries: it_step = ((dn * IH) + doh) * IP + dpg
    int dpg = 0, doh = 0, n0 = 0, oh0 = 0, pg0 = 0;
    I dn = 0;
    if (interior > 0) {
        dpg = int(it_step % IP); doh = int((it_step / IP) % IH); dn = it_step / (I(IP) * IH);
        pg0 = int(it0 % IP); oh0 = int((it0 / IP) % IH); n0 = int(it0 / (I(IP) * IH));
    }
    for (; ch < channel_groups; ch += ch_step) {
        const int k0 = int(ch) * V;
        const T* xc = x + I(k0 / p.KG) * I(p.xsC);
        const T* wk = w + k0;
        T* yk = y + I(k0) * I(p.ysK);
        I n = n0;
        int oh = oh0, pg = pg0;
        for (I it = it0; it < interior; it += it_step) {
            const int ohi = oh_lo + oh, ow0 = (pg_lo + pg) * PX;
            depthwise_item<T, I, V, PX, KH_, KW_, SW_, false>(
                p, xc + n * I(p.xsN), wk, yk + n * I(p.ysN) + I(ohi) * I(p.ysH),
                ohi * p.SH - p.PT, ow0 * p.SW - p.PL, ow0);
            pg += dpg;
            const int c1 = pg >= IP;
            pg -= c1 ? IP : 0;
            oh += doh + c1;
            const int c2 = oh >= IH;
            oh -= c2 ? IH : 0;
            n += dn + c2;
        }
        for (I e = it0; e < frame; e += it_step) {
            const int n_ = int(e / per_image);
            I r = e % per_image;
            int oh_, pg_;
            if (r < top) {
                oh_ = int(r / groups); pg_ = int(r % groups);
            } else if (r < top + middle) {
                r -= top;
                oh_ = oh_lo + int(r / (groups - IP)); pg_ = int(r % (groups - IP));
                pg_ += pg_ < pg_lo ? 0 : IP;
            } else {
                r -= top + middle;
                oh_ = oh_hi + int(r / groups); pg_ = int(r % groups);
            }
            const int ow0 = pg_ * PX;
            depthwise_item<T, I, V, PX, 0, 0, 0, true>(
                p, xc + I(n_) * I(p.xsN), wk, yk + I(n_) * I(p.ysN) + I(oh_) * I(p.ysH),
                oh_ * p.SH - p.PT, ow0 * p.SW - p.PL, ow0);
        }
    }
}

// 3x3 filters with column dilation 1 at column stride 1 or 2 (MobileNet's depthwise layers) get
// compile-time register windows; every other shape the runtime-shaped item.
template <typename T, typename I, int V>
__device__ __forceinline__ void depthwise(const ConvProblem& p, const T* __restrict__ x,
                                          const T* __restrict__ w, T* __restrict__ y) {
    const bool k3 = p.KH == 3 && p.KW == 3 && p.DW == 1;
    if (k3 && p.SW == 1)      depthwise_pass<T, I, V, 3, 3, 1>(p, x, w, y);
    else if (k3 && p.SW == 2) depthwise_pass<T, I, V, 3, 3, 2>(p, x, w, y);
    else                      depthwise_pass<T, I, V, 0, 0, 0>(p, x, w, y);
}

template <typename T, typename I>
__device__ __forceinline__ void depthwise_entry(const ConvProblem& p, const T* __restrict__ x,
                                                const T* __restrict__ w, T* __restrict__ y, int vec) {
    if (vec) depthwise<T, I, VecLanes<T>::value>(p, x, w, y);
    else     depthwise<T, I, 1>(p, x, w, y);
}

extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS, DEPTHWISE_MIN_BLOCKS)
conv_depthwise_f32_i32(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int vec) { depthwise_entry<float, int>(p, x, w, y, vec); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS, DEPTHWISE_MIN_BLOCKS)
conv_depthwise_f32_i64(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int vec) { depthwise_entry<float, long long>(p, x, w, y, vec); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS, DEPTHWISE_MIN_BLOCKS)
conv_depthwise_f64_i32(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, int vec) { depthwise_entry<double, int>(p, x, w, y, vec); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS, DEPTHWISE_MIN_BLOCKS)
conv_depthwise_f64_i64(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, int vec) { depthwise_entry<double, long long>(p, x, w, y, vec); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS, DEPTHWISE_MIN_BLOCKS)
conv_depthwise_f16_i32(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int vec) { depthwise_entry<__half, int>(p, x, w, y, vec); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS, DEPTHWISE_MIN_BLOCKS)
conv_depthwise_f16_i64(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int vec) { depthwise_entry<__half, long long>(p, x, w, y, vec); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS, DEPTHWISE_MIN_BLOCKS)
conv_depthwise_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, int vec) { depthwise_entry<__nv_bfloat16, int>(p, x, w, y, vec); }
extern "C" __global__ void __launch_bounds__(DEPTHWISE_THREADS, DEPTHWISE_MIN_BLOCKS)
conv_depthwise_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, int vec) { depthwise_entry<__nv_bfloat16, long long>(p, x, w, y, vec); }
