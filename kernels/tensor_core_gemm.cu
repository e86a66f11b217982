// tensor_core_gemm.cu - the implicit-GEMM convolution on tensor cores: float16 and bfloat16 inputs, and
// float32 inputs rounded to TF32 when the caller allows it (precision="tf32"); float32 accumulation,
// rounded once at the store.
//
// MMA interface: nvcuda::wmma (CUDA's warp matrix functions), not mma.sync through inline PTX. WMMA's
//   fragment layout is unspecified, so this kernel never indexes a fragment element by position (only
//   element-wise __float_to_tf32 over a whole fragment, which the CUDA guide allows), and the emulator
//   (kernels/host/mma_host.h) is free to choose its own layout: it scatters the elements on purpose, so
//   a kernel that depended on a layout would fail there. mma.sync would feed the tensor cores with fewer
//   shared loads (ldmatrix into registers laid out as the PTX ISA documents), but every shape and type
//   would then need the ISA's fragment tables reproduced exactly in the emulator and checked against the
//   document; WMMA gives one portable source for sm_70 .. sm_90 (HMMA on each) and an emulator whose
//   correctness does not hang on those tables. A later mma.sync kernel can reuse everything else here.
//
// Computes, for each group g: C[m, k] = sum_{r < R} A[m, r] * B[r, k], m < M = N*OH*OW, k < KG, with A
// the input's receptive fields and B the HWIO filters as igemm_tiles.cuh defines them (the same loaders
// as implicit_gemm.cu, and the same pipeline: igemm_pipeline.cuh). Padding, tile edges and R past its end
// read as zeros; any stride, dilation, groups.
//
// Launch:  block = TC_THREADS = 32 * (TC_BM / TC_WM) * (TC_BN / TC_WN) threads (1-D)
//          grid  = (ceil(M / TC_BM), ceil(KG / TC_BN), G)
//          dynamic shared memory = stages * (TC_BM * LDA + BK * LDB) elements of the input type (the
//          stages hold raw inputs: cp.async copies them unconverted), at least the epilogue's
//          warps * 16 * TC_LDE floats; stages = TC_STAGES on sm_80+ and in the emulator, 2 on sm_75
//          (register double buffer; TC_ASYNC=0 takes it anywhere, so the emulator runs it too).
//          BK = TC_BK_BYTES / sizeof(T) (32 halves or 16 floats), LDA = BK + 16 bytes,
//          LDB = TC_BN + 16 bytes: rows 16-byte multiples, as wmma's ldm must be.
// Layouts: x and y NHWC or NCHW (ConvProblem's strides), w HWIO. vec_a / vec_b: the host checked
//   alignment, so the loaders copy 4 elements at a time (igemm_tiles.cuh). Three modules: TC_VEC=2
//   (the default) has the tap-tile loader (IgemmATap) and both loaders copy 16-byte chunks (8 halves or
//   4 floats; the host checks CG % BK == 0, K % CH == 0 and x and w 16-byte aligned on top of both
//   vector modes: the common case); TC_VEC=1 the vector path of IgemmA, for launches where both vector
//   modes hold; TC_VEC=0 takes the modes per launch (NCHW, channels not multiples of 4, unaligned
//   arrays). Hot loop on sm_80 (fp16, 32 HMMA): 129 instructions with TC_VEC=2, 243 with TC_VEC=1.
// Tiling: the block computes a TC_BM x TC_BN tile of C; warp w a TC_WM x TC_WN tile of it, as
//   (TC_WM/16) x (TC_WN/16) accumulator fragments of 16x16 (64x32: 8 fragments, 64 floats per lane).
//   Per reduction tile, each warp loads (TC_WM/16) A and (TC_WN/16) B fragments per MMA step of KS
//   (16 for half types, 8 for TF32) and issues (TC_WM/16)*(TC_WN/16) mma_sync.
// Arithmetic: fp16/bf16 products are exact in float32; TF32 inputs are rounded once per fragment with
//   __float_to_tf32 (cvt.rna) after the load; float32 accumulation in the fragments, rounded once to T
//   in the epilogue. The epilogue stores each accumulator fragment to a per-warp 16 x TC_LDE float
//   buffer in shared memory (its element layout is unknown), and the lanes write it to y with bounds:
//   4 columns per vector store where y allows (vector_stores, igemm_epilogue.cuh: NHWC-like, KG % 4 == 0,
//   aligned), element by element otherwise.
// Architectures: fp16 on sm_70+ (CUDA 13 compiles sm_75+), bf16 and TF32 on sm_80+: their entry points
//   exist only there (and in the emulator, which compiles every entry point).
#include "common.cuh"
#include "async_copy.cuh"
#include "igemm_tiles.cuh"
#include "igemm_pipeline.cuh"
#include "igemm_epilogue.cuh"
#include <mma.h>

