// implicit_gemm.cu - convolution as a matrix product read straight from the input (no im2col workspace),
// warp-tiled, with a multi-stage shared-memory pipeline.
//
// Computes, for each group g:   C[m, k] = sum_{r < R} A[m, r] * B[r, k]     m < M = N*OH*OW, k < KG
// with A the input's receptive fields and B the HWIO filters as igemm_tiles.cuh defines them; row m
// of C is output pixel (n, oh, ow) and column k its channel g*KG + k, in any layout (ConvProblem's
// y strides). Padding, tile edges and R past its end read as zeros; any stride, dilation, groups.
//
// Launch:  block = IGEMM_THREADS = 32 * (IGEMM_BM / IGEMM_WM) * (IGEMM_BN / IGEMM_WN) threads (1-D)
//          grid  = (ceil(M / IGEMM_BM), ceil(KG / IGEMM_BN), G * splits)
//          dynamic shared memory = stages * (IGEMM_BM * LDA + IGEMM_BK * LDB) accumulator elements,
//          stages = IGEMM_STAGES where the pipeline copies asynchronously (float and double on sm_80+
//          and the emulator), 2 otherwise (register double buffer), LDA = IGEMM_BK + IGEMM_PAD,
//          LDB = IGEMM_BN. No static shared memory.
// Layouts: x and y NHWC or NCHW (any element strides in ConvProblem), w HWIO; part (split-K only) is
//   [splits][G][M][KG] in the accumulator type.
// Arguments: vec_a / vec_b (the host checked alignment: 4-element copies, see igemm_tiles.cuh). Three
//   modules: IGEMM_VEC=2 (the default) has only the tap-tile loader (IgemmATap: CG % BK == 0 on top of
//   both vector modes, the common case), IGEMM_VEC=1 only the vector path of IgemmA, for launches where
//   both hold; IGEMM_VEC=0 chooses per launch (odd channel counts, NCHW, unaligned arrays);
//   split_tiles: reduction tiles (IGEMM_BK each) per blockIdx.z slice. When it covers R (one slice)
//   the block writes y; otherwise blockIdx.z = g*splits + s and the block writes its partial sums to
//   part, and splitk_reduce.cu adds the slices in a fixed order (deterministic, no atomics).
//
// Tiling: the block computes an IGEMM_BM x IGEMM_BN tile of C; each warp an IGEMM_WM x IGEMM_WN tile,
//   its lanes arranged LANES_M x LANES_N = (WM/TM) x (WN/TN); each thread an IGEMM_TM x IGEMM_TN
//   register tile: rows wm0 + i*LANES_M + lane_m (i < TM), columns wn0 + j*4*LANES_N + 4*lane_n + e
//   (j < TN/4, e < 4). The inner loop takes the reduction 4 at a time: per row one 16-byte shared
//   load of A[m][kk..kk+3] (A is stored k-contiguous, as the input is in NHWC, so 16-byte cp.async
//   copies land without transposition), per reduction step TN/4 16-byte loads of B's row, then
//   TM*TN FMAs: (TM + TN) 16-byte loads per 4*TM*TN FMAs (16 per 256 with 8x8).
// Bank conflicts in the inner loop: none. A 16-byte load is served per quarter warp (8 lanes), whose
//   lanes have LANES_N >= 4 consecutive lane_n: for A at most 2 rows (adjacent m, LDA/4 odd so in
//   different bank groups), the rest broadcast; for B up to 8 lanes read 8 consecutive 16-byte
//   chunks of one row. The loaders' 16-byte stores are conflict-free too (igemm_tiles.cuh); the
//   scalar (4-byte) fallback stores rows LDA apart: up to 4-way conflicts, outside the inner loop.
// Pipeline (igemm_pipeline.cuh, shared with tensor_core_gemm.cu; float/double, sm_80+ and the
//   emulator): IGEMM_STAGES - 1 tiles in flight through
//   async_copy / async_commit / async_wait (async_copy.cuh); one __syncthreads() per tile, after
//   which the stage computed in the previous step is refilled. Half types (widened to float when
//   staged) and float on sm_75 (no cp.async) use a register double buffer instead: the next tile is
//   loaded into registers before the current one is multiplied and stored to the other stage after
//   it. Doubles on sm_75 keep the stage pipeline, its copies synchronous (async_copy.cuh).
// Accumulation in float (double for double), rounded once at the store. Epilogue: each thread's 4-column
//   groups go out as one vector store each (16 bytes for float) where y (or part) has contiguous
//   channels, rows on 4-element boundaries, KG % 4 == 0 and 4-element alignment (vector_stores in
//   igemm_epilogue.cuh, shared with tensor_core_gemm.cu), else element by element.
#include "common.cuh"
#include "async_copy.cuh"
#include "igemm_tiles.cuh"
#include "igemm_pipeline.cuh"
#include "igemm_epilogue.cuh"

