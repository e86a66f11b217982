// cuda_host.h - run CUDA C kernels on the CPU (gpuconv's "emulator" backend).
//
// Force-included (g++ -include) before a kernel file. CUDA's own cuda_fp16.h / cuda_bf16.h compile
// under g++ and define __global__, __device__, __shared__ (as nothing) and dim3; this header adds what
// they leave to the CUDA compiler:
//   * threadIdx / blockIdx / blockDim / gridDim;
//   * __syncthreads() with real barrier semantics: the threads of a block are fibers (ucontext) on one
//     OS thread, every fiber runs until it reaches the barrier or exits, then the next phase starts.
//     Reaching a barrier with some threads exited, or ending a block with threads still waiting, is
//     reported as an error (it is undefined behaviour on a GPU);
//   * __shared__ as block-static storage: blocks run one after another, so one static copy serves all;
//     it is filled with 0xFF bytes (NaN) before every block, so a read before a write shows;
//   * GPUCONV_DYNAMIC_SHARED(T, name) for dynamic shared memory;
//   * atomics (plain read-modify-write: fibers never interleave inside one), __ldg, min/max, fmaf;
//   * warp primitives (__syncwarp, __shfl_sync/_up/_down/_xor, __ballot_sync, __any_sync, __all_sync) as
//     warp-level barriers: a lane waits until every lane of its mask arrives, and a mask that names a lane
//     which exits, waits at __syncthreads() or arrives with another mask or primitive is reported
//     (synccheck), as is a lane missing from its own mask or a shuffle from a lane outside the mask;
//   * asynchronous global -> shared copies (kernels/async_copy.cuh) with cp.async's semantics: each
//     thread queues its copies, async_commit() closes a group, async_wait<N>() lands every group but the
//     N most recent committed ones, in issue order. A copy's bytes reach shared memory only then (or when
//     the thread exits), so a missing or too weak wait reads poisoned or stale shared memory here too.
//   * nvcuda::wmma (mma_host.h): warp-collective fragment loads, stores and multiply-accumulates.
// A seedable mode runs the fibers of each phase in a shuffled order, so a missing barrier (a race)
// shows up as results that change from run to run.
#pragma once

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

// Static __shared__ variables live in one named section, so that every block can start with it
// poisoned (all bits set: NaN for floating types) as uninitialised shared memory would be on a GPU.
#undef __shared__
#define __shared__ static __attribute__((section("gpuconv_shared")))
extern "C" char __start_gpuconv_shared[] __attribute__((weak));
extern "C" char __stop_gpuconv_shared[] __attribute__((weak));
// g++ ignores the section attribute on the static locals of function templates (they go to .bss): Python
// finds those arrays in the symbol table relative to this section, which the anchor keeps in every library,
// and hands them to gpuconv_emu_outside_shared so that they are poisoned too.
__attribute__((section("gpuconv_shared"), used)) static unsigned char gpuconv_shared_anchor[16];
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __restrict__
#define __restrict__ __restrict
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif

// The runtime's own functions: in the sanitizer's build their accesses (fiber records on the heap, which
// may lie next to a kernel argument) are not the kernel's and must not be checked.
#define GPUCONV_RUNTIME __attribute__((no_sanitize("thread")))

namespace gpuconv_emu {

enum class State { Runnable, AtBarrier, AtWarpSync, Done };

// What a lane brings to a warp primitive, and what it takes back.
struct WarpCall {
    const char* op;         // "__syncwarp", "__shfl_sync", ...: every lane of the mask must bring the same
    unsigned mask;
    unsigned src;           // shuffles: the lane to read; 32: keep its own value, 33: a vote, 34: a bad width,
                            // 35: a collective whose value (its arguments' digest) must match in every lane
    uint64_t value;         // the lane's operand bits (shuffles) or predicate (votes)
    uint64_t result;
};

// An async_copy issued but not landed yet.
struct PendingCopy {
    void* dst;
    const void* src;
    int bytes, src_bytes;
    unsigned group;     // the thread's commit count at the issue: the copy belongs to the next commit
    unsigned interval;  // the block's barrier interval it was issued in (for reports)
};

struct Fiber {
    ucontext_t ctx;
    uint3 tid;
    State state;
    WarpCall warp;
    std::vector<PendingCopy> copies;  // oldest first; those before copies_landed have landed
    size_t copies_landed;
    unsigned commits;                 // async_commit() calls so far
};

// Dynamic shared memory starts 128-byte aligned, as on GPUs (wmma's loads need 32 bytes; malloc gives 16).
template <typename T>
struct SharedAllocator {
    using value_type = T;
    SharedAllocator() = default;
    template <typename U> SharedAllocator(const SharedAllocator<U>&) {}
    T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(128))); }
    void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(128)); }
    template <typename U> bool operator==(const SharedAllocator<U>&) const { return true; }
    template <typename U> bool operator!=(const SharedAllocator<U>&) const { return false; }
};

