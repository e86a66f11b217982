// igemm_tiles.cuh - the tile loaders of the implicit-GEMM convolution (no im2col workspace).
//
// The convolution of group g as a matrix product C[m, k] = sum_r A[m, r] * B[r, k] with
//   m = (n*OH + oh)*OW + ow            M = N*OH*OW rows (output pixels)
//   r = (kh*KW + kw)*CG + c            R = KH*KW*CG (the HWIO filter's row order)
//   A[m, r] = x[n, oh*SH - PT + kh*DH, ow*SW - PL + kw*DW, g*CG + c]   (0 outside the image)
//   B[r, k] = w[r*K + g*KG + k]         HWIO filters, row-major [R][K]
// The loaders read A straight from the input in any layout (ConvProblem's strides) and B from the
// filters, BK reduction elements per step, into one stage of shared memory:
//   A stage: sA[ml*LDA + rl]  (ml < BM rows, rl < BK; row stride LDA elements)
//   B stage: sB[rl*LDB + kl]  (rl < BK, kl < BN; row stride LDB elements)
// where S, the shared element type, is T itself (raw copies) or the accumulator type (widened).
// Elements outside the image (padding), past R, past M or past KG are written as zeros.
//
// The analytic iterator (CUTLASS's name): each thread owns one row m of the A tile for the whole
// K loop, so (n, oh, ow) are divided out once, in the constructor; its reduction positions keep
// (c, kh*DH, kw*DW) and step them by BK per tile with compares and adds only (no division in the loop).
//
// Thread mapping (THREADS % BM == 0): thread t loads row ml = t % BM, so a warp's lanes take
// consecutive rows: with LDA/4 odd, 8 lanes storing 16 bytes each hit 8 different bank groups
// (conflict-free 16-byte stores) and an NCHW input is read along its contiguous ow axis. The
// THREADS/BM threads of one row split its BK elements: positions t/BM + i*THREADS/BM (scalar mode)
// or 4-element chunks at 4*(t/BM + i*THREADS/BM) (vector mode).
// B: consecutive threads take consecutive k (scalar) or consecutive 4-element chunks (vector) of
// one filter row: coalesced global reads, conflict-free shared stores.
//
// Vector mode (vec != 0, decided by the host): 4 elements per copy. For A it needs an NHWC-like
// input (xsC == 1), CG % 4 == 0 and every other stride and x's address aligned to 4 elements; for B,
// K % 4 == 0, KG % 4 == 0 and w aligned to 4 elements. A 4-element chunk then never crosses a tap.
//
// What a consumer calls (interface kept stable; the tensor-core kernel uses it too):
//   IgemmA<T, S, I, BM, BK, THREADS, LDA> a(p, x, g, m0, r0, vec);   // rows m0.., reduction from r0
//   IgemmB<T, S, I, BK, BN, THREADS, LDB> b(p, w, g, k0, r0, vec);   // columns k0.., from r0
//   a.copy_async(sA); b.copy_async(sB);  // async_copy (async_copy.cuh) of the current tile into a
//                                        // stage; needs S == T (kCanCopyAsync); 2-byte elements in
//                                        // scalar mode are stored at once; the caller commits and waits
//   a.fetch(ra); b.fetch(rb);            // the current tile into registers (typename IgemmA::Regs)
//   a.stash(ra, sA); b.stash(rb, sB);    // those registers into a stage, converted to S
//   a.advance(); b.advance();            // on to the next BK reduction elements
// r0 must be a multiple of BK; the stage pointers must be 16-byte aligned, LDA and LDB multiples of 4.
#pragma once

#include "common.cuh"
#include "async_copy.cuh"

template <typename T>
struct alignas(4 * sizeof(T)) IgemmVec4 { T v[4]; };

// An element as stored in shared memory: unchanged, or widened to the accumulator type.
template <typename S, typename T>
__device__ __forceinline__ S igemm_smem_value(T v) { return S(load_acc(v)); }
template <>
__device__ __forceinline__ __half igemm_smem_value<__half, __half>(__half v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 igemm_smem_value<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16 v) { return v; }

template <typename T> __device__ __forceinline__ T igemm_zero() { return store_acc<T>(0); }

// One element or chunk of BYTES from global to shared memory through async_copy (zeros when !in; src
// must then still be a valid, aligned address). Chunks over 16 bytes (4 doubles) take two copies;
// 2-byte elements, which cp.async cannot copy, are stored at once (correct in any pipeline: the data
// is there before the wait).
template <int BYTES, typename T>
__device__ __forceinline__ void igemm_copy(T* dst, const T* src, bool in) {
    if constexpr (BYTES > 16) {
        constexpr int kHalf = BYTES / 2 / int(sizeof(T));
        igemm_copy<BYTES / 2>(dst, src, in);
        igemm_copy<BYTES / 2>(dst + kHalf, in ? src + kHalf : src, in);
    } else if constexpr (BYTES >= 4) {
        async_copy<BYTES>(dst, src, in ? BYTES : 0);
    } else {
        *dst = in ? *src : igemm_zero<T>();
    }
}