#ifndef IGEMM_BM
#define IGEMM_BM 128
#endif
#ifndef IGEMM_BN
#define IGEMM_BN 128
#endif
#ifndef IGEMM_BK
#define IGEMM_BK 16
#endif
#ifndef IGEMM_WM
#define IGEMM_WM 32
#endif
#ifndef IGEMM_WN
#define IGEMM_WN 64
#endif
#ifndef IGEMM_TM
#define IGEMM_TM 8
#endif
#ifndef IGEMM_TN
#define IGEMM_TN 8
#endif
#ifndef IGEMM_STAGES
#define IGEMM_STAGES 4
#endif
#ifndef IGEMM_VEC
// 2: tap tiles (IgemmATap) and vector B; 1: A and B both in vector mode; 0: modes from vec_a/vec_b.
// The host launches a module only where its conditions hold.
#define IGEMM_VEC 2
#endif
#ifndef IGEMM_PAD
#define IGEMM_PAD 4  // LDA = BK + 4: LDA/4 odd, so adjacent rows fall in different bank groups
#endif
#ifndef IGEMM_MIN_BLOCKS
// blocks per SM that __launch_bounds__ asks ptxas for. 1, stated: with no minimum, ptxas aims 128-thread
// half-type entries at 128 registers and spills a few bytes to get there (NVRTC 13.5)
#define IGEMM_MIN_BLOCKS 1
#endif
#define IGEMM_THREADS (32 * (IGEMM_BM / IGEMM_WM) * (IGEMM_BN / IGEMM_WN))
#define IGEMM_LDA (IGEMM_BK + IGEMM_PAD)
#define IGEMM_LDB IGEMM_BN

static_assert(IGEMM_BM % IGEMM_WM == 0 && IGEMM_BN % IGEMM_WN == 0, "a block tile splits into whole warp tiles");
static_assert((IGEMM_WM / IGEMM_TM) * (IGEMM_WN / IGEMM_TN) == 32, "a warp tile holds 32 thread tiles");
static_assert(IGEMM_WM % IGEMM_TM == 0 && IGEMM_WN % IGEMM_TN == 0, "a warp tile splits into whole thread tiles");
static_assert(IGEMM_TN % 4 == 0 && IGEMM_BK % 4 == 0, "16-byte shared loads take 4 elements");
static_assert(IGEMM_WN / IGEMM_TN >= 4, "LANES_N >= 4: a quarter warp reads at most 2 rows of A");
static_assert((IGEMM_LDA / 4) % 2 == 1, "LDA/4 must be odd (conflict-free A rows)");
static_assert(IGEMM_STAGES >= 2 && IGEMM_STAGES <= 4, "2 to 4 pipeline stages");
static_assert(IGEMM_THREADS <= 1024, "at most 1024 threads");