struct Runtime {
    ucontext_t scheduler;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    std::vector<unsigned char, SharedAllocator<unsigned char>> dynamic_shared;
    std::vector<std::pair<unsigned char*, size_t>> outside_shared;  // function templates' __shared__ arrays
    size_t stack_bytes = 256 * 1024;
    Fiber* current = nullptr;
    unsigned interval = 0;  // barriers the running block has passed
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    std::string error;
};

inline Runtime& rt() {
    static Runtime r;
    return r;
}

}  // namespace gpuconv_emu

// The CUDA built-in variables. One OS thread runs every fiber, so plain globals suffice: the
// scheduler stores the running fiber's index before switching to it.
inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

// ---- sanitizer hooks (empty unless GPUCONV_SANITIZE) ----
#include "sanitizer.h"

#define GPUCONV_DYNAMIC_SHARED(T, name) \
    T* name = reinterpret_cast<T*>(gpuconv_emu::rt().dynamic_shared.data() + gpuconv_san::kRedzone)

#ifdef GPUCONV_SANITIZE
// Out of line, so that its return address names the barrier for synccheck.
__attribute__((noinline, no_sanitize("thread"))) void __syncthreads() {
    gpuconv_san::at_barrier(__builtin_return_address(0));
#else
inline void __syncthreads() {
#endif
    auto& r = gpuconv_emu::rt();
    gpuconv_emu::Fiber* self = r.current;
    self->state = gpuconv_emu::State::AtBarrier;
    swapcontext(&self->ctx, &r.scheduler);
    threadIdx = self->tid;
}

template <typename T>
inline T __ldg(const T* p) { return *p; }
// Atomics: not instrumented (no race between atomics), checked for bounds and alignment instead.
template <typename T>
__attribute__((no_sanitize("thread"))) inline T atomicAdd(T* p, T v) {
    gpuconv_san::atomic_access(p, sizeof(T)); T old = *p; *p = old + v; return old; }
template <typename T>
__attribute__((no_sanitize("thread"))) inline T atomicMax(T* p, T v) {
    gpuconv_san::atomic_access(p, sizeof(T)); T old = *p; *p = std::max(old, v); return old; }
using std::max;
using std::min;

// ---- warp primitives ----
namespace gpuconv_emu {

GPUCONV_RUNTIME inline unsigned lane_id() {
    return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32u;
}

// The calling lane waits at a warp-level barrier; the scheduler releases the warp (warp_release).
GPUCONV_RUNTIME inline uint64_t warp_sync_call(const char* op, unsigned mask, uint64_t value, unsigned src) {
    auto& r = rt();
    Fiber* self = r.current;
    self->warp = WarpCall{op, mask, src, value, value};
    self->state = State::AtWarpSync;
    swapcontext(&self->ctx, &r.scheduler);
    threadIdx = self->tid;
    return self->warp.result;
}

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}

template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

// The lane a shuffle reads, 32 when it keeps its own value (source outside its width segment), 34 for
// an invalid width.
inline unsigned shfl_source(int kind, unsigned lane, int arg, int width) {
    const unsigned w = unsigned(width), base = lane & ~(w - 1);
    if (width <= 0 || w > 32 || (w & (w - 1)) != 0) return 34;  // reported by warp_release
    switch (kind) {
        case 0: return base + (unsigned(arg) & (w - 1));                                      // indexed
        case 1: return lane - base >= unsigned(arg) ? lane - unsigned(arg) : 32u;           // up
        case 2: return lane - base + unsigned(arg) < w ? lane + unsigned(arg) : 32u;        // down
        default: { const unsigned s = lane ^ unsigned(arg); return s - base < w ? s : 32u; } // xor
    }
}

}  // namespace gpuconv_emu

