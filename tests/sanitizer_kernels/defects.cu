// defects.cu -- deliberately broken kernels, one per defect class the emulator's sanitizer must report
// (tests/test_sanitizer.py), each followed by its corrected twin ("_ok"), which must report nothing.
// Launch every kernel with one block of 32 threads; x holds 64 floats, y 32 (64 for stride32); the
// pipelines take the number of floats of x as a third argument.
#include "../../kernels/async_copy.cuh"

// memcheck: out-of-bounds global write (thread 31 writes y[32])
extern "C" __global__ void oob_global_write(const float* x, float* y) { y[threadIdx.x + 1] = x[threadIdx.x]; }
extern "C" __global__ void oob_global_write_ok(const float* x, float* y) { y[threadIdx.x] = x[threadIdx.x]; }

// memcheck: out-of-bounds shared read (thread 31 reads s[32])
extern "C" __global__ void oob_shared_read(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x + 1];
}
extern "C" __global__ void oob_shared_read_ok(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}

// memcheck: misaligned float4 load (offset by one float)
extern "C" __global__ void misaligned_float4(const float* x, float* y) {
    if (threadIdx.x < 8) {
        const float4 v = *reinterpret_cast<const float4*>(x + 4 * threadIdx.x + 1);
        y[threadIdx.x] = v.x + v.y + v.z + v.w;
    }
}
extern "C" __global__ void misaligned_float4_ok(const float* x, float* y) {
    if (threadIdx.x < 8) {
        const float4 v = *reinterpret_cast<const float4*>(x + 4 * threadIdx.x);
        y[threadIdx.x] = v.x + v.y + v.z + v.w;
    }
}

// racecheck: no __syncthreads() between staging and use (read-after-write)
extern "C" __global__ void missing_barrier(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = x[threadIdx.x];
    y[threadIdx.x] = s[31 - threadIdx.x];
}
extern "C" __global__ void missing_barrier_ok(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = s[31 - threadIdx.x];
}

