// igemm_pipeline.cuh - the implicit GEMM's main loop over reduction tiles, for any tile consumer.
//
// igemm_pipeline<STAGES, ASYNC>(a, b, smem, stage, stage_a, tiles, multiply) runs `tiles` reduction
// tiles of the loaders a (IgemmA) and b (IgemmB) of igemm_tiles.cuh through shared memory and calls
// multiply(sA, sB) once per tile, in order, with that tile's A and B stages (sA = smem + s*stage,
// sB = sA + stage_a). The consumer decides what a tile is multiplied with (CUDA-core register tiles in
// implicit_gemm.cu's structure, tensor-core fragments in tensor_core_gemm.cu).
//
// ASYNC (cp.async on sm_80+, and the emulator): STAGES - 1 tiles in flight through async_copy /
//   async_commit / async_wait (async_copy.cuh), STAGES stages; one __syncthreads() per tile, after which
//   the stage multiplied in the previous step is refilled. A group is committed for every step, empty
//   where no tile is left, so async_wait<STAGES - 2> always means "tile t has landed".
// Otherwise (sm_75, or stages the loaders cannot copy raw): a register double buffer in 2 stages: the
//   next tile's global loads are in flight while the current one is multiplied, then stored to the
//   other stage.
// On return every copy has landed and the stages are free (a __syncthreads() ends both paths).
#pragma once

#include "async_copy.cuh"
#include "igemm_tiles.cuh"

template <int STAGES, bool ASYNC, typename LA, typename LB, typename S, typename F>
__device__ __forceinline__ void igemm_pipeline(LA& a, LB& b, S* smem, int stage, int stage_a, int tiles, F&& multiply) {
    static_assert(STAGES >= 2 && STAGES <= 4, "2 to 4 pipeline stages");
    if constexpr (ASYNC) {
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < tiles) {
                a.copy_async(smem + s * stage);
                b.copy_async(smem + s * stage + stage_a);
                a.advance();
                b.advance();
            }
            async_commit();
        }
        for (int t = 0; t < tiles; ++t) {
            async_wait<STAGES - 2>();  // this thread's copies of tile t have landed ...
            __syncthreads();           // ... and everyone's; and tile t-1's stage is free
            const int next = t + STAGES - 1;
            if (next < tiles) {
                S* s = smem + (next % STAGES) * stage;
                a.copy_async(s);
                b.copy_async(s + stage_a);
                a.advance();
                b.advance();
            }
            async_commit();
            const S* s = smem + (t % STAGES) * stage;
            multiply(s, s + stage_a);
        }
        async_wait<0>();
        __syncthreads();
    } else {
        typename LA::Regs ra;
        typename LB::Regs rb;
        if (tiles > 0) {
            a.fetch(ra);
            b.fetch(rb);
            a.stash(ra, smem);
            b.stash(rb, smem + stage_a);
            a.advance();
            b.advance();
        }
        __syncthreads();
        for (int t = 0; t < tiles; ++t) {
            const bool more = t + 1 < tiles;
            if (more) {
                a.fetch(ra);
                b.fetch(rb);
                a.advance();
                b.advance();
            }
            const S* s = smem + (t % 2) * stage;
            multiply(s, s + stage_a);
            if (more) {
                S* other = smem + ((t + 1) % 2) * stage;
                a.stash(ra, other);
                b.stash(rb, other + stage_a);
            }
            __syncthreads();
        }
    }
}