namespace igemm {

// Copies land asynchronously (cp.async) on sm_80+ and in the emulator; sm_75 loads through registers.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
constexpr bool kAsyncArch = false;
#else
constexpr bool kAsyncArch = true;
#endif

constexpr int LANES_M = IGEMM_WM / IGEMM_TM;
constexpr int LANES_N = IGEMM_WN / IGEMM_TN;
constexpr int STAGE_A = IGEMM_BM * IGEMM_LDA;
constexpr int STAGE = STAGE_A + IGEMM_BK * IGEMM_LDB;

template <typename A>
struct alignas(16) Frag4 { A v[4]; };

// One staged tile into the register tile: acc[i][4*j + e] += A[row i][k] * B[k][column (j, e)].
template <typename A>
__device__ __forceinline__ void multiply(const A* __restrict__ sA, const A* __restrict__ sB, int wm0, int wn0,
                                         A (&acc)[IGEMM_TM][IGEMM_TN]) {
    const int lane = threadIdx.x % 32;
    const int lane_m = lane / LANES_N, lane_n = lane % LANES_N;
    const A* a_row = sA + (wm0 + lane_m) * IGEMM_LDA;
    const A* b_col = sB + wn0 + 4 * lane_n;
    if constexpr (sizeof(A) == 8) {
        // doubles: A one reduction step at a time (8-byte loads), which keeps 8x8 tiles out of local
        // memory on sm_75 (four steps of A would take 64 more registers)
#pragma unroll
        for (int k = 0; k < IGEMM_BK; ++k) {
            A a[IGEMM_TM];
            Frag4<A> b[IGEMM_TN / 4];
#pragma unroll
            for (int i = 0; i < IGEMM_TM; ++i) a[i] = a_row[i * LANES_M * IGEMM_LDA + k];
#pragma unroll
            for (int j = 0; j < IGEMM_TN / 4; ++j)
                b[j] = *reinterpret_cast<const Frag4<A>*>(b_col + k * IGEMM_LDB + j * 4 * LANES_N);
#pragma unroll
            for (int i = 0; i < IGEMM_TM; ++i)
#pragma unroll
                for (int j = 0; j < IGEMM_TN / 4; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[i][4 * j + e] += a[i] * b[j].v[e];
        }
        return;
    }
#pragma unroll
    for (int kk = 0; kk < IGEMM_BK; kk += 4) {
        Frag4<A> a[IGEMM_TM];
#pragma unroll
        for (int i = 0; i < IGEMM_TM; ++i)
            a[i] = *reinterpret_cast<const Frag4<A>*>(a_row + i * LANES_M * IGEMM_LDA + kk);
#pragma unroll
        for (int k4 = 0; k4 < 4; ++k4) {
            Frag4<A> b[IGEMM_TN / 4];
#pragma unroll
            for (int j = 0; j < IGEMM_TN / 4; ++j)
                b[j] = *reinterpret_cast<const Frag4<A>*>(b_col + (kk + k4) * IGEMM_LDB + j * 4 * LANES_N);
#pragma unroll
            for (int i = 0; i < IGEMM_TM; ++i)
#pragma unroll
                for (int j = 0; j < IGEMM_TN / 4; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[i][4 * j + e] += a[i].v[k4] * b[j].v[e];
        }
    }
}

// The register tile of reduction tiles [kt0, kt1) for block (m0, k0) of group g.
template <typename T, typename I>
__device__ __forceinline__ void mainloop(const ConvProblem& p, const T* __restrict__ x, const T* __restrict__ w,
                                         int g, int m0, int k0, int kt0, int kt1, int vec_a, int vec_b,
                                         typename Acc<T>::type (&acc)[IGEMM_TM][IGEMM_TN]) {
    using A = typename Acc<T>::type;
    GPUCONV_DYNAMIC_SHARED(A, smem);
    const int warp = threadIdx.x / 32;
    const int wm0 = warp % (IGEMM_BM / IGEMM_WM) * IGEMM_WM, wn0 = warp / (IGEMM_BM / IGEMM_WM) * IGEMM_WN;
#if IGEMM_VEC == 2
    IgemmATap<T, A, I, IGEMM_BM, IGEMM_BK, IGEMM_THREADS, IGEMM_LDA> a(p, x, g, m0, kt0 * IGEMM_BK, vec_a);
#else
    IgemmA<T, A, I, IGEMM_BM, IGEMM_BK, IGEMM_THREADS, IGEMM_LDA, IGEMM_VEC == 1> a(p, x, g, m0, kt0 * IGEMM_BK, vec_a);
#endif
    IgemmB<T, A, I, IGEMM_BK, IGEMM_BN, IGEMM_THREADS, IGEMM_LDB> b(p, w, g, k0, kt0 * IGEMM_BK, vec_b);
#pragma unroll
    for (int i = 0; i < IGEMM_TM; ++i)
#pragma unroll
        for (int j = 0; j < IGEMM_TN; ++j) acc[i][j] = A(0);
    // the pipeline (igemm_pipeline.cuh) that tensor_core_gemm.cu shares; half types stage widened values,
    // which cp.async cannot copy, so they take its register double buffer; doubles take the stage pipeline
    // on sm_75 too (synchronous copies there): a register double buffer next to 8x8 double accumulators
    // would spill
    igemm_pipeline<IGEMM_STAGES, (kAsyncArch || sizeof(A) == 8) && sizeof(T) == sizeof(A)>(
        a, b, smem, STAGE, STAGE_A, kt1 - kt0, [&](const A* sA, const A* sB) { multiply(sA, sB, wm0, wn0, acc); });
}

// Calls out(m, k, v) for each 4-column group of the register tile whose row m lies inside C: columns
// k..k+3 (k a multiple of 4), values v[0..3]; the caller skips columns past KG.
template <typename A, typename F>
__device__ __forceinline__ void for_each_output(const ConvProblem& p, int m0, int k0,
                                                const A (&acc)[IGEMM_TM][IGEMM_TN], F out) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm0 = warp % (IGEMM_BM / IGEMM_WM) * IGEMM_WM, wn0 = warp / (IGEMM_BM / IGEMM_WM) * IGEMM_WN;
    const int lane_m = lane / LANES_N, lane_n = lane % LANES_N;
    const int M = p.N * p.OH * p.OW;
#pragma unroll
    for (int i = 0; i < IGEMM_TM; ++i) {
        const int m = m0 + wm0 + i * LANES_M + lane_m;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < IGEMM_TN / 4; ++j) out(m, k0 + wn0 + j * 4 * LANES_N + 4 * lane_n, &acc[i][4 * j]);
    }
}

// Without split-K (split_tiles covers R), y = the register tile, rounded once. With it, slice
// s = blockIdx.z % splits sums reduction tiles [s*split_tiles, (s+1)*split_tiles) into
// part[s][g][m][k] (contiguous, accumulator type), which splitk_reduce.cu sums in slice order.
template <typename T, typename I>
__device__ __forceinline__ void conv(const ConvProblem p, const T* __restrict__ x, const T* __restrict__ w,
                                     T* __restrict__ y, typename Acc<T>::type* __restrict__ part, int vec_a,
                                     int vec_b, int split_tiles) {
    using A = typename Acc<T>::type;
    const int R = p.KH * p.KW * p.CG, M = p.N * p.OH * p.OW;
    const int tiles = ceil_div(R, IGEMM_BK);
    const int splits = ceil_div(tiles, split_tiles);
    const int g = blockIdx.z / splits, s = blockIdx.z % splits;
    const int m0 = blockIdx.x * IGEMM_BM, k0 = blockIdx.y * IGEMM_BN;
    const int kt0 = s * split_tiles, kt1 = min(kt0 + split_tiles, tiles);
    A acc[IGEMM_TM][IGEMM_TN];
#if IGEMM_VEC
    // constant flags: the loaders' scalar code compiles away, leaving the vector path alone in the loop
    (void)vec_a, (void)vec_b;
    mainloop<T, I>(p, x, w, g, m0, k0, kt0, kt1, 1, 1, acc);
#else
    mainloop<T, I>(p, x, w, g, m0, k0, kt0, kt1, vec_a, vec_b, acc);
#endif
    if (splits == 1) {
        if (vector_stores(y, p.ysK, p.ysW, p.ysH, p.ysN, p.KG)) {
            for_each_output(p, m0, k0, acc, [&](int m, int k, const A* v) {
                if (k < p.KG) store4(y + output_row<I>(p, m, g) + I(k), v);
            });
        } else {
            for_each_output(p, m0, k0, acc, [&](int m, int k, const A* v) {
                const I row = output_row<I>(p, m, g);
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (k + e < p.KG) y[row + I(k + e) * I(p.ysK)] = store_acc<T>(v[e]);
            });
        }
    } else {
        A* slice = part + (I(s) * I(p.G) + I(g)) * I(M) * I(p.KG);
        if (vector_stores(part, 1, 4, 4, 4, p.KG)) {     // rows KG apart: the KG % 4 and alignment tests
            for_each_output(p, m0, k0, acc, [&](int m, int k, const A* v) {
                if (k < p.KG) store4(slice + I(m) * I(p.KG) + I(k), v);
            });
        } else {
            for_each_output(p, m0, k0, acc, [&](int m, int k, const A* v) {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (k + e < p.KG) slice[I(m) * I(p.KG) + I(k + e)] = v[e];
            });
        }
    }
}

}  // namespace igemm

