// mma_host.h - nvcuda::wmma (CUDA's warp matrix functions) for the emulator; included by cuda_host.h.
//
// CUDA's <mma.h> declares these only for the CUDA compiler (under g++ it is empty), so a kernel that
// includes it and uses the names below compiles for both. Only what gpuconv's kernels use is here:
//   m16n16k16: matrix_a / matrix_b of __half or __nv_bfloat16 (row or col major), float accumulator;
//   m16n16k8:  matrix_a / matrix_b of precision::tf32 (float storage), float accumulator;
//   load_matrix_sync, store_matrix_sync, fill_fragment, mma_sync, __float_to_tf32.
// Any other combination fails to compile, as it does against <mma.h>.
//
// Fragments. Each lane holds num_elements values, as many as CUDA's mma.h gives it (half A/B: 16, so
// every element is held twice across the warp; bf16 A/B: 8; tf32 A/B: 4; accumulators: 8). CUDA leaves
// the mapping of tile elements to lanes unspecified; here slot s = i*32 + lane (element i of a lane)
// holds element (37*s) mod (rows*cols) of the tile in row-major order, a deliberately scattered map,
// so a kernel that indexes fragment elements as if it knew the layout computes garbage here too.
//
// Collectives. load/store/mma_sync are warp-wide: all 32 lanes must call them with the same pointer,
// ldm and layout (a warp barrier with synccheck, cuda_host.h's warp_collective); the pointer must be
// 32-byte aligned and ldm a multiple of 16 bytes, as the CUDA programming guide requires. A lane's
// load and store touch only its own slots, so the sanitizer sees each lane's accesses at element width.
// mma_sync reads every lane's A and B fragments: each lane publishes them, meets the warp, computes its
// own accumulator slots, and meets the warp again before anyone may overwrite a fragment.
//
// Arithmetic (the model; the hardware's internal order is not specified by NVIDIA):
//   * fp16 and bf16 inputs are exact in float, and so are their products (at most 22 significant bits);
//   * tf32: __float_to_tf32 is PTX cvt.rna.tf32.f32: round to nearest with ties away from zero on the
//     magnitude, to 10 mantissa bits (the low 13 bits zero); Inf stays Inf, values that round past
//     FLT_MAX become Inf, NaN becomes the canonical NaN 0x7fffffff, subnormals round the same way.
//     Values the kernel did not convert: CUDA only says they must be converted; the model drops their
//     low 13 bits (truncation), as the tensor core is reported to ignore them;
//   * d[r][c] = c[r][c] + sum over k in increasing order, one float32 FMA per k (k roundings, products
//     exact): what the tests' tolerances are derived from (u_f32 * k per mma, not bits).
#pragma once

