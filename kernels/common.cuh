// common.cuh - what every gpuconv kernel shares: the problem description, element types, index types.
//
// ConvProblem is the one description of a convolution, field for field the same as the Python
// ConvProblem (gpuconv/problem.py) plus the element strides of input x and output y, which encode the
// layout (NHWC or NCHW). Python builds it as a NumPy structured scalar (gpuconv/backends/cuda/params.py);
// a test checks that both sides list the same fields in the same order. It is passed by value.
//
// Element types: float, double, __half, __nv_bfloat16. Every kernel loads elements into its
// accumulator type (double for double, float otherwise) and rounds once when it stores.
// Index types: each kernel is instantiated with a 32-bit and a 64-bit index type; the launcher picks
// the 64-bit one only when an array spans 2^31 elements or more.
#pragma once

#include <cuda_fp16.h>
#include <cuda_bf16.h>

struct ConvProblem {
    long long xsN, xsH, xsW, xsC;  // input element strides: layout of x
    long long ysN, ysH, ysW, ysK;  // output element strides: layout of y
    int N, H, W, C;                // input
    int KH, KW, K, G;              // filters HWIO [KH, KW, C/G, K], G groups
    int OH, OW;                    // output size
    int PT, PB, PL, PR;            // pads
    int SH, SW, DH, DW;            // strides, dilations
    int CG, KG;                    // C/G and K/G
};

// A strided, grouped matrix product C = A x B in the convolution's own letters (see gemm.cu):
// M rows (output pixels), KG columns (output channels of a group), R deep (KH*KW*CG), G groups.
// Row m of A starts at g*a_s_g + (m / a_mi)*a_s_img + (m % a_mi)*a_s_m; element r is r*a_s_r further.
// B is row-major with row stride b_s_r; C row (c_m0 + m) maps like A's with c_mi / c_s_img / c_s_m.
// vec_a / vec_b: the host checked alignment, so rows may be read 4 elements at a time.
struct GemmProblem {
    long long a_s_img, a_s_m, a_s_r, a_s_g;
    long long b_s_r, b_s_g;
    long long c_s_img, c_s_m, c_s_k, c_s_g;
    int M, KG, R, G;
    int a_mi, c_mi, c_m0;
    int vec_a, vec_b;
};

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float load_acc(float v) { return v; }
__device__ __forceinline__ double load_acc(double v) { return v; }
__device__ __forceinline__ float load_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float load_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T store_acc(typename Acc<T>::type v);
template <> __device__ __forceinline__ float store_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double store_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ __half store_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Ceil division for tile counts.
__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

#ifndef GPUCONV_DYNAMIC_SHARED
// On the GPU: dynamic shared memory, 16-byte aligned so any element type (and float4) can live there.
#define GPUCONV_DYNAMIC_SHARED(T, name)                      \
    extern __shared__ __align__(16) unsigned char gpuconv_smem_[]; \
    T* name = reinterpret_cast<T*>(gpuconv_smem_)
#endif
