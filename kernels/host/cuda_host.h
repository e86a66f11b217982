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
//   * atomics (plain read-modify-write: fibers never interleave inside one), __ldg, min/max, fmaf.
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
#include <string>
#include <vector>

// Static __shared__ variables live in one named section, so that every block can start with it
// poisoned (all bits set: NaN for floating types) as uninitialised shared memory would be on a GPU.
#undef __shared__
#define __shared__ static __attribute__((section("gpuconv_shared")))
extern "C" char __start_gpuconv_shared[] __attribute__((weak));
extern "C" char __stop_gpuconv_shared[] __attribute__((weak));
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __restrict__
#define __restrict__ __restrict
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif

namespace gpuconv_emu {

enum class State { Runnable, AtBarrier, Done };

struct Fiber {
    ucontext_t ctx;
    uint3 tid;
    State state;
};

struct Runtime {
    ucontext_t scheduler;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    std::vector<unsigned char> dynamic_shared;
    size_t stack_bytes = 256 * 1024;
    Fiber* current = nullptr;
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

namespace gpuconv_emu {

inline void fiber_entry(unsigned lo, unsigned hi) {
    Fiber* f = reinterpret_cast<Fiber*>((uintptr_t(hi) << 32) | uintptr_t(lo));
    auto& r = rt();
    threadIdx = f->tid;
    r.body(r.body_arg);
    f->state = State::Done;
    // returning resumes uc_link (the scheduler)
}

inline uint64_t splitmix64(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Runs one block: all its threads, phase by phase between barriers. Returns false on a barrier error.
inline bool run_block(uint64_t& rng, bool shuffle) {
    auto& r = rt();
    const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
    if (__start_gpuconv_shared != nullptr)
        std::memset(__start_gpuconv_shared, 0xFF, size_t(__stop_gpuconv_shared - __start_gpuconv_shared));
    std::fill(r.dynamic_shared.begin(), r.dynamic_shared.end(), 0xFF);
    std::vector<unsigned> order(nthreads);
    for (unsigned t = 0; t < nthreads; ++t) {
        Fiber& f = r.fibers[t];
        f.tid = make_uint3(t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y));
        f.state = State::Runnable;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = r.stacks.data() + size_t(t) * r.stack_bytes;
        f.ctx.uc_stack.ss_size = r.stack_bytes;
        f.ctx.uc_link = &r.scheduler;
        uintptr_t p = reinterpret_cast<uintptr_t>(&f);
        makecontext(&f.ctx, reinterpret_cast<void (*)()>(fiber_entry), 2, unsigned(p & 0xffffffffu),
                    unsigned(p >> 32));
        order[t] = t;
    }
    gpuconv_san::block_begin();
    char msg_buffer[320];
    for (;;) {
        if (shuffle)
            for (unsigned i = nthreads; i > 1; --i) std::swap(order[i - 1], order[splitmix64(rng) % i]);
        for (unsigned t : order) {
            Fiber& f = r.fibers[t];
            r.current = &f;
            threadIdx = f.tid;
            gpuconv_san::enter(t);
            swapcontext(&r.scheduler, &f.ctx);
            gpuconv_san::leave();
            if (!r.error.empty()) return false;  // a sanitizer report ended the launch
        }
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
                          "__syncthreads() reached by %u of %u threads of block (%u,%u,%u); %u had exited",
                          waiting, nthreads, blockIdx.x, blockIdx.y, blockIdx.z, done);
            r.error = msg;
            return false;
        }
        if (!gpuconv_san::barrier_release(msg_buffer, sizeof msg_buffer)) {
            r.error = msg_buffer;
            return false;
        }
        for (unsigned t = 0; t < nthreads; ++t) r.fibers[t].state = State::Runnable;
    }
}

// Runs the blocks of a grid in order (x fastest) from *next_block on, and returns when the grid is done
// or max_seconds have passed, with *next_block advanced: the caller calls again until it reaches the
// block count, and between calls the interpreter can handle signals (Ctrl-C). *rng carries the shuffle
// state from one call to the next. `body(arg)` is one thread's call of the kernel with its arguments.
inline int launch(const unsigned* grid, const unsigned* block, size_t shared_bytes, unsigned long long* rng,
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