extern "C" __global__ void __launch_bounds__(IGEMM_THREADS, IGEMM_MIN_BLOCKS)
conv_igemm_f32_i32(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, float* __restrict__ part, int vec_a, int vec_b, int split_tiles) { igemm::conv<float, int>(p, x, w, y, part, vec_a, vec_b, split_tiles); }
extern "C" __global__ void __launch_bounds__(IGEMM_THREADS, IGEMM_MIN_BLOCKS)
conv_igemm_f32_i64(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, float* __restrict__ part, int vec_a, int vec_b, int split_tiles) { igemm::conv<float, long long>(p, x, w, y, part, vec_a, vec_b, split_tiles); }
extern "C" __global__ void __launch_bounds__(IGEMM_THREADS, IGEMM_MIN_BLOCKS)
conv_igemm_f64_i32(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, double* __restrict__ part, int vec_a, int vec_b, int split_tiles) { igemm::conv<double, int>(p, x, w, y, part, vec_a, vec_b, split_tiles); }
extern "C" __global__ void __launch_bounds__(IGEMM_THREADS, IGEMM_MIN_BLOCKS)
conv_igemm_f64_i64(const ConvProblem p, const double* __restrict__ x, const double* __restrict__ w, double* __restrict__ y, double* __restrict__ part, int vec_a, int vec_b, int split_tiles) { igemm::conv<double, long long>(p, x, w, y, part, vec_a, vec_b, split_tiles); }
extern "C" __global__ void __launch_bounds__(IGEMM_THREADS, IGEMM_MIN_BLOCKS)
conv_igemm_f16_i32(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, float* __restrict__ part, int vec_a, int vec_b, int split_tiles) { igemm::conv<__half, int>(p, x, w, y, part, vec_a, vec_b, split_tiles); }
extern "C" __global__ void __launch_bounds__(IGEMM_THREADS, IGEMM_MIN_BLOCKS)
conv_igemm_f16_i64(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, float* __restrict__ part, int vec_a, int vec_b, int split_tiles) { igemm::conv<__half, long long>(p, x, w, y, part, vec_a, vec_b, split_tiles); }
extern "C" __global__ void __launch_bounds__(IGEMM_THREADS, IGEMM_MIN_BLOCKS)
conv_igemm_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, float* __restrict__ part, int vec_a, int vec_b, int split_tiles) { igemm::conv<__nv_bfloat16, int>(p, x, w, y, part, vec_a, vec_b, split_tiles); }
extern "C" __global__ void __launch_bounds__(IGEMM_THREADS, IGEMM_MIN_BLOCKS)
conv_igemm_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, float* __restrict__ part, int vec_a, int vec_b, int split_tiles) { igemm::conv<__nv_bfloat16, long long>(p, x, w, y, part, vec_a, vec_b, split_tiles); }
