// gemm.cuh - the body of gemm.cu's tiled matrix product, shared by every kernel file that launches it
// (gemm.cu: the forward convolution's GEMMs; gemm_splitk.cu: the filter gradient's split-K partials).
// See gemm.cu for what it computes, its launch shape and tiling. C is the output's element type: T for
// a finished result, the accumulator type for partial sums that a second pass adds up and rounds.
#pragma once

#include "common.cuh"

#ifndef GEMM_BM
#define GEMM_BM 64
#endif
#ifndef GEMM_BN
#define GEMM_BN 64
#endif
#ifndef GEMM_BK
#define GEMM_BK 16
#endif
#ifndef GEMM_TM
#define GEMM_TM 4
#endif
#ifndef GEMM_TN
#define GEMM_TN 4
#endif
#ifndef GEMM_PAD
#define GEMM_PAD 4  // skews A's transposed rows so the staging stores hit different banks
#endif
#define GEMM_THREADS ((GEMM_BM / GEMM_TM) * (GEMM_BN / GEMM_TN))

static_assert(GEMM_BM % GEMM_TM == 0 && GEMM_BN % GEMM_TN == 0, "a tile must split into whole register tiles");
static_assert(GEMM_THREADS >= 32 && GEMM_THREADS <= 1024, "GEMM_THREADS must be 32 to 1024");
static_assert(GEMM_BK % 4 == 0 && GEMM_BN % 4 == 0, "vector loads take 4 elements: GEMM_BK and GEMM_BN multiples of 4");
static_assert((GEMM_BM * GEMM_BK) % GEMM_THREADS == 0 && (GEMM_BK * GEMM_BN) % GEMM_THREADS == 0,
              "every thread stages the same number of tile elements");

template <typename T>
struct alignas(4 * sizeof(T)) Vec4 { T v[4]; };

template <typename T, typename I, typename C = T>
__device__ __forceinline__ void gemm(const GemmProblem q, const T* __restrict__ a, const T* __restrict__ b,
                                     C* __restrict__ c) {
    using A = typename Acc<T>::type;
    __shared__ A As[GEMM_BK][GEMM_BM + GEMM_PAD];  // As[r][m]
    __shared__ A Bs[GEMM_BK][GEMM_BN];             // Bs[r][k]

    const int g = blockIdx.z;
    const int m_tile = blockIdx.x * GEMM_BM, k_tile = blockIdx.y * GEMM_BN;
    const int t = threadIdx.x;
    const int tx = t % (GEMM_BN / GEMM_TN), ty = t / (GEMM_BN / GEMM_TN);
    a += I(g) * I(q.a_s_g);
    b += I(g) * I(q.b_s_g);

    A acc[GEMM_TM][GEMM_TN];
#pragma unroll
    for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = A(0);

    for (int r0 = 0; r0 < q.R; r0 += GEMM_BK) {
        // ---- stage the A tile (GEMM_BM rows x GEMM_BK) ----
        if (q.vec_a) {
            for (int i = t; i < GEMM_BM * GEMM_BK / 4; i += GEMM_THREADS) {
                const int ml = i / (GEMM_BK / 4), rl = (i % (GEMM_BK / 4)) * 4;
                const int m = m_tile + ml, r = r0 + rl;
                Vec4<T> v;
                if (m < q.M && r < q.R) {  // R % 4 == 0 when vec_a: all 4 are in range
                    const I row = I(m / q.a_mi) * I(q.a_s_img) + I(m % q.a_mi) * I(q.a_s_m);
                    v = *reinterpret_cast<const Vec4<T>*>(a + row + r);
                    for (int e = 0; e < 4; ++e) As[rl + e][ml] = load_acc(v.v[e]);
                } else {
                    for (int e = 0; e < 4; ++e) As[rl + e][ml] = A(0);
                }
            }
        } else {
            // r fastest when A's rows are contiguous, m fastest otherwise (NCHW input read in place)
            const bool r_fastest = q.a_s_r == 1;
            for (int i = t; i < GEMM_BM * GEMM_BK; i += GEMM_THREADS) {
                const int ml = r_fastest ? i / GEMM_BK : i % GEMM_BM;
                const int rl = r_fastest ? i % GEMM_BK : i / GEMM_BM;
                const int m = m_tile + ml, r = r0 + rl;
                A v = A(0);
                if (m < q.M && r < q.R)
                    v = load_acc(a[I(m / q.a_mi) * I(q.a_s_img) + I(m % q.a_mi) * I(q.a_s_m) + I(r) * I(q.a_s_r)]);
                As[rl][ml] = v;
            }
        }
        // ---- stage the B tile (GEMM_BK x GEMM_BN) ----
        if (q.vec_b) {
            for (int i = t; i < GEMM_BK * GEMM_BN / 4; i += GEMM_THREADS) {
                const int rl = i / (GEMM_BN / 4), kl = (i % (GEMM_BN / 4)) * 4;
                const int r = r0 + rl, k = k_tile + kl;
                if (r < q.R && k < q.KG) {  // KG % 4 == 0 when vec_b
                    const Vec4<T> v = *reinterpret_cast<const Vec4<T>*>(b + I(r) * I(q.b_s_r) + k);
                    for (int e = 0; e < 4; ++e) Bs[rl][kl + e] = load_acc(v.v[e]);
                } else {
                    for (int e = 0; e < 4; ++e) Bs[rl][kl + e] = A(0);
                }
            }
        } else {
            for (int i = t; i < GEMM_BK * GEMM_BN; i += GEMM_THREADS) {
                const int rl = i / GEMM_BN, kl = i % GEMM_BN;
                const int r = r0 + rl, k = k_tile + kl;
                Bs[rl][kl] = (r < q.R && k < q.KG) ? load_acc(b[I(r) * I(q.b_s_r) + k]) : A(0);
            }
        }
        __syncthreads();
        // ---- multiply the staged tiles into the register tile ----
#pragma unroll
        for (int rl = 0; rl < GEMM_BK; ++rl) {
            A av[GEMM_TM], bv[GEMM_TN];
#pragma unroll
            for (int i = 0; i < GEMM_TM; ++i) av[i] = As[rl][ty * GEMM_TM + i];
#pragma unroll
            for (int j = 0; j < GEMM_TN; ++j) bv[j] = Bs[rl][tx * GEMM_TN + j];
#pragma unroll
            for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
                for (int j = 0; j < GEMM_TN; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();  // the next step overwrites the tiles
    }

    // ---- store: each row m maps to its output pixel once; round once ----
#pragma unroll
    for (int i = 0; i < GEMM_TM; ++i) {
        const int m = m_tile + ty * GEMM_TM + i;
        if (m >= q.M) continue;
        const int mc = q.c_m0 + m;
        const I row = I(g) * I(q.c_s_g) + I(mc / q.c_mi) * I(q.c_s_img) + I(mc % q.c_mi) * I(q.c_s_m);
#pragma unroll
        for (int j = 0; j < GEMM_TN; ++j) {
            const int k = k_tile + tx * GEMM_TN + j;
            if (k < q.KG) c[row + I(k) * I(q.c_s_k)] = store_acc<C>(acc[i][j]);
        }
    }
}
