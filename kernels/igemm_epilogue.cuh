// igemm_epilogue.cuh - the output side of the implicit-GEMM convolutions (implicit_gemm.cu's CUDA-core
// register tiles and tensor_core_gemm.cu's fragments): where row m of C lives in y, and the 4-column
// vector stores both kernels use where y's layout allows them.
//
//   output_row<I>(p, m, g)      offset in y of output pixel m's channel g*KG (ConvProblem's y strides)
//   vector_stores(dst, sK, sW, sH, sN, KG)
//                               whether 4-column groups k..k+3 (k % 4 == 0) of every row go to dst as one
//                               vector store each: see below
//   store4(dst, v)              v[0..3], rounded once to T, as one store of 4*sizeof(T) bytes
#pragma once

#include "common.cuh"
#include "igemm_tiles.cuh"

template <typename I>
__device__ __forceinline__ I output_row(const ConvProblem& p, int m, int g) {
    const int ow = m % p.OW, rest = m / p.OW;
    return I(rest / p.OH) * I(p.ysN) + I(rest % p.OH) * I(p.ysH) + I(ow) * I(p.ysW) + I(g) * I(p.KG) * I(p.ysK);
}

// A 4-column group goes to memory as one vector store (16 bytes for float, 8 for half types) when the
// columns are contiguous (sK = 1), every row starts on a multiple of 4 elements and groups never straddle
// KG or a group's end (KG % 4 == 0), and the array is aligned to 4 elements. A warp's stores then cover
// whole 32-byte sectors of its rows, where element-wise stores (lanes 4 elements apart in
// implicit_gemm.cu) used a quarter of each sector per instruction.
template <typename T>
__device__ __forceinline__ bool vector_stores(const T* dst, int sK, int sW, int sH, int sN, int KG) {
    return sK == 1 && (sW % 4 | sH % 4 | sN % 4 | KG % 4) == 0 &&
           reinterpret_cast<unsigned long long>(dst) % (4 * sizeof(T)) == 0;
}

template <typename T, typename A>
__device__ __forceinline__ void store4(T* dst, const A* v) {
    IgemmVec4<T> q;
#pragma unroll
    for (int e = 0; e < 4; ++e) q.v[e] = store_acc<T>(v[e]);
    *reinterpret_cast<IgemmVec4<T>*>(dst) = q;
}
