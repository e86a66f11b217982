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
// IgemmB's and IgemmATap's last parameter CH (default 4) widens the chunk (the tensor-core kernel's
// 16-byte chunks of halves: CH = 8, with K, KG and the alignments multiples of 8 elements).
//
// What a consumer calls (interface kept stable; the tensor-core kernel uses it too):
//   IgemmA<T, S, I, BM, BK, THREADS, LDA[, VEC_ONLY]> a(p, x, g, m0, r0, vec);   // rows m0.., reduction from r0
//                                        // (VEC_ONLY: a module that runs vector mode alone)
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

template <typename T, int N>
struct alignas(N * sizeof(T)) IgemmVec { T v[N]; };
template <typename T>
using IgemmVec4 = IgemmVec<T, 4>;

// An element as stored in shared memory: unchanged, or widened to the accumulator type.
template <typename S, typename T>
__device__ __forceinline__ S igemm_smem_value(T v) { return S(load_acc(v)); }
template <>
__device__ __forceinline__ __half igemm_smem_value<__half, __half>(__half v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 igemm_smem_value<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16 v) { return v; }

template <typename T> __device__ __forceinline__ T igemm_zero() { return store_acc<T>(0); }

// N elements from src (one vector load; src aligned to N elements) into v[0..N-1], or zeros when !in.
template <int N, typename T>
__device__ __forceinline__ void igemm_load(T* v, const T* src, bool in) {
    IgemmVec<T, N> q;
    if (in) q = *reinterpret_cast<const IgemmVec<T, N>*>(src);
    else
#pragma unroll
        for (int e = 0; e < N; ++e) q.v[e] = igemm_zero<T>();
#pragma unroll
    for (int e = 0; e < N; ++e) v[e] = q.v[e];
}
template <typename T>
__device__ __forceinline__ void igemm_load4(T* v, const T* src, bool in) { igemm_load<4>(v, src, in); }

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

// Output pixel m's top-left input position (ih0, iw0) and the x offset of (n, ih0, iw0, g*CG), which may be
// negative (only valid taps are read). Past M: a position no tap reaches (the row reads as zeros), offset 0.
template <typename I>
__device__ __forceinline__ I igemm_row_origin(const ConvProblem& p, int m, int g, int& ih0, int& iw0) {
    if (m >= p.N * p.OH * p.OW) {
        ih0 = -p.KH * p.DH - 1;
        iw0 = 0;
        return I(0);
    }
    const int ow = m % p.OW, rest = m / p.OW;
    const int oh = rest % p.OH, n = rest / p.OH;
    ih0 = oh * p.SH - p.PT;
    iw0 = ow * p.SW - p.PL;
    return I(n) * I(p.xsN) + I(ih0) * I(p.xsH) + I(iw0) * I(p.xsW) + I(g) * I(p.CG) * I(p.xsC);
}

// Reduction position r as its channel within the group and its tap offsets (kh*DH, kw*DW); dh >= KH*DH
// once r >= R (the position reads as zeros).
__device__ __forceinline__ void igemm_position(const ConvProblem& p, int r, int& c, int& dh, int& dw) {
    const int tap = r / p.CG;
    c = r - tap * p.CG;
    dh = tap / p.KW * p.DH;
    dw = tap % p.KW * p.DW;
}