template <typename T, typename S, typename I, int BM, int BK, int THREADS, int LDA>
struct IgemmA {
    static_assert(THREADS % BM == 0, "IgemmA: every row of the A tile is loaded by THREADS/BM threads");
    static constexpr int kRowThreads = THREADS / BM;
    static_assert(BK % (4 * kRowThreads) == 0, "IgemmA: BK must split into 4-element chunks over a row's threads");
    static_assert(LDA % 4 == 0 && LDA >= BK, "IgemmA: LDA keeps rows 16-byte aligned and holds BK elements");
    static constexpr int kScalar = BK / kRowThreads;        // positions per thread, scalar mode
    static constexpr int kChunks = BK / 4 / kRowThreads;    // 4-element chunks per thread, vector mode
    static constexpr bool kCanCopyAsync = sizeof(S) == sizeof(T);
    struct Regs { T v[kScalar]; };

    const T* __restrict__ x;
    I row;           // x offset of (n, ih0, iw0, g*CG): may be negative, only valid taps are read
    int ih0, iw0;    // the row's top-left input position (out of range for rows past M)
    int ml;          // the row within the tile
    int c[kScalar], dh[kScalar], dw[kScalar];   // each position's channel and tap offsets
    int H, W, CG, KHD, KWD, DH, DW;
    I xsH, xsW, xsC;
    bool vec;

    __device__ __forceinline__ IgemmA(const ConvProblem& p, const T* __restrict__ x_, int g, int m0, int r0, int vec_)
        : x(x_), H(p.H), W(p.W), CG(p.CG), KHD(p.KH * p.DH), KWD(p.KW * p.DW), DH(p.DH), DW(p.DW),
          xsH(I(p.xsH)), xsW(I(p.xsW)), xsC(I(p.xsC)), vec(vec_ != 0) {
        const int t = threadIdx.x;
        ml = t % BM;
        const int m = m0 + ml;
        if (m < p.N * p.OH * p.OW) {
            const int ow = m % p.OW, rest = m / p.OW;
            const int oh = rest % p.OH, n = rest / p.OH;
            ih0 = oh * p.SH - p.PT;
            iw0 = ow * p.SW - p.PL;
            row = I(n) * I(p.xsN) + I(ih0) * xsH + I(iw0) * xsW + I(g) * I(p.CG) * xsC;
        } else {
            ih0 = -KHD - 1;  // no tap reaches the image: the row reads as zeros
            iw0 = 0;
            row = 0;
        }
        const int step = vec ? 4 : 1;
#pragma unroll
        for (int i = 0; i < kScalar; ++i) {
            const int r = r0 + (t / BM + i * kRowThreads) * step;
            const int tap = r / p.CG;
            c[i] = r - tap * p.CG;
            dh[i] = tap / p.KW * p.DH;   // >= KHD once r >= R: the position reads as zeros
            dw[i] = tap % p.KW * p.DW;
        }
    }

    // The x offset of position i, or -1 when it reads as zero.
    __device__ __forceinline__ I offset(int i) const {
        const int ih = ih0 + dh[i], iw = iw0 + dw[i];
        const bool in = dh[i] < KHD && unsigned(ih) < unsigned(H) && unsigned(iw) < unsigned(W);
        return in ? row + I(dh[i]) * xsH + I(dw[i]) * xsW + I(c[i]) * xsC : I(-1);
    }

    __device__ __forceinline__ int positions() const { return vec ? kChunks : kScalar; }
    __device__ __forceinline__ int column(int i) const { return (threadIdx.x / BM + i * kRowThreads) * (vec ? 4 : 1); }

    __device__ __forceinline__ void copy_async(S* __restrict__ sA) const {
        static_assert(kCanCopyAsync, "IgemmA::copy_async copies raw elements: S must be T");
        S* dst = sA + ml * LDA;
        if (vec) {
#pragma unroll
            for (int i = 0; i < kChunks; ++i) {
                const I off = offset(i);
                igemm_copy<4 * sizeof(T)>(dst + column(i), off >= 0 ? x + off : x, off >= 0);
            }
        } else {
#pragma unroll
            for (int i = 0; i < kScalar; ++i) {
                const I off = offset(i);
                igemm_copy<sizeof(T)>(dst + column(i), off >= 0 ? x + off : x, off >= 0);
            }
        }
    }

    __device__ __forceinline__ void fetch(Regs& v) const {
        if (vec) {
#pragma unroll
            for (int i = 0; i < kChunks; ++i) {
                const I off = offset(i);
                IgemmVec4<T> q;
                if (off >= 0) q = *reinterpret_cast<const IgemmVec4<T>*>(x + off);
                else
#pragma unroll
                    for (int e = 0; e < 4; ++e) q.v[e] = igemm_zero<T>();
#pragma unroll
                for (int e = 0; e < 4; ++e) v.v[4 * i + e] = q.v[e];
            }
        } else {
#pragma unroll
            for (int i = 0; i < kScalar; ++i) {
                const I off = offset(i);
                v.v[i] = off >= 0 ? x[off] : igemm_zero<T>();
            }
        }
    }