namespace nvcuda {
namespace wmma {

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
namespace precision {
struct tf32;
}
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

template <typename T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };

// Rows and columns of a fragment's tile.
template <typename Use, int M, int N, int K> struct tile;
template <int M, int N, int K> struct tile<matrix_a, M, N, K> { enum { rows = M, cols = K }; };
template <int M, int N, int K> struct tile<matrix_b, M, N, K> { enum { rows = K, cols = N }; };
template <int M, int N, int K> struct tile<accumulator, M, N, K> { enum { rows = M, cols = N }; };

template <typename L> struct layout_of;
template <> struct layout_of<row_major> { static constexpr layout_t value = mem_row_major; };
template <> struct layout_of<col_major> { static constexpr layout_t value = mem_col_major; };

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, int E, typename Layout>
struct fragment_base {
    using use = Use;
    using layout = Layout;
    using element_type = T;
    using storage_element_type = typename detail::storage<T>::type;
    enum { m = M, n = N, k = K, num_elements = E, num_storage_elements = E,
           rows = detail::tile<Use, M, N, K>::rows, cols = detail::tile<Use, M, N, K>::cols };
    storage_element_type x[E];
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void> class fragment;

#define GPUCONV_WMMA_OPERAND(USE, M, N, K, T, E)                                                          \
    template <> class fragment<USE, M, N, K, T, row_major> : public fragment_base<USE, M, N, K, T, E, row_major> {}; \
    template <> class fragment<USE, M, N, K, T, col_major> : public fragment_base<USE, M, N, K, T, E, col_major> {};
GPUCONV_WMMA_OPERAND(matrix_a, 16, 16, 16, __half, 16)
GPUCONV_WMMA_OPERAND(matrix_b, 16, 16, 16, __half, 16)
GPUCONV_WMMA_OPERAND(matrix_a, 16, 16, 16, __nv_bfloat16, 8)
GPUCONV_WMMA_OPERAND(matrix_b, 16, 16, 16, __nv_bfloat16, 8)
GPUCONV_WMMA_OPERAND(matrix_a, 16, 16, 8, precision::tf32, 4)
GPUCONV_WMMA_OPERAND(matrix_b, 16, 16, 8, precision::tf32, 4)
#undef GPUCONV_WMMA_OPERAND
template <> class fragment<accumulator, 16, 16, 16, float> : public fragment_base<accumulator, 16, 16, 16, float, 8, void> {};
template <> class fragment<accumulator, 16, 16, 8, float> : public fragment_base<accumulator, 16, 16, 8, float, 8, void> {};

// cvt.rna.tf32.f32 on the bits: adding half an ulp of the 10-bit mantissa to the magnitude and
// clearing the low 13 bits rounds to nearest, ties away from zero, and carries into the exponent
// (up to Inf) by itself.
inline float __float_to_tf32(float in) {
    uint32_t b;
    std::memcpy(&b, &in, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) b = 0x7fffffffu;  // NaN
    else if ((b & 0x7fffffffu) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;
    float out;
    std::memcpy(&out, &b, 4);
    return out;
}

namespace detail {

// The value a tensor core multiplies: exact for fp16/bf16; tf32 operands without their low 13 bits.
inline float operand(__half v) { return __half2float(v); }
inline float operand(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float operand_tf32(float v) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    if ((b & 0x7fffffffu) <= 0x7f800000u) b &= 0xffffe000u;  // NaN stays NaN
    float out;
    std::memcpy(&out, &b, 4);
    return out;
}

// Tile element (row-major flat index) held by slot s of a tile of `size` elements; its inverse gives
// the first slot holding an element (173 inverts 37 modulo 256 and modulo 128).
constexpr int slot_element(int s, int size) { return (37 * s) % size; }
constexpr int element_slot(int e, int size) { return (173 * e) % size; }

inline unsigned lane() { return gpuconv_emu::lane_id(); }

inline uint64_t digest(const void* p, unsigned ldm, int layout) {
    return uint64_t(reinterpret_cast<uintptr_t>(p)) * 0x9E3779B97F4A7C15ull ^ (uint64_t(ldm) << 2) ^ uint64_t(layout);
}

// False (and the launch's error) for an address or stride the hardware refuses.
GPUCONV_RUNTIME inline bool check_memory(const char* op, const void* p, unsigned ldm, size_t elem_bytes) {
    char msg[200];
    if (reinterpret_cast<uintptr_t>(p) % 32u) {
        std::snprintf(msg, sizeof msg, "%s: pointer %p is not 32-byte (256-bit) aligned", op, p);
    } else if ((ldm * elem_bytes) % 16u) {
        std::snprintf(msg, sizeof msg, "%s: ldm=%u is not a multiple of 16 bytes (%zu-byte elements)", op, ldm,
                      elem_bytes);
    } else {
        return true;
    }
    if (gpuconv_emu::rt().error.empty()) gpuconv_emu::rt().error = msg;
    return false;
}

inline size_t offset(int r, int c, unsigned ldm, layout_t layout) {
    return layout == mem_row_major ? size_t(r) * ldm + size_t(c) : size_t(c) * ldm + size_t(r);
}

// Not GPUCONV_RUNTIME: these element accesses are the kernel's own (the sanitizer checks them).
template <typename Frag, typename Mem>
inline void load(Frag& f, const Mem* p, unsigned ldm, layout_t layout) {
    gpuconv_emu::warp_collective("wmma::load_matrix_sync", digest(p, ldm, layout));
    if (!check_memory("wmma::load_matrix_sync", p, ldm, sizeof(Mem))) return;
    constexpr int size = Frag::rows * Frag::cols;
    for (int i = 0; i < Frag::num_elements; ++i) {
        const int e = slot_element(i * 32 + int(lane()), size);
        f.x[i] = p[offset(e / Frag::cols, e % Frag::cols, ldm, layout)];
    }
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& a,
                             const typename detail::storage<T>::type* p, unsigned ldm) {
    detail::load(a, p, ldm, detail::layout_of<L>::value);
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& c, const float* p, unsigned ldm, layout_t layout) {
    detail::load(c, p, ldm, layout);
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& c, unsigned ldm,
                              layout_t layout) {
    using Frag = fragment<accumulator, M, N, K, float>;
    gpuconv_emu::warp_collective("wmma::store_matrix_sync", detail::digest(p, ldm, layout));
    if (!detail::check_memory("wmma::store_matrix_sync", p, ldm, sizeof(float))) return;
    constexpr int size = Frag::rows * Frag::cols;
    for (int i = 0; i < Frag::num_elements; ++i) {
        const int e = detail::slot_element(i * 32 + int(detail::lane()), size);
        p[detail::offset(e / Frag::cols, e % Frag::cols, ldm, layout)] = c.x[i];
    }
}

// Per lane, like CUDA's: called by every lane with one value, it fills the whole tile.
template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const typename detail::storage<T>::type& v) {
    for (int i = 0; i < fragment<Use, M, N, K, T, L>::num_elements; ++i) f.x[i] = v;
}

}  // namespace wmma
}  // namespace nvcuda

namespace gpuconv_emu {

// Every lane's A and B fragments during one mma_sync (by flat thread index). In gpuconv_emu, so that
// the launcher does not take this runtime table for a kernel's __shared__ array (shared_symbols.py).
struct MmaOperands {
    const void* a;
    const void* b;
};

inline MmaOperands* mma_operands() {
    static MmaOperands table[1024];
    return table;
}

}  // namespace gpuconv_emu

namespace nvcuda {
namespace wmma {
namespace detail {

using gpuconv_emu::MmaOperands;
using gpuconv_emu::mma_operands;

// Element e of a tile from the fragments of the warp whose lane 0 is `w0`. Half A/B tiles are held
// twice; the copies must agree, or the kernel changed fragment elements lane by lane.
template <typename Frag>
GPUCONV_RUNTIME inline typename Frag::storage_element_type tile_element(unsigned w0, bool is_a, int e, bool& ok) {
    constexpr int size = Frag::rows * Frag::cols;
    auto held = [&](int s) {
        const MmaOperands& o = mma_operands()[w0 + unsigned(s % 32)];
        return static_cast<const Frag*>(is_a ? o.a : o.b)->x[s / 32];
    };
    const int s = element_slot(e, size);
    const auto v = held(s);
    for (int copy = s + size; copy < 32 * Frag::num_elements; copy += size) {
        const auto w = held(copy);
        if (std::memcmp(&v, &w, sizeof v) != 0) ok = false;
    }
    return v;
}

template <typename T> GPUCONV_RUNTIME inline float multiplicand(T v) { return operand(v); }
template <> GPUCONV_RUNTIME inline float multiplicand<float>(float v) { return operand_tf32(v); }

}  // namespace detail

template <int M, int N, int K, typename T, typename LA, typename LB>
GPUCONV_RUNTIME inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                                     const fragment<matrix_b, M, N, K, T, LB>& b,
                                     const fragment<accumulator, M, N, K, float>& c) {
    using A = fragment<matrix_a, M, N, K, T, LA>;
    using B = fragment<matrix_b, M, N, K, T, LB>;
    using D = fragment<accumulator, M, N, K, float>;
    const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned w0 = t - t % 32u;
    detail::mma_operands()[t] = detail::MmaOperands{&a, &b};
    gpuconv_emu::warp_collective("wmma::mma_sync", 0);
    bool ok = true;
    float out[D::num_elements];
    for (int i = 0; i < D::num_elements; ++i) {
        const int e = detail::slot_element(i * 32 + int(t % 32u), M * N);
        const int r = e / N, col = e % N;
        float acc = c.x[i];
        for (int kk = 0; kk < K; ++kk)
            acc = std::fmaf(detail::multiplicand(detail::tile_element<A>(w0, true, r * K + kk, ok)),
                            detail::multiplicand(detail::tile_element<B>(w0, false, kk * N + col, ok)), acc);
        out[i] = acc;
    }
    if (!ok && gpuconv_emu::rt().error.empty())
        gpuconv_emu::rt().error = "wmma::mma_sync: the copies of a fragment element differ between lanes: the "
                                  "kernel changed fragment elements lane by lane (their layout is unspecified)";
    gpuconv_emu::warp_collective("wmma::mma_sync (operands read)", 0);
    for (int i = 0; i < D::num_elements; ++i) d.x[i] = out[i];
}

}  // namespace wmma
}  // namespace nvcuda