template <typename T, typename S, typename I, int BM, int BK, int THREADS, int LDA, bool VEC_ONLY = false>
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
          xsH(I(p.xsH)), xsW(I(p.xsW)), xsC(I(p.xsC)), vec(VEC_ONLY || vec_ != 0) {
        const int t = threadIdx.x;
        ml = t % BM;
        row = igemm_row_origin<I>(p, m0 + ml, g, ih0, iw0);
        const int step = vec ? 4 : 1;
#pragma unroll
        for (int i = 0; i < kScalar; ++i) igemm_position(p, r0 + (t / BM + i * kRowThreads) * step, c[i], dh[i], dw[i]);
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
                igemm_load4(v.v + 4 * i, off >= 0 ? x + off : x, off >= 0);
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

    // Position i on to BK elements later (compares and adds: at most one wrap when CG >= BK).
    __device__ __forceinline__ void step(int i) {
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

    // A module that runs vector mode alone (VEC_ONLY) steps only its kChunks positions; the general
    // one steps all (those past kChunks unused in vector mode): a loop bounded by the runtime mode
    // instead made ptxas spill the general module's double entries
    __device__ __forceinline__ void advance() {
#pragma unroll
        for (int i = 0; i < (VEC_ONLY ? kChunks : kScalar); ++i) step(i);
    }
};

// Tap tiles (the host checks CG % BK == 0 on top of vector mode, NHWC input): every A tile then lies
// within one tap and covers BK consecutive channels, so the reduction position (c, kh*DH, kw*DW) is one
// for the whole block, stepped once per tile by a branch all threads take alike, and a row's BK
// elements are one contiguous run of the input: one bounds check and one address per row and tile
// instead of one per 4-element chunk, and no per-chunk tap wrap-around.
// Thread mapping: lanes 2q and 2q+1 copy the two CH-element chunks of 2*CH consecutive elements of one
// row (kPairs such pairs per row, 2*CH elements apart). CH = 4 (the default: implicit_gemm.cu, which
// widens half types in shared memory) or 16 bytes' worth (the tensor-core kernel's raw half copies:
// CH = 8, which needs x and its strides aligned to 8 elements); with 16-byte chunks one copy instruction
// of a warp reads 16 rows x 32 contiguous bytes: whole sectors (IgemmA's lanes take 16 bytes of 32
// rows: half sectors). Row slot q = t/2 holds rows ml(q) + j*kSlots (j < kRows) with
// ml(q) = 2*(q%4) + (q/4)%2 + 8*(q/8): a quarter warp stores into rows {0,2,4,6} (or {1,3,5,7}) + 8i,
// whose 16-byte bank groups 5*row + {0,1} (80-byte rows: LDA = 20 floats or 40 halves) are 8 distinct
// ones for any odd row length in 16-byte units: conflict-free 16-byte stores.
// Interface and contract as IgemmA's (the consumers take either through the same calls).
template <typename T, typename S, typename I, int BM, int BK, int THREADS, int LDA, int CH = 4>
struct IgemmATap {
    static constexpr int kSlots = THREADS / 2;  // rows one pass of the block's threads covers
    static_assert(kSlots % 8 == 0 && BM % kSlots == 0, "IgemmATap: THREADS/2 a multiple of 8 dividing BM");
    static constexpr int kRows = BM / kSlots;   // rows per thread
    static_assert(BK % (2 * CH) == 0, "IgemmATap: BK a multiple of 2*CH (pairs of CH-element chunks)");
    static constexpr int kPairs = BK / (2 * CH);  // chunks per thread and row
    static_assert(LDA % CH == 0 && LDA >= BK, "IgemmATap: LDA keeps rows chunk-aligned and holds BK elements");
    static constexpr bool kCanCopyAsync = sizeof(S) == sizeof(T);
    struct Regs { T v[kRows * kPairs * CH]; };

    const T* __restrict__ x;
    const T* row[kRows];        // x + the offset of (n, ih0, iw0, g*CG) + col of each row (maybe outside x;
                                // x itself past M: x + col there made ptxas' loop 6-8 instructions longer)
    int ih0[kRows], iw0[kRows]; // each row's top-left input position (out of range past M)
    int ml0, col;               // the first row within the tile, the thread's first column (0 or 4)
    int c, dh, dw;              // the tile's channel within the group and tap offsets (kh*DH, kw*DW)
    I tap;                      // dh*xsH + dw*xsW + c: the tile's offset from a row's base
    int H, W, CG, KHD, KWD, DH, DW;
    I next_w, next_h;           // tap's step when c wraps to the next kw, and when kw wraps to the next kh

    __device__ __forceinline__ IgemmATap(const ConvProblem& p, const T* __restrict__ x_, int g, int m0, int r0, int)
        : x(x_), H(p.H), W(p.W), CG(p.CG), KHD(p.KH * p.DH), KWD(p.KW * p.DW), DH(p.DH), DW(p.DW) {
        const int q = threadIdx.x / 2;
        ml0 = 2 * (q % 4) + (q / 4) % 2 + 8 * (q / 8);
        col = CH * (threadIdx.x % 2);
#pragma unroll
        for (int j = 0; j < kRows; ++j) {
            const int m = m0 + ml0 + j * kSlots;
            const I off = igemm_row_origin<I>(p, m, g, ih0[j], iw0[j]);
            row[j] = m < p.N * p.OH * p.OW ? x + (off + col) : x;
        }
        igemm_position(p, r0, c, dh, dw);
        tap = I(dh) * I(p.xsH) + I(dw) * I(p.xsW) + I(c);
        next_w = I(p.DW) * I(p.xsW) - I(p.CG);
        next_h = I(p.DH) * I(p.xsH) - I(KWD) * I(p.xsW);
    }

    // Row j's first element for this tile and thread, or x itself (a valid address) when it reads as zeros.
    __device__ __forceinline__ const T* source(int j, bool& in) const {
        const int ih = ih0[j] + dh, iw = iw0[j] + dw;
        in = dh < KHD && unsigned(ih) < unsigned(H) && unsigned(iw) < unsigned(W);
        return in ? row[j] + tap : x + col;   // x + col + 2*CH*k stays inside x: CG >= BK
    }

    __device__ __forceinline__ void copy_async(S* __restrict__ sA) const {
        static_assert(kCanCopyAsync, "IgemmATap::copy_async copies raw elements: S must be T");
#pragma unroll
        for (int j = 0; j < kRows; ++j) {
            bool in;
            const T* src = source(j, in);
            S* dst = sA + (ml0 + j * kSlots) * LDA + col;
#pragma unroll
            for (int k = 0; k < kPairs; ++k) igemm_copy<CH * sizeof(T)>(dst + 2 * CH * k, src + 2 * CH * k, in);
        }
    }

    __device__ __forceinline__ void fetch(Regs& v) const {
#pragma unroll
        for (int j = 0; j < kRows; ++j) {
            bool in;
            const T* src = source(j, in);
#pragma unroll
            for (int k = 0; k < kPairs; ++k) igemm_load<CH>(v.v + CH * (j * kPairs + k), src + 2 * CH * k, in);
        }
    }

    __device__ __forceinline__ void stash(const Regs& v, S* __restrict__ sA) const {
#pragma unroll
        for (int j = 0; j < kRows; ++j) {
            S* dst = sA + (ml0 + j * kSlots) * LDA + col;
#pragma unroll
            for (int k = 0; k < kPairs; ++k)
#pragma unroll
                for (int e = 0; e < CH; ++e) dst[2 * CH * k + e] = igemm_smem_value<S>(v.v[CH * (j * kPairs + k) + e]);
        }
    }

    __device__ __forceinline__ void advance() {
        c += BK;
        tap += BK;
        if (c == CG) {  // CG % BK == 0: the tile after the tap's last channels starts the next tap
            c = 0;
            dw += DW;
            tap += next_w;
            if (dw == KWD) {
                dw = 0;
                dh += DH;
                tap += next_h;
            }
        }
    }
};

template <typename T, typename S, typename I, int BK, int BN, int THREADS, int LDB, int CH = 4>
struct IgemmB {
    static_assert(BN % CH == 0 && LDB % CH == 0 && LDB >= BN, "IgemmB: BN and LDB multiples of CH, LDB >= BN");
    static constexpr int kScalar = (BK * BN + THREADS - 1) / THREADS;      // elements per thread, scalar mode
    static constexpr int kChunks = (BK * BN / CH + THREADS - 1) / THREADS;  // chunks per thread, vector mode
    static constexpr bool kCanCopyAsync = sizeof(S) == sizeof(T);
    struct Regs { T v[kScalar > CH * kChunks ? kScalar : CH * kChunks]; };

    const T* __restrict__ w;  // filters of this group's tile columns: w + g*KG + k0
    const T* __restrict__ wr; // the current tile's first row: w + r*K (a running pointer: the per-element
                              // offset rl*K + kl stays the same from tile to tile)
    I K;
    int rleft, kleft;         // rows left in R from the current tile's first (R - r), columns in the group (KG - k0)
    bool vec;

    __device__ __forceinline__ IgemmB(const ConvProblem& p, const T* __restrict__ w_, int g, int k0, int r0, int vec_)
        : w(w_ + I(g) * I(p.KG) + k0), wr(w + I(r0) * I(p.K)), K(I(p.K)), rleft(p.KH * p.KW * p.CG - r0),
          kleft(p.KG - k0), vec(vec_ != 0) {}

    // Element or chunk i of this thread: its row and column in the tile, false when past the tile.
    __device__ __forceinline__ bool place(int i, int& rl, int& kl) const {
        const int u = threadIdx.x + i * THREADS;
        // threadIdx.x < THREADS: where the tile splits evenly the bound needs no test (and its branch
        // would split the loop's copies into separate blocks)
        if (vec) {
            rl = u / (BN / CH);
            kl = u % (BN / CH) * CH;
            return (BK * BN / CH) % THREADS == 0 ? i < kChunks : u < BK * BN / CH;
        }
        rl = u / BN;
        kl = u % BN;
        return (BK * BN) % THREADS == 0 ? i < kScalar : u < BK * BN;
    }

    __device__ __forceinline__ bool inside(int rl, int kl) const { return rl < rleft && kl < kleft; }

    __device__ __forceinline__ void copy_async(S* __restrict__ sB) const {
        static_assert(kCanCopyAsync, "IgemmB::copy_async copies raw elements: S must be T");
#pragma unroll
        for (int i = 0; i < kScalar; ++i) {
            int rl, kl;
            if (i >= (vec ? kChunks : kScalar) || !place(i, rl, kl)) break;
            const bool in = inside(rl, kl);
            const T* src = in ? wr + (I(rl) * K + kl) : w;
            if (vec) igemm_copy<CH * sizeof(T)>(sB + rl * LDB + kl, src, in);
            else igemm_copy<sizeof(T)>(sB + rl * LDB + kl, src, in);
        }
    }

    __device__ __forceinline__ void fetch(Regs& v) const {
        if (vec) {
#pragma unroll
            for (int i = 0; i < kChunks; ++i) {
                int rl, kl;
                const bool in = place(i, rl, kl) && inside(rl, kl);
                igemm_load<CH>(v.v + CH * i, in ? wr + (I(rl) * K + kl) : w, in);
            }
        } else {
#pragma unroll
            for (int i = 0; i < kScalar; ++i) {
                int rl, kl;
                v.v[i] = place(i, rl, kl) && inside(rl, kl) ? wr[I(rl) * K + kl] : igemm_zero<T>();
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
                for (int e = 0; e < CH; ++e) sB[rl * LDB + kl + e] = igemm_smem_value<S>(v.v[CH * i + e]);
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

    __device__ __forceinline__ void advance() {
        rleft -= BK;
        wr += I(BK) * K;
    }
};
