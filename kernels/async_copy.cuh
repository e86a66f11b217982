// async_copy.cuh - global -> shared memory copies that complete later: the one API every pipelined
// kernel uses, so that the GPU (cp.async), older GPUs and the emulator share the kernel's source.
//
//   async_copy<BYTES>(smem_dst, gmem_src, src_bytes)   BYTES = 4, 8 or 16; both addresses BYTES-aligned.
//       Copies src_bytes (0 <= src_bytes <= BYTES) from gmem_src and zero-fills the rest of the BYTES
//       at smem_dst: src_bytes = 0 writes zeros (padding, tile edges) and reads nothing, but gmem_src
//       must still be a valid address (pass the tensor's base pointer).
//   async_commit()     closes the group of copies this thread issued since its last commit.
//   async_wait<N>()    waits until at most N of this thread's committed groups are still in flight.
//                      Only then may the thread read the data of the older groups; other threads see it
//                      after a __syncthreads() that follows the wait.
//
// sm_80 and later: PTX cp.async (16-byte copies bypass L1: .cg), commit_group, wait_group.
// Before sm_80: the copy is an ordinary load and store, done at the call (commit and wait do nothing);
//   a kernel that wants overlap there double-buffers in registers itself.
// Emulator (g++, no __CUDA_ARCH__): kernels/host/cuda_host.h supplies gpuconv_emu::async_copy,
//   async_commit and async_wait with the same contract. A copy lands (reads its source, writes shared
//   memory) only when the wait that retires its group returns, or when its thread exits, so a missing or
//   too weak wait reads poisoned (NaN) or stale shared memory there; the sanitizer (asynccheck, racecheck)
//   treats the copy as landing at any moment between its issue and that wait, as a GPU may.
#pragma once

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800

template <int BYTES>
__device__ __forceinline__ void async_copy(void* smem_dst, const void* gmem_src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
    if constexpr (BYTES == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(gmem_src), "n"(BYTES),
                     "r"(src_bytes));
    }
}

__device__ __forceinline__ void async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

#elif defined(__CUDA_ARCH__)

template <int BYTES>
__device__ __forceinline__ void async_copy(void* smem_dst, const void* gmem_src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "async_copy copies 4, 8 or 16 bytes");
    unsigned char* d = static_cast<unsigned char*>(smem_dst);
    const unsigned char* s = static_cast<const unsigned char*>(gmem_src);
    if (src_bytes == BYTES) {
        if constexpr (BYTES == 16) *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(s);
        else if constexpr (BYTES == 8) *reinterpret_cast<uint2*>(d) = *reinterpret_cast<const uint2*>(s);
        else *reinterpret_cast<unsigned*>(d) = *reinterpret_cast<const unsigned*>(s);
    } else {
        for (int i = 0; i < BYTES; ++i) d[i] = i < src_bytes ? s[i] : 0;
    }
}

__device__ __forceinline__ void async_commit() {}

template <int N>
__device__ __forceinline__ void async_wait() {}

#else

template <int BYTES>
inline void async_copy(void* smem_dst, const void* gmem_src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    gpuconv_emu::async_copy(smem_dst, gmem_src, BYTES, src_bytes);
}

inline void async_commit() { gpuconv_emu::async_commit(); }

template <int N>
inline void async_wait() { gpuconv_emu::async_wait(N); }

#endif