#ifndef TC_BM
#define TC_BM 128
#endif
#ifndef TC_BN
#define TC_BN 128
#endif
#ifndef TC_WM
#define TC_WM 64
#endif
#ifndef TC_WN
#define TC_WN 32
#endif
#ifndef TC_BK_BYTES
#define TC_BK_BYTES 64
#endif
#ifndef TC_STAGES
#define TC_STAGES 3
#endif
#ifndef TC_MIN_BLOCKS
#define TC_MIN_BLOCKS 1  // blocks per SM __launch_bounds__ asks for (2 spills 44-104 bytes on sm_80)
#endif
#ifndef TC_VEC
// 2: tap tiles (IgemmATap) and vector B; 1: both loaders in vector mode; 0: modes from vec_a/vec_b
#define TC_VEC 2
#endif
#ifndef TC_LDE
#define TC_LDE 20  // epilogue buffer row stride in floats: a 16-byte multiple, rows 80 bytes apart
#endif
#define TC_THREADS (32 * (TC_BM / TC_WM) * (TC_BN / TC_WN))

static_assert(TC_BM % TC_WM == 0 && TC_BN % TC_WN == 0, "a block tile splits into whole warp tiles");
static_assert(TC_WM % 16 == 0 && TC_WN % 16 == 0, "a warp tile splits into 16x16 fragments");
static_assert(TC_THREADS <= 1024 && TC_THREADS % TC_BM == 0, "the A loader gives each row THREADS/BM threads");
static_assert(TC_LDE % 4 == 0 && TC_LDE >= 16, "the epilogue buffer's rows are 16-byte multiples of >= 16 floats");

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define TC_AMPERE  // bf16 and TF32 fragments, cp.async
#endif