    __device__ __forceinline__ void stash(const Regs& v, S* __restrict__ sA) const {
        S* dst = sA + ml * LDA;
        if (vec) {
#pragma unroll
            for (int i = 0; i < kChunks; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) dst[column(i) + e] = igemm_smem_value<S>(v.v[4 * i + e]);
        } else {
#pragma unroll
            for (int i = 0; i < kScalar; ++i) dst[column(i)] = igemm_smem_value<S>(v.v[i]);
        }
    }

    __device__ __forceinline__ void advance() {
#pragma unroll
        for (int i = 0; i < kScalar; ++i) {
            c[i] += BK;
            while (c[i] >= CG) {  // at most once when CG >= BK; a few times for small CG
                c[i] -= CG;
                dw[i] += DW;
                if (dw[i] == KWD) {
                    dw[i] = 0;
                    dh[i] += DH;
                }
            }
        }
    }
};

template <typename T, typename S, typename I, int BK, int BN, int THREADS, int LDB>
struct IgemmB {
    static_assert(BN % 4 == 0 && LDB % 4 == 0 && LDB >= BN, "IgemmB: BN and LDB multiples of 4, LDB >= BN");
    static constexpr int kScalar = (BK * BN + THREADS - 1) / THREADS;      // elements per thread, scalar mode
    static constexpr int kChunks = (BK * BN / 4 + THREADS - 1) / THREADS;  // chunks per thread, vector mode
    static constexpr bool kCanCopyAsync = sizeof(S) == sizeof(T);
    struct Regs { T v[kScalar > 4 * kChunks ? kScalar : 4 * kChunks]; };

    const T* __restrict__ w;  // filters of this group's tile columns: w + g*KG + k0
    I K;
    int r, R, kleft;          // current tile's first row, R, columns left in the group (KG - k0)
    bool vec;

    __device__ __forceinline__ IgemmB(const ConvProblem& p, const T* __restrict__ w_, int g, int k0, int r0, int vec_)
        : w(w_ + I(g) * I(p.KG) + k0), K(I(p.K)), r(r0), R(p.KH * p.KW * p.CG), kleft(p.KG - k0), vec(vec_ != 0) {}

    // Element or chunk i of this thread: its row and column in the tile, false when past the tile.
    __device__ __forceinline__ bool place(int i, int& rl, int& kl) const {
        const int u = threadIdx.x + i * THREADS;
        if (vec) {
            rl = u / (BN / 4);
            kl = u % (BN / 4) * 4;
            return u < BK * BN / 4;
        }
        rl = u / BN;
        kl = u % BN;
        return u < BK * BN;
    }

    __device__ __forceinline__ bool inside(int rl, int kl) const { return r + rl < R && kl < kleft; }

    __device__ __forceinline__ void copy_async(S* __restrict__ sB) const {
        static_assert(kCanCopyAsync, "IgemmB::copy_async copies raw elements: S must be T");
#pragma unroll
        for (int i = 0; i < kScalar; ++i) {
            int rl, kl;
            if (i >= (vec ? kChunks : kScalar) || !place(i, rl, kl)) break;
            const bool in = inside(rl, kl);
            const T* src = in ? w + I(r + rl) * K + kl : w;
            if (vec) igemm_copy<4 * sizeof(T)>(sB + rl * LDB + kl, src, in);
            else igemm_copy<sizeof(T)>(sB + rl * LDB + kl, src, in);
        }
    }

    __device__ __forceinline__ void fetch(Regs& v) const {
        if (vec) {
#pragma unroll
            for (int i = 0; i < kChunks; ++i) {
                int rl, kl;
                IgemmVec4<T> q;
                if (place(i, rl, kl) && inside(rl, kl)) q = *reinterpret_cast<const IgemmVec4<T>*>(w + I(r + rl) * K + kl);
                else
#pragma unroll
                    for (int e = 0; e < 4; ++e) q.v[e] = igemm_zero<T>();
#pragma unroll
                for (int e = 0; e < 4; ++e) v.v[4 * i + e] = q.v[e];
            }
        } else {
#pragma unroll
            for (int i = 0; i < kScalar; ++i) {
                int rl, kl;
                v.v[i] = place(i, rl, kl) && inside(rl, kl) ? w[I(r + rl) * K + kl] : igemm_zero<T>();
            }
        }
    }

    __device__ __forceinline__ void stash(const Regs& v, S* __restrict__ sB) const {
        if (vec) {
#pragma unroll
            for (int i = 0; i < kChunks; ++i) {
                int rl, kl;
                if (!place(i, rl, kl)) break;
#pragma unroll
                for (int e = 0; e < 4; ++e) sB[rl * LDB + kl + e] = igemm_smem_value<S>(v.v[4 * i + e]);
            }
        } else {
#pragma unroll
            for (int i = 0; i < kScalar; ++i) {
                int rl, kl;
                if (!place(i, rl, kl)) break;
                sB[rl * LDB + kl] = igemm_smem_value<S>(v.v[i]);
            }
        }
    }

    __device__ __forceinline__ void advance() { r += BK; }
};