inline void __syncwarp(unsigned mask = 0xffffffffu) { gpuconv_emu::warp_sync_call("__syncwarp", mask, 0, 32); }

#define GPUCONV_SHFL(name, kind)                                                                         \
    template <typename T>                                                                                \
    inline T name(unsigned mask, T var, int arg, int width = 32) {                                       \
        const unsigned src = gpuconv_emu::shfl_source(kind, gpuconv_emu::lane_id(), arg, width);         \
        return gpuconv_emu::from_bits<T>(                                                                \
            gpuconv_emu::warp_sync_call(#name, mask, gpuconv_emu::to_bits(var), src));                   \
    }
GPUCONV_SHFL(__shfl_sync, 0)
GPUCONV_SHFL(__shfl_up_sync, 1)
GPUCONV_SHFL(__shfl_down_sync, 2)
GPUCONV_SHFL(__shfl_xor_sync, 3)
#undef GPUCONV_SHFL

namespace gpuconv_emu {
// A warp-collective operation (all 32 lanes, as wmma's *_sync calls): a warp barrier at which every lane
// must bring the same `digest` of its arguments.
GPUCONV_RUNTIME inline void warp_collective(const char* op, uint64_t digest) {
    warp_sync_call(op, 0xffffffffu, digest, 35);
}
}  // namespace gpuconv_emu

inline unsigned __ballot_sync(unsigned mask, int pred) {
    return unsigned(gpuconv_emu::warp_sync_call("__ballot_sync", mask, pred != 0, 33));
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// ---- asynchronous global -> shared copies (kernels/async_copy.cuh) ----
// A copy lands (its source is read and its destination written) when the wait that retires its group
// returns, or when its thread exits (the hardware finishes a copy nobody waited for). The GPU may land
// it at any moment between the issue and that wait; landing it as late as possible makes a missing or
// too weak async_wait read shared memory that is still poisoned (NaN) or holds the previous stage.
// Reading the source late too is equivalent for a correct kernel: one that overwrites the source
// before the wait gets undefined data on a GPU as well.
namespace gpuconv_emu {

// Ends the calling kernel thread with `what` as the launch's error (the GPU would fault).
[[noreturn]] GPUCONV_RUNTIME inline void fail_thread(const char* what) {
    auto& r = rt();
    Fiber* self = r.current;
    char msg[320];
    std::snprintf(msg, sizeof msg, "%s by block (%u,%u,%u) thread (%u,%u,%u)", what, blockIdx.x, blockIdx.y,
                  blockIdx.z, self->tid.x, self->tid.y, self->tid.z);
    if (r.error.empty()) r.error = msg;
    self->state = State::Done;
    swapcontext(&self->ctx, &r.scheduler);
    std::abort();  // not reached: the scheduler never resumes a failed thread
}

template <int B>
struct alignas(B) CopyChunk { unsigned char b[B]; };

// Not GPUCONV_RUNTIME: these are the kernel's own accesses, which the sanitizer checks (a whole chunk is
// one access of B bytes, as on the GPU).
template <int B>
inline void async_copy_chunk(void* dst, const void* src, int src_bytes) {
    CopyChunk<B> c;
    if (src_bytes == B) {
        c = *static_cast<const CopyChunk<B>*>(src);
    } else {
        for (int i = 0; i < B; ++i) c.b[i] = i < src_bytes ? static_cast<const unsigned char*>(src)[i] : 0;
    }
    *static_cast<CopyChunk<B>*>(dst) = c;
}

GPUCONV_RUNTIME inline void async_copy(void* dst, const void* src, int bytes, int src_bytes) {
    char msg[200];
    if (src_bytes < 0 || src_bytes > bytes) {
        std::snprintf(msg, sizeof msg, "memcheck: async_copy<%d> with src_bytes=%d, outside [0, %d]", bytes,
                      src_bytes, bytes);
        fail_thread(msg);
    }
    gpuconv_san::async_issue(dst, src, unsigned(bytes), unsigned(src_bytes));
    // what the sanitizer does not track (or checks with memcheck off) must still fail as on the GPU
    if (reinterpret_cast<uintptr_t>(dst) % unsigned(bytes) || reinterpret_cast<uintptr_t>(src) % unsigned(bytes)) {
        std::snprintf(msg, sizeof msg, "memcheck: async_copy<%d> from global %p to shared %p: not %d-byte aligned",
                      bytes, src, dst, bytes);
        fail_thread(msg);
    }
    auto& r = rt();
    Fiber* self = r.current;
    const bool checking = gpuconv_san::pause();  // a reallocation is the runtime's, not the kernel's, access
    self->copies.push_back(PendingCopy{dst, src, bytes, src_bytes, self->commits, r.interval});
    gpuconv_san::resume(checking);
}

// Lands the calling thread's oldest pending copies: all of them when keep < 0, else all but those of
// the `keep` most recent committed groups (and the uncommitted ones).
GPUCONV_RUNTIME inline void async_land(int keep) {
    Fiber* self = rt().current;
    auto& q = self->copies;
    // The queue is the runtime's, but std::vector's code is instrumented (a template instantiated in the
    // kernel's file): unchecked, or its reads of the Fiber (the last one ends where the heap's next block,
    // maybe an argument's red zone, begins) would be reported as the kernel's. The copies are checked.
    const bool checking = gpuconv_san::pause();
    while (self->copies_landed < q.size()) {
        const PendingCopy c = q[self->copies_landed];
        if (keep >= 0 && uint64_t(c.group) + unsigned(keep) >= self->commits) break;
        ++self->copies_landed;
        gpuconv_san::resume(checking);
        gpuconv_san::async_landing(c.dst, unsigned(c.bytes));
        if (c.bytes == 16) async_copy_chunk<16>(c.dst, c.src, c.src_bytes);
        else if (c.bytes == 8) async_copy_chunk<8>(c.dst, c.src, c.src_bytes);
        else async_copy_chunk<4>(c.dst, c.src, c.src_bytes);
        gpuconv_san::async_landed();
        gpuconv_san::pause();
    }
    if (self->copies_landed == q.size()) {
        q.clear();
        self->copies_landed = 0;
    }
    gpuconv_san::resume(checking);
}

GPUCONV_RUNTIME inline void async_commit() { ++rt().current->commits; }

GPUCONV_RUNTIME inline void async_wait(int n) { async_land(n); }

}  // namespace gpuconv_emu

#include "mma_host.h"

namespace gpuconv_emu {

GPUCONV_RUNTIME inline void fiber_entry(unsigned lo, unsigned hi) {
    Fiber* f = reinterpret_cast<Fiber*>((uintptr_t(hi) << 32) | uintptr_t(lo));
    auto& r = rt();
    threadIdx = f->tid;
    r.body(r.body_arg);
    async_land(-1);  // copies nobody waited for still land (the GPU finishes them)
    f->state = State::Done;
    // returning resumes uc_link (the scheduler)
}

inline uint64_t splitmix64(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Every fiber has stopped (barrier, warp primitive or exit). Releases each warp whose lanes wait at a warp
// primitive with a consistent mask; `released` tells whether any did. False (and r.error) when a mask
// cannot be satisfied: the GPU would hang or compute garbage there.
GPUCONV_RUNTIME inline bool warp_release(unsigned nthreads, bool& released) {
    auto& r = rt();
    for (unsigned w0 = 0; w0 < nthreads; w0 += 32) {
        const unsigned lanes = std::min(32u, nthreads - w0);
        const unsigned existing = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
        unsigned handled = 0;  // lanes of groups already released in this pass
        for (unsigned lead = 0; lead < lanes; ++lead) {
            if (r.fibers[w0 + lead].state != State::AtWarpSync || ((handled >> lead) & 1u)) continue;
            const WarpCall c0 = r.fibers[w0 + lead].warp;  // the group: the lanes of its mask
            const char* problem = nullptr;
            unsigned bad = lead;
            if (!((c0.mask >> lead) & 1u)) problem = "calls it with a mask that does not include itself";
            for (unsigned l = 0; l < lanes && problem == nullptr; ++l) {
                const Fiber& f = r.fibers[w0 + l];
                if (!((c0.mask >> l) & 1u)) continue;
                bad = l;
                if (f.state == State::AtWarpSync) {
                    if (f.warp.mask != c0.mask || std::strcmp(f.warp.op, c0.op) != 0)
                        problem = "arrives with another mask or at another warp primitive";
                    else if (f.warp.src < 32 && !((c0.mask >> f.warp.src) & 1u))
                        problem = "reads a lane outside the mask";
                    else if (f.warp.src == 34)
                        problem = "passes a width that is not a power of two from 1 to 32";
                    else if (f.warp.src == 35 && f.warp.value != c0.value)
                        problem = "passes other arguments (pointer, ldm or layout) than the lane that leads";
                } else {
                    problem = f.state == State::Done ? "is named in the mask but has exited"
                                                     : "is named in the mask but waits at __syncthreads()";
                }
            }
            if (problem == nullptr && (c0.mask & ~existing)) {
                problem = "is named in the mask but does not exist (partial warp)";
                bad = unsigned(__builtin_ctz(c0.mask & ~existing));
            }
            if (problem != nullptr) {
                const unsigned t = w0 + bad;
                char msg[320];
                std::snprintf(msg, sizeof msg, "synccheck: %s(mask 0x%08x) in warp %u of block (%u,%u,%u): lane %u "
                              "(thread (%u,%u,%u)) %s", c0.op, c0.mask, w0 / 32, blockIdx.x, blockIdx.y, blockIdx.z,
                              bad, t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y),
                              problem);
                r.error = msg;
                return false;
            }
            uint64_t ballot = 0;
            for (unsigned l = 0; l < lanes; ++l)
                if ((c0.mask >> l) & 1u) ballot |= uint64_t(r.fibers[w0 + l].warp.value != 0) << l;
            for (unsigned l = 0; l < lanes; ++l) {
                Fiber& f = r.fibers[w0 + l];
                if (!((c0.mask >> l) & 1u)) continue;
                if (f.warp.src < 32) f.warp.result = r.fibers[w0 + f.warp.src].warp.value;
                else if (f.warp.src == 33) f.warp.result = ballot;
            }
            for (unsigned l = 0; l < lanes; ++l)
                if ((c0.mask >> l) & 1u) r.fibers[w0 + l].state = State::Runnable;
            if (c0.mask == existing) gpuconv_san::warp_synced(w0 / 32);  // orders the lanes' shared accesses
            handled |= c0.mask;
            released = true;
        }
    }
    return true;
}

// Runs one block: all its threads, phase by phase between barriers. Returns false on a barrier error.
GPUCONV_RUNTIME inline bool run_block(uint64_t& rng, bool shuffle) {
    auto& r = rt();
    const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
    if (__start_gpuconv_shared != nullptr)
        std::memset(__start_gpuconv_shared, 0xFF, size_t(__stop_gpuconv_shared - __start_gpuconv_shared));
    std::fill(r.dynamic_shared.begin(), r.dynamic_shared.end(), 0xFF);
    for (const auto& a : r.outside_shared) std::memset(a.first, 0xFF, a.second);
    std::vector<unsigned> order(nthreads);
    for (unsigned t = 0; t < nthreads; ++t) {
        Fiber& f = r.fibers[t];
        f.tid = make_uint3(t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y));
        f.state = State::Runnable;
        f.copies.clear();  // a failed launch may have left some
        f.copies_landed = 0;
        f.commits = 0;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = r.stacks.data() + size_t(t) * r.stack_bytes;
        f.ctx.uc_stack.ss_size = r.stack_bytes;
        f.ctx.uc_link = &r.scheduler;
        uintptr_t p = reinterpret_cast<uintptr_t>(&f);
        makecontext(&f.ctx, reinterpret_cast<void (*)()>(fiber_entry), 2, unsigned(p & 0xffffffffu),
                    unsigned(p >> 32));
        order[t] = t;
    }
    r.interval = 0;
    gpuconv_san::block_begin();
    char msg_buffer[320];
    for (;;) {
        if (shuffle)
            for (unsigned i = nthreads; i > 1; --i) std::swap(order[i - 1], order[splitmix64(rng) % i]);
        for (unsigned t : order) {
            Fiber& f = r.fibers[t];
            if (f.state != State::Runnable) continue;  // waiting at a warp primitive, or done
            r.current = &f;
            threadIdx = f.tid;
            gpuconv_san::enter(t);
            swapcontext(&r.scheduler, &f.ctx);
            gpuconv_san::leave();
            if (!r.error.empty()) return false;  // a sanitizer report ended the launch
        }
        bool released = false;
        if (!warp_release(nthreads, released)) return false;
        if (released) continue;  // the released lanes run on before any barrier is judged
        unsigned waiting = 0, done = 0;
        for (unsigned t = 0; t < nthreads; ++t) {
            waiting += r.fibers[t].state == State::AtBarrier;
            done += r.fibers[t].state == State::Done;
        }
        if (done == nthreads) {
            gpuconv_san::block_end();
            return true;
        }
        if (waiting != nthreads) {
            char msg[256];
            std::snprintf(msg, sizeof msg,
                          "synccheck: __syncthreads() reached by %u of %u threads of block (%u,%u,%u); %u had exited",
                          waiting, nthreads, blockIdx.x, blockIdx.y, blockIdx.z, done);
            r.error = msg;
            return false;
        }
        if (!gpuconv_san::barrier_release(msg_buffer, sizeof msg_buffer)) {
            r.error = msg_buffer;
            return false;
        }
        ++r.interval;
        for (unsigned t = 0; t < nthreads; ++t) r.fibers[t].state = State::Runnable;
    }
}

// Runs the blocks of a grid in order (x fastest) from *next_block on, and returns when the grid is done
// or max_seconds have passed, with *next_block advanced: the caller calls again until it reaches the
// block count, and between calls the interpreter can handle signals (Ctrl-C). *rng carries the shuffle
// state from one call to the next. `body(arg)` is one thread's call of the kernel with its arguments.
GPUCONV_RUNTIME inline int launch(const unsigned* grid, const unsigned* block, size_t shared_bytes, unsigned long long* rng,
                  int shuffle, unsigned long long* next_block, double max_seconds, void (*body)(void*), void* arg,
                  char* err, size_t err_len) {
    auto& r = rt();
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    const size_t nthreads = size_t(block[0]) * block[1] * block[2];
    if (nthreads == 0 || nthreads > 1024) {
        std::snprintf(err, err_len, "block of %zu threads: CUDA allows 1 to 1024", nthreads);
        return 1;
    }
    if (r.fibers.size() < nthreads) {
        r.fibers.resize(nthreads);
        r.stacks.resize(nthreads * r.stack_bytes);
    }
    r.dynamic_shared.resize(shared_bytes + 2 * gpuconv_san::kRedzone);
    gpuconv_san::shared_layout(r.dynamic_shared.data() + gpuconv_san::kRedzone, shared_bytes);
    r.body = body;
    r.body_arg = arg;
    r.error.clear();
    uint64_t state = *rng;
    const uint64_t plane = uint64_t(grid[0]) * grid[1];
    const uint64_t blocks = plane * grid[2];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(max_seconds);
    int rc = 0;
    try {
        for (uint64_t b = *next_block; b < blocks;) {
            blockIdx = make_uint3(unsigned(b % grid[0]), unsigned(b / grid[0] % grid[1]), unsigned(b / plane));
            if (!run_block(state, shuffle != 0)) {
                std::snprintf(err, err_len, "%s", r.error.c_str());
                rc = 2;
                break;
            }
            *next_block = ++b;
            if (std::chrono::steady_clock::now() >= deadline) break;
        }
    } catch (const std::exception& e) {
        std::snprintf(err, err_len, "exception in kernel: %s", e.what());
        rc = 3;
    }
    *rng = state;
    return rc;
}

}  // namespace gpuconv_emu

extern "C" GPUCONV_RUNTIME uintptr_t gpuconv_emu_shared_section() { return uintptr_t(__start_gpuconv_shared); }

extern "C" GPUCONV_RUNTIME void gpuconv_emu_outside_shared(unsigned char** arrays, const size_t* sizes, int n) {
    auto& r = gpuconv_emu::rt();
    r.outside_shared.clear();
    for (int i = 0; i < n; ++i) r.outside_shared.emplace_back(arrays[i], sizes[i]);
}