namespace tc {

using namespace nvcuda;

// The pipeline: cp.async stages on sm_80+ (and in the emulator), sm_75's register double buffer otherwise;
// TC_ASYNC=0 forces the latter (the emulator runs sm_75's path so).
#ifndef TC_ASYNC
#ifdef TC_AMPERE
#define TC_ASYNC 1
#else
#define TC_ASYNC 0
#endif
#endif
constexpr bool kAsync = TC_ASYNC != 0;

// The fragment element type and MMA depth for an input type.
template <typename T> struct Mma;
template <> struct Mma<__half> { using type = __half; static constexpr int KS = 16; };
#ifdef TC_AMPERE
template <> struct Mma<__nv_bfloat16> { using type = __nv_bfloat16; static constexpr int KS = 16; };
template <> struct Mma<float> { using type = wmma::precision::tf32; static constexpr int KS = 8; };
#endif

template <typename T> struct Layout {
    static constexpr int BK = TC_BK_BYTES / int(sizeof(T));
    static constexpr int PAD = 16 / int(sizeof(T));
    static constexpr int CH = 16 / int(sizeof(T));  // elements per 16-byte chunk (TC_VEC=2's loaders)
    static constexpr int LDA = BK + PAD;
    static constexpr int LDB = TC_BN + PAD;
    static constexpr int STAGE_A = TC_BM * LDA;
    static constexpr int STAGE = STAGE_A + BK * LDB;
    static_assert(BK % Mma<T>::KS == 0, "a reduction tile is whole MMA steps");
    static_assert((STAGE_A * int(sizeof(T))) % 32 == 0 && (STAGE * int(sizeof(T))) % 32 == 0,
                  "every stage starts 32-byte aligned, as wmma's loads need");
};

// TF32 inputs are rounded once, as the tensor core expects (an element-wise operation on the fragment);
// half types are exact already.
template <typename Frag>
__device__ __forceinline__ void round_inputs(Frag& f) {
#ifdef TC_AMPERE
    if constexpr (sizeof(typename Frag::storage_element_type) == 4) {
#pragma unroll
        for (int i = 0; i < Frag::num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
    }
#endif
}

constexpr int FM = TC_WM / 16, FN = TC_WN / 16;

template <typename T>
using Accum = wmma::fragment<wmma::accumulator, 16, 16, Mma<T>::KS, float>;

// One staged reduction tile into the warp's accumulators.
template <typename T>
__device__ __forceinline__ void multiply(const T* sA, const T* sB, int wm0, int wn0, Accum<T> (&acc)[FM][FN]) {
    using L = Layout<T>;
    constexpr int KS = Mma<T>::KS;
    using F = typename Mma<T>::type;
#pragma unroll
    for (int kk = 0; kk < L::BK; kk += KS) {
        wmma::fragment<wmma::matrix_a, 16, 16, KS, F, wmma::row_major> a[FM];
        wmma::fragment<wmma::matrix_b, 16, 16, KS, F, wmma::row_major> b[FN];
#pragma unroll
        for (int i = 0; i < FM; ++i) {
            wmma::load_matrix_sync(a[i], sA + (wm0 + 16 * i) * L::LDA + kk, L::LDA);
            round_inputs(a[i]);
        }
#pragma unroll
        for (int j = 0; j < FN; ++j) {
            wmma::load_matrix_sync(b[j], sB + kk * L::LDB + wn0 + 16 * j, L::LDB);
            round_inputs(b[j]);
        }
#pragma unroll
        for (int i = 0; i < FM; ++i)
#pragma unroll
            for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
}

template <typename T, typename I>
__device__ __forceinline__ void conv(const ConvProblem p, const T* __restrict__ x, const T* __restrict__ w,
                                     T* __restrict__ y, int vec_a, int vec_b) {
    using L = Layout<T>;
    // the pipeline's stages, then (once they are free) the epilogue's per-warp buffers
    GPUCONV_DYNAMIC_SHARED(T, smem);
    const int g = blockIdx.z, m0 = blockIdx.x * TC_BM, k0 = blockIdx.y * TC_BN;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm0 = warp % (TC_BM / TC_WM) * TC_WM, wn0 = warp / (TC_BM / TC_WM) * TC_WN;
#if TC_VEC
    // constant modes: the loaders' scalar code compiles away (as implicit_gemm.cu's IGEMM_VEC modules)
    (void)vec_a, (void)vec_b;
#if TC_VEC == 2
    IgemmATap<T, T, I, TC_BM, L::BK, TC_THREADS, L::LDA, L::CH> a(p, x, g, m0, 0, 1);
    IgemmB<T, T, I, L::BK, TC_BN, TC_THREADS, L::LDB, L::CH> b(p, w, g, k0, 0, 1);
#else
    IgemmA<T, T, I, TC_BM, L::BK, TC_THREADS, L::LDA, true> a(p, x, g, m0, 0, 1);
    IgemmB<T, T, I, L::BK, TC_BN, TC_THREADS, L::LDB> b(p, w, g, k0, 0, 1);
#endif
#else
    IgemmA<T, T, I, TC_BM, L::BK, TC_THREADS, L::LDA> a(p, x, g, m0, 0, vec_a);
    IgemmB<T, T, I, L::BK, TC_BN, TC_THREADS, L::LDB> b(p, w, g, k0, 0, vec_b);
#endif
    Accum<T> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    const int tiles = ceil_div(p.KH * p.KW * p.CG, L::BK);
    igemm_pipeline<kAsync ? TC_STAGES : 2, kAsync>(
        a, b, smem, L::STAGE, L::STAGE_A, tiles,
        [&](const T* sA, const T* sB) { multiply<T>(sA, sB, wm0, wn0, acc); });

    float* buf = reinterpret_cast<float*>(smem) + warp * 16 * TC_LDE;
    const int M = p.N * p.OH * p.OW;
    if (vector_stores(y, p.ysK, p.ysW, p.ysH, p.ysN, p.KG)) {
        // Each lane writes 4 columns of two rows of every fragment, one vector store each: rows r and
        // r + 8 with r = lane/8 + 4*(lane/4 % 2), columns 4*(lane % 4). A warp's store covers 8 whole
        // rows of 16 columns; the quarter warp of one 16-byte shared load reads rows 4 apart, whose
        // TC_LDE = 20 float rows start 16 banks apart: no bank conflict.
        const int r = lane / 8 + 4 * (lane / 4 % 2), c = 4 * (lane % 4);
#pragma unroll
        for (int i = 0; i < FM; ++i) {
            const int m = m0 + wm0 + 16 * i + r;
            const bool in0 = m < M, in1 = m + 8 < M;
            const I row0 = in0 ? output_row<I>(p, m, g) : I(0);
            const I row1 = in1 ? output_row<I>(p, m + 8, g) : I(0);
#pragma unroll
            for (int j = 0; j < FN; ++j) {
                wmma::store_matrix_sync(buf, acc[i][j], TC_LDE, wmma::mem_row_major);
                __syncwarp();
                const int k = k0 + wn0 + 16 * j + c;
                if (k < p.KG) {
                    using V = IgemmVec4<float>;
                    const V v0 = *reinterpret_cast<const V*>(buf + r * TC_LDE + c);
                    const V v1 = *reinterpret_cast<const V*>(buf + (r + 8) * TC_LDE + c);
                    if (in0) store4(y + row0 + I(k), v0.v);
                    if (in1) store4(y + row1 + I(k), v1.v);
                }
                __syncwarp();  // the buffer is read before the next fragment overwrites it
            }
        }
        return;
    }
    const bool k_fast = p.ysK == 1;  // NHWC: lanes along k write consecutive addresses; NCHW: along m
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) {
            wmma::store_matrix_sync(buf, acc[i][j], TC_LDE, wmma::mem_row_major);
            __syncwarp();
#pragma unroll
            for (int q = 0; q < 8; ++q) {
                const int e = q * 32 + lane;
                const int row = k_fast ? e / 16 : e % 16, col = k_fast ? e % 16 : e / 16;
                const int m = m0 + wm0 + 16 * i + row, k = k0 + wn0 + 16 * j + col;
                if (m < M && k < p.KG)
                    y[output_row<I>(p, m, g) + I(k) * I(p.ysK)] = store_acc<T>(buf[row * TC_LDE + col]);
            }
            __syncwarp();  // the buffer is read before the next fragment overwrites it
        }
}

}  // namespace tc

extern "C" __global__ void __launch_bounds__(TC_THREADS, TC_MIN_BLOCKS)
conv_tc_f16_i32(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int vec_a, int vec_b) { tc::conv<__half, int>(p, x, w, y, vec_a, vec_b); }
extern "C" __global__ void __launch_bounds__(TC_THREADS, TC_MIN_BLOCKS)
conv_tc_f16_i64(const ConvProblem p, const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int vec_a, int vec_b) { tc::conv<__half, long long>(p, x, w, y, vec_a, vec_b); }
#ifdef TC_AMPERE
extern "C" __global__ void __launch_bounds__(TC_THREADS, TC_MIN_BLOCKS)
conv_tc_bf16_i32(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, int vec_a, int vec_b) { tc::conv<__nv_bfloat16, int>(p, x, w, y, vec_a, vec_b); }
extern "C" __global__ void __launch_bounds__(TC_THREADS, TC_MIN_BLOCKS)
conv_tc_bf16_i64(const ConvProblem p, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ y, int vec_a, int vec_b) { tc::conv<__nv_bfloat16, long long>(p, x, w, y, vec_a, vec_b); }
extern "C" __global__ void __launch_bounds__(TC_THREADS, TC_MIN_BLOCKS)
conv_tc_f32_i32(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int vec_a, int vec_b) { tc::conv<float, int>(p, x, w, y, vec_a, vec_b); }
extern "C" __global__ void __launch_bounds__(TC_THREADS, TC_MIN_BLOCKS)
conv_tc_f32_i64(const ConvProblem p, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int vec_a, int vec_b) { tc::conv<float, long long>(p, x, w, y, vec_a, vec_b); }
#endif
