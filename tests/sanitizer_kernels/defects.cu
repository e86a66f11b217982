// defects.cu -- deliberately broken kernels, one per defect class the emulator's sanitizer must report
// (tests/test_sanitizer.py), each followed by its corrected twin ("_ok"), which must report nothing.
// Launch every kernel with one block of 32 threads; x holds 64 floats, y 32 (64 for stride32).

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