// racecheck: write-after-read on a double buffer: step 1 overwrites the buffer step 0 still reads
extern "C" __global__ void double_buffer_war(const float* x, float* y) {
    __shared__ float s[2][32];
    float acc = 0.0f;
    s[0][threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    for (int step = 0; step < 2; ++step) {
        acc += s[step % 2][31 - threadIdx.x];
        s[step % 2][threadIdx.x] = x[32 + threadIdx.x];  // should fill the other buffer
        __syncthreads();
    }
    y[threadIdx.x] = acc;
}
extern "C" __global__ void double_buffer_war_ok(const float* x, float* y) {
    __shared__ float s[2][32];
    float acc = 0.0f;
    s[0][threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    for (int step = 0; step < 2; ++step) {
        acc += s[step % 2][31 - threadIdx.x];
        s[(step + 1) % 2][threadIdx.x] = x[32 + threadIdx.x];
        __syncthreads();
    }
    y[threadIdx.x] = acc;
}

// racecheck: a warp exchanges values through shared memory, but each half-warp syncs only itself, and
// lanes read the other half's values; the twin's __syncwarp() orders all 32 lanes (no __syncthreads()
// is needed within one warp)
extern "C" __global__ void warp_exchange(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = x[threadIdx.x];
    __syncwarp(threadIdx.x < 16 ? 0x0000ffffu : 0xffff0000u);
    y[threadIdx.x] = s[31 - threadIdx.x];
}
extern "C" __global__ void warp_exchange_ok(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = x[threadIdx.x];
    __syncwarp();
    y[threadIdx.x] = s[31 - threadIdx.x];
}

// initcheck: reads shared memory no thread wrote (only the first half is staged)
extern "C" __global__ void uninit_shared(const float* x, float* y) {
    __shared__ float s[32];
    if (threadIdx.x < 16) s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void uninit_shared_ok(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = threadIdx.x < 16 ? x[threadIdx.x] : 0.0f;
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x];
}

// synccheck: a barrier only half the block reaches, then a second one the other half waits at
extern "C" __global__ void divergent_barrier(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = x[threadIdx.x];
    if (threadIdx.x < 16) __syncthreads();
    __syncthreads();
    y[threadIdx.x] = s[31 - threadIdx.x];
}
extern "C" __global__ void divergent_barrier_ok(const float* x, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    __syncthreads();
    y[threadIdx.x] = s[31 - threadIdx.x];
}

// counters: consecutive floats per warp (4 sectors per request) and a stride of 32 floats (32)
extern "C" __global__ void coalesced(const float* x, float* y) { y[threadIdx.x] = x[threadIdx.x]; }
extern "C" __global__ void stride32(const float* x, float* y) { y[threadIdx.x] = x[32 * threadIdx.x]; }

// counters: column reads of s[32][32] (32-way bank conflict) and of the padded s[32][33] (none)
extern "C" __global__ void bank_conflict(const float* x, float* y) {
    __shared__ float s[32][32];
    for (int r = 0; r < 32; ++r) s[r][threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x][0];
}
extern "C" __global__ void bank_conflict_ok(const float* x, float* y) {
    __shared__ float s[32][33];
    for (int r = 0; r < 32; ++r) s[r][threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x][0];
}

// initcheck in a function template (g++ places a template's __shared__ arrays outside the section)
template <typename T> __device__ void stage_half(const T* x, T* y, bool all) {
    __shared__ T s[32];
    if (all || threadIdx.x < 16) s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = s[31 - threadIdx.x];
}
extern "C" __global__ void uninit_shared_template(const float* x, float* y) { stage_half<float>(x, y, false); }
extern "C" __global__ void uninit_shared_template_ok(const float* x, float* y) { stage_half<float>(x, y, true); }

// synccheck, warp level: a shuffle whose mask names lanes that took the other branch
extern "C" __global__ void shfl_mask_mismatch(const float* x, float* y) {
    float v = x[threadIdx.x];
    if (threadIdx.x < 16) v += __shfl_down_sync(0xffffffffu, v, 8);
    y[threadIdx.x] = v;
}
extern "C" __global__ void shfl_mask_mismatch_ok(const float* x, float* y) {
    float v = x[threadIdx.x];
    if (threadIdx.x < 16) v += __shfl_down_sync(0x0000ffffu, v, 8, 16);  // width 16: no lane past 15 is read
    y[threadIdx.x] = v;
}

// warp primitives' results: a butterfly sum over the warp (xor), a ballot, an indexed shuffle (reversal)
extern "C" __global__ void warp_reduce(const float* x, float* y) {
    float v = x[threadIdx.x];
    for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
    const unsigned odd = __ballot_sync(0xffffffffu, int(x[threadIdx.x]) & 1);
    const float reversed = __shfl_sync(0xffffffffu, x[threadIdx.x], 31 - int(threadIdx.x));
    __syncwarp();
    y[threadIdx.x] = threadIdx.x == 0 ? v : threadIdx.x == 1 ? float(__popc(odd)) : reversed;
}

// ---- asynchronous copies (kernels/async_copy.cuh): a copy may land at any moment until its wait ----

// One async_copy per thread into s, a wait and a barrier where `order` puts them, then a read of the
// thread's own element or (reverse) of thread 31 - t's.
enum WaitOrder { NO_WAIT, WAIT_THEN_BARRIER, BARRIER_THEN_WAIT, WAIT_ONLY };
__device__ void copy_then_read(const float* x, float* y, WaitOrder order, bool reverse) {
    __shared__ float s[32];
    async_copy<4>(&s[threadIdx.x], x + threadIdx.x, 4);
    async_commit();
    if (order == WAIT_THEN_BARRIER || order == WAIT_ONLY) async_wait<0>();
    if (order != WAIT_ONLY) __syncthreads();
    if (order == BARRIER_THEN_WAIT) async_wait<0>();
    y[threadIdx.x] = s[reverse ? 31 - threadIdx.x : threadIdx.x];
}

// asynccheck: a thread reads its own copy's bytes, committed but never waited for
extern "C" __global__ void missing_wait(const float* x, float* y) { copy_then_read(x, y, NO_WAIT, false); }
extern "C" __global__ void missing_wait_ok(const float* x, float* y) { copy_then_read(x, y, WAIT_THEN_BARRIER, false); }

// asynccheck: async_wait<1> leaves the second of two groups in flight, and it is read
__device__ void two_groups(const float* x, float* y, bool wait_for_the_second) {
    __shared__ float s[2][32];
    async_copy<4>(&s[0][threadIdx.x], x + threadIdx.x, 4);
    async_commit();
    async_copy<4>(&s[1][threadIdx.x], x + 32 + threadIdx.x, 4);
    async_commit();
    async_wait<1>();
    const float first = s[0][threadIdx.x];  // the older group has landed: reading it here is right
    if (wait_for_the_second) async_wait<0>();
    y[threadIdx.x] = first + s[1][threadIdx.x];
}
extern "C" __global__ void weak_wait(const float* x, float* y) { two_groups(x, y, false); }
extern "C" __global__ void weak_wait_ok(const float* x, float* y) { two_groups(x, y, true); }

// racecheck: the wait comes after the barrier, so another thread's copy may still be in flight at the read
extern "C" __global__ void wait_after_barrier(const float* x, float* y) {
    copy_then_read(x, y, BARRIER_THEN_WAIT, true);
}
extern "C" __global__ void wait_after_barrier_ok(const float* x, float* y) {
    copy_then_read(x, y, WAIT_THEN_BARRIER, true);
}

// racecheck: waited for, but no __syncthreads() before another thread reads the copied bytes
extern "C" __global__ void wait_without_barrier(const float* x, float* y) { copy_then_read(x, y, WAIT_ONLY, true); }
extern "C" __global__ void wait_without_barrier_ok(const float* x, float* y) {
    copy_then_read(x, y, WAIT_THEN_BARRIER, true);
}

// racecheck: threads 0-15 copy and exit without a wait (the copies land at the exit: the hardware finishes
// them); threads 16-31 read those bytes with no barrier between
extern "C" __global__ void exit_without_wait(const float* x, float* y) {
    __shared__ float s[16];
    if (threadIdx.x < 16) {
        async_copy<4>(&s[threadIdx.x], x + threadIdx.x, 4);
        async_commit();
        return;
    }
    y[threadIdx.x] = s[threadIdx.x - 16];
}
extern "C" __global__ void exit_without_wait_ok(const float* x, float* y) {
    __shared__ float s[16];
    if (threadIdx.x < 16) {
        async_copy<4>(&s[threadIdx.x], x + threadIdx.x, 4);
        async_commit();
        async_wait<0>();
    }
    __syncthreads();
    if (threadIdx.x >= 16) y[threadIdx.x] = s[threadIdx.x - 16];
}

// racecheck: a stage is refilled while other threads still read it (no __syncthreads() before the refill)
__device__ void refill(const float* x, float* y, bool barrier_before_refill) {
    __shared__ float s[32];
    async_copy<4>(&s[threadIdx.x], x + threadIdx.x, 4);
    async_commit();
    async_wait<0>();
    __syncthreads();
    const float first = s[31 - threadIdx.x];
    if (barrier_before_refill) __syncthreads();
    async_copy<4>(&s[threadIdx.x], x + 32 + threadIdx.x, 4);
    async_commit();
    async_wait<0>();
    __syncthreads();
    y[threadIdx.x] = first + s[31 - threadIdx.x];
}
extern "C" __global__ void stage_overwrite(const float* x, float* y) { refill(x, y, false); }
extern "C" __global__ void stage_overwrite_ok(const float* x, float* y) { refill(x, y, true); }

// memcheck: an async_copy past the end of dynamic shared memory (launched with 128 bytes: thread 31 writes
// bytes 128-131)
extern "C" __global__ void async_oob_shared(const float* x, float* y) {
    GPUCONV_DYNAMIC_SHARED(float, s);
    async_copy<4>(&s[threadIdx.x + 1], x + threadIdx.x, 4);
    async_commit();
    async_wait<0>();
    __syncthreads();
    y[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}
extern "C" __global__ void async_oob_shared_ok(const float* x, float* y) {
    GPUCONV_DYNAMIC_SHARED(float, s);
    async_copy<4>(&s[(threadIdx.x + 1) % 32], x + threadIdx.x, 4);
    async_commit();
    async_wait<0>();
    __syncthreads();
    y[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}

// memcheck: a 16-byte async_copy from a source one float off its alignment
extern "C" __global__ void async_misaligned(const float* x, float* y) {
    __shared__ float4 s[8];
    if (threadIdx.x < 8) async_copy<16>(&s[threadIdx.x], x + 4 * threadIdx.x + 1, 16);
    async_commit();
    async_wait<0>();
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x % 8].x;
}
extern "C" __global__ void async_misaligned_ok(const float* x, float* y) {
    __shared__ float4 s[8];
    if (threadIdx.x < 8) async_copy<16>(&s[threadIdx.x], x + 4 * threadIdx.x, 16);
    async_commit();
    async_wait<0>();
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x % 8].x;
}

// Correct multi-stage pipelines (the implicit GEMM's main loop, CUTLASS's order): STAGES - 1 tiles in
// flight, wait for the oldest, barrier, refill the stage the previous iteration read, use the current one.
// A tile is 128 floats, 4 per thread as one 16-byte copy, zero-filled past the n floats of x.
// y[t] = the sum over tiles of the 4 floats thread 31 - t copied. BARRIER = false is the defect: a stage
// is refilled while other threads may still read it, and read before its copies have landed.
template <int STAGES, bool BARRIER = true> __device__ void pipeline(const float* x, float* y, int n) {
    __shared__ float4 s[STAGES][32];
    const int tiles = (n + 127) / 128;
    auto load = [&](int tile) {
        const int first = tile * 128 + 4 * int(threadIdx.x);
        const int bytes = 4 * max(0, min(4, n - first));
        async_copy<16>(&s[tile % STAGES][threadIdx.x], bytes > 0 ? x + first : x, bytes);
    };
    for (int tile = 0; tile < STAGES - 1; ++tile) {
        if (tile < tiles) load(tile);
        async_commit();  // an empty group keeps the count of groups in flight the same every iteration
    }
    float acc = 0.0f;
    for (int tile = 0; tile < tiles; ++tile) {
        async_wait<STAGES - 2>();
        if (BARRIER) __syncthreads();
        if (tile + STAGES - 1 < tiles) load(tile + STAGES - 1);
        async_commit();
        const float4 v = s[tile % STAGES][31 - threadIdx.x];
        acc += v.x + v.y + v.z + v.w;
    }
    y[threadIdx.x] = acc;
}
extern "C" __global__ void pipeline2(const float* x, float* y, int n) { pipeline<2>(x, y, n); }
extern "C" __global__ void pipeline3(const float* x, float* y, int n) { pipeline<3>(x, y, n); }
extern "C" __global__ void pipeline3_no_barrier(const float* x, float* y, int n) { pipeline<3, false>(x, y, n); }
