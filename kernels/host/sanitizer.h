// sanitizer.h -- the emulator's checks (memcheck, racecheck, initcheck, synccheck, asynccheck) and memory
// counters.
//
// Included by cuda_host.h. Without GPUCONV_SANITIZE every hook below is an empty inline function and
// the emulator is unchanged. With it (gpuconv/backends/cuda/sanitizer.py builds that variant), the
// kernel file is compiled with g++ -fsanitize=thread -fno-tree-sra and linked WITHOUT libtsan: the
// compiler then calls __tsan_readN / __tsan_writeN (N = 1, 2, 4, 8, 16) or __tsan_read_range before
// every memory access, and this header defines those functions. -fno-tree-sra keeps a 16-byte struct
// copy (float4, gemm.cu's Vec4<float>) one 16-byte access instead of four scalar ones, so alignment is
// checked at the width the GPU loads it with; accesses the compiler cannot size (__tsan_read_range:
// structs over 16 bytes, e.g. Vec4<double>) are checked for bounds only.
//
// Python describes the launch (gpuconv_san_begin): one region per pointer argument (address, size,
// guard bytes around it, its shadow of written bytes when it is an output/workspace buffer) and the
// static __shared__ arrays by name. Accesses elsewhere (fiber stacks, the runtime's own variables) find
// no region and are ignored. The first defect found ends the launch: its report is the launch error.
//
// Asynchronous copies (kernels/async_copy.cuh): the runtime lands a copy when its wait retires it, but on
// a GPU its write may land at any moment from the issue to that wait. So the copy's bytes are marked
// pending (by the issuing thread) from the issue: memcheck checks the copy's source and destination at the
// issue; any access by another thread to pending bytes, or an issue onto bytes another thread accessed in
// the same barrier interval, is a racecheck hazard; the issuing thread's own access to them is an
// asynccheck report (a missing or too weak async_wait). At landing the mark goes and the copy's read and
// write are checked as ordinary accesses of the issuing thread (initcheck: its bytes are written then; a
// read by another thread in the same barrier interval is an ordinary hazard: no barrier after the wait).
#pragma once

#include <unordered_map>

namespace gpuconv_san {

enum Tool : unsigned { MEMCHECK = 1, RACECHECK = 2, INITCHECK = 4, SYNCCHECK = 8, COUNTERS = 16, ASYNCCHECK = 32 };
// What check_access is told an access is: an async_copy's issue or landing is handled apart.
enum How : int { PLAIN, ATOMIC, ASYNC_ISSUE, ASYNC_LANDING };
// SHARED_OUTSIDE: a __shared__ array in a function template. g++ ignores the section attribute of a
// template's static locals (they go to .bss as COMDAT objects), so Python finds them in the symbol
// table (a static local of a kernel function can only be __shared__) and passes their address.
enum Kind : int { GLOBAL_IN = 0, GLOBAL_OUT = 1, SHARED_STATIC = 2, IGNORED = 3, SHARED_OUTSIDE = 4 };

#ifdef GPUCONV_SANITIZE
// Dynamic shared memory gets this many guard bytes on each side, so an overrun lands somewhere known.
constexpr size_t kRedzone = 256;
#define GPUCONV_SAN_FN __attribute__((no_sanitize("thread"), noinline))
#else
constexpr size_t kRedzone = 0;
#define GPUCONV_SAN_FN inline
#endif

#ifdef GPUCONV_SANITIZE
// Bytes of the gpuconv_shared section that belong to no __shared__ array, so that an overrun of the
// last array lands in the section and is reported. g++ emits a file's variables in reverse order of
// definition, so this one (defined before any kernel) ends the section; anywhere else it still
// separates two arrays.
__attribute__((section("gpuconv_shared"), used)) static unsigned char gpuconv_shared_redzone[kRedzone];
#endif

// One tracked region, as Python fills it (ctypes mirror in sanitizer.py).
struct Region {
    uintptr_t base;             // first byte (for SHARED_STATIC: offset in the gpuconv_shared section)
    uint64_t size;
    uint64_t guard_before, guard_after;  // bytes around it that belong to nothing: an access there is out of bounds
    unsigned char* written;     // one byte per byte of the region: 1 once written (initcheck); may be null
    int kind;
    const char* name;
};

// Per byte of shared memory: the last writer and reader, the phase (barrier interval) they acted in and
// how many full-warp barriers their warp had passed then (lanes of one warp are ordered by __syncwarp()
// and the other warp-wide primitives, as on the GPU), and the thread (+ 1; 0: none) whose async_copy into
// it has not landed yet. Threads of a block (at most 1024) fit 16 bits.
struct SharedShadow {
    uint32_t w_phase, r_phase;
    uint16_t writer, reader;  // reader = kManyReaders when several threads read
    uint16_t pending, unused;
    uint32_t w_sync, r_sync;
};
constexpr uint32_t kManyReaders = 0xFFFFu;

// Counters of one launch (COUNTERS): the hardware's view of memory traffic.
struct Counters {
    uint64_t global_requests = 0, global_sectors = 0, global_bytes = 0;  // bytes: requested by lanes
    uint64_t shared_requests = 0, shared_wavefronts = 0;
    // the same three global counts per region (kernel argument), by the region of a request's first lane
    std::vector<uint64_t> region_requests, region_sectors, region_bytes;
};

struct State {
    unsigned tools = 0;
    bool active = false;  // true while a kernel thread (fiber) runs: the scheduler's own accesses are not the kernel's
    bool landing = false; // an async copy is landing (COUNTERS: its global read was counted at issue)
    std::vector<Region> regions;
    std::vector<std::vector<uint64_t>> last_writer;  // per region (GLOBAL_OUT): global thread id + 1 per byte
    std::vector<std::vector<unsigned char>> touched;  // COUNTERS, per region: bit 0 read, bit 1 written, per byte
    uintptr_t static_lo = 0, static_hi = 0;           // the gpuconv_shared section
    uintptr_t dyn_lo = 0, dyn_size = 0;               // dynamic shared memory, without its redzones
    std::vector<SharedShadow> static_shadow, dyn_shadow;
    std::vector<std::vector<SharedShadow>> outside_shadow;  // per region (SHARED_OUTSIDE)
    uint32_t phase = 1, block_first_phase = 1;
    uint64_t copies_in_flight = 0;                    // async_copies into shared memory not landed yet
    uint32_t warp_syncs[32] = {};                     // full-warp barriers released, per warp of the block
    std::vector<const void*> barrier_site;            // per thread: the __syncthreads() it waits at
    // COUNTERS: per access instruction (its return address) and warp, each lane's execution count,
    // and per (instruction, warp, n-th execution) the addresses the lanes touched.
    struct Request { bool global; std::vector<std::pair<uintptr_t, unsigned>> lanes; };
    std::unordered_map<const void*, std::vector<uint32_t>> executions;  // pc -> per thread of the block
    std::unordered_map<uint64_t, Request> requests;
    std::unordered_map<const void*, uint32_t> pc_ids;
    Counters counters;
};

// A namespace-scope object, not a function-local static: the latter's guard would recurse through
// the hooks while it is constructed. Zero-initialised before construction, so `active` reads false.
inline State g_state;
__attribute__((no_sanitize("thread"))) inline State& st() { return g_state; }

#ifndef GPUCONV_SANITIZE
// The unsanitized emulator: nothing to do, and nothing left after inlining.
inline void block_begin() {}
inline void enter(unsigned) {}
inline void leave() {}
inline bool barrier_release(char*, size_t) { return true; }
inline void block_end() {}
inline void at_barrier(const void*) {}
inline void atomic_access(const void*, unsigned) {}
inline void shared_layout(unsigned char*, size_t) {}
inline bool pause() { return false; }
inline void resume(bool) {}
inline void async_issue(const void*, const void*, unsigned, unsigned) {}
inline void async_landing(const void*, unsigned) {}
inline void async_landed() {}
inline void warp_synced(unsigned) {}
#else
GPUCONV_SAN_FN void shared_layout(unsigned char* dyn, size_t bytes) {
    State& s = st();
    s.dyn_lo = uintptr_t(dyn);
    s.dyn_size = bytes;
    s.dyn_shadow.assign(bytes, SharedShadow{});
}

inline unsigned current_thread() { return unsigned(gpuconv_emu::rt().current - gpuconv_emu::rt().fibers.data()); }

// Ends the launch with `msg` as its error: the fiber never resumes (run_block sees the error).
GPUCONV_SAN_FN void fail(const char* cls, const std::string& what) {
    auto& r = gpuconv_emu::rt();
    State& s = st();
    const uint3 t = r.current->tid;
    char where[160];
    std::snprintf(where, sizeof where, " by block (%u,%u,%u) thread (%u,%u,%u)", blockIdx.x, blockIdx.y,
                  blockIdx.z, t.x, t.y, t.z);
    r.error = std::string(cls) + ": " + what + where;
    s.active = false;
    r.current->state = gpuconv_emu::State::Done;
    swapcontext(&r.current->ctx, &r.scheduler);
    std::abort();  // not reached: the scheduler never resumes a failed thread
}

inline std::string thread_name(uint32_t linear) {
    const unsigned bx = blockDim.x, by = blockDim.y;
    char b[64];
    std::snprintf(b, sizeof b, "thread (%u,%u,%u)", linear % bx, linear / bx % by, linear / (bx * by));
    return b;
}

GPUCONV_SAN_FN void block_begin() {
    State& s = st();
    s.block_first_phase = ++s.phase;  // bytes written since: initialised in this block
    ++s.phase;                          // the first barrier interval
    const unsigned n = blockDim.x * blockDim.y * blockDim.z;
    s.barrier_site.assign(n, nullptr);
    for (auto& e : s.executions) std::fill(e.second.begin(), e.second.end(), 0u);
}

GPUCONV_SAN_FN void enter(unsigned) { st().active = true; }
// Every existing lane of warp `warp` passed one warp-wide barrier (cuda_host.h's warp_release).
GPUCONV_SAN_FN void warp_synced(unsigned warp) { ++st().warp_syncs[warp]; }
GPUCONV_SAN_FN void leave() { st().active = false; }
// The runtime's own heap work inside a kernel thread (a queue growing) is not the kernel's access.
GPUCONV_SAN_FN bool pause() { const bool was = st().active; st().active = false; return was; }
GPUCONV_SAN_FN void resume(bool was) { st().active = was; }
GPUCONV_SAN_FN void at_barrier(const void* site) { st().barrier_site[current_thread()] = site; }

// All threads wait at a barrier: synccheck that it is the same one; a new phase starts.
GPUCONV_SAN_FN bool barrier_release(char* err, size_t len) {
    State& s = st();
    ++s.phase;
    if (!(s.tools & SYNCCHECK)) return true;
    for (size_t t = 1; t < s.barrier_site.size(); ++t)
        if (s.barrier_site[t] != s.barrier_site[0]) {
            std::snprintf(err, len, "synccheck: threads of block (%u,%u,%u) wait at different __syncthreads(): "
                          "%s at one, %s at another", blockIdx.x, blockIdx.y, blockIdx.z,
                          thread_name(0).c_str(), thread_name(uint32_t(t)).c_str());
            return false;
        }
    return true;
}

// Folds the block's warp requests into the launch's counters.
GPUCONV_SAN_FN void block_end() {
    State& s = st();
    if (!(s.tools & COUNTERS)) return;
    for (auto& kv : s.requests) {
        const auto& q = kv.second;
        if (q.global) {
            std::vector<uintptr_t> sectors, bytes;  // bytes: lanes reading one address ask for it once
            const std::pair<uintptr_t, unsigned>* first = nullptr;
            for (auto& l : q.lanes) {
                if (l.second == 0) continue;  // a zero-fill copy's lane: no sector
                if (!first) first = &l;
                for (uintptr_t sec = l.first >> 5; sec <= (l.first + l.second - 1) >> 5; ++sec) sectors.push_back(sec);
                for (uintptr_t b = l.first; b < l.first + l.second; ++b) bytes.push_back(b);
            }
            if (!first) continue;  // every lane zero-filled: nothing read
            std::sort(bytes.begin(), bytes.end());
            const size_t nbytes = size_t(std::unique(bytes.begin(), bytes.end()) - bytes.begin());
            std::sort(sectors.begin(), sectors.end());
            const size_t nsectors = size_t(std::unique(sectors.begin(), sectors.end()) - sectors.begin());
            s.counters.global_bytes += nbytes;
            s.counters.global_sectors += nsectors;
            ++s.counters.global_requests;
            for (size_t r = 0; r < s.regions.size(); ++r) {
                const Region& g = s.regions[r];
                if ((g.kind == GLOBAL_IN || g.kind == GLOBAL_OUT) && first->first >= g.base &&
                    first->first < g.base + g.size) {
                    s.counters.region_requests[r] += 1;
                    s.counters.region_sectors[r] += nsectors;
                    s.counters.region_bytes[r] += nbytes;
                    break;
                }
            }
        } else {
            // wavefronts = the most distinct 4-byte words any one bank must deliver (same word: broadcast)
            std::vector<uintptr_t> words;
            for (auto& l : q.lanes)
                for (uintptr_t w = l.first >> 2; w <= (l.first + l.second - 1) >> 2; ++w) words.push_back(w);
            std::sort(words.begin(), words.end());
            words.erase(std::unique(words.begin(), words.end()), words.end());
            unsigned per_bank[32] = {0}, most = 0;
            for (uintptr_t w : words) most = std::max(most, ++per_bank[w % 32]);
            s.counters.shared_wavefronts += most;
            ++s.counters.shared_requests;
        }
    }
    s.requests.clear();
}

GPUCONV_SAN_FN void count(const void* pc, uintptr_t a, unsigned size, bool global) {
    State& s = st();
    const unsigned t = current_thread();
    auto& ex = s.executions[pc];
    if (ex.size() <= t) ex.resize(blockDim.x * blockDim.y * blockDim.z, 0u);
    auto id = s.pc_ids.emplace(pc, uint32_t(s.pc_ids.size())).first->second;
    const uint64_t key = (uint64_t(id) << 40) | (uint64_t(t / 32) << 32) | ex[t]++;
    auto& q = s.requests[key];
    q.global = global;
    q.lanes.emplace_back(a, size);
}

GPUCONV_SAN_FN std::string describe(const Region& g, intptr_t off, unsigned size) {
    char b[200];
    std::snprintf(b, sizeof b, "%s '%s' (%llu bytes) at byte offset %lld, access of %u bytes",
                  g.kind == SHARED_STATIC ? "shared array" : "argument", g.name,
                  (unsigned long long)g.size, (long long)off, size);
    return b;
}

// Reports a hazard found by interval_race (out of line: the check itself runs on every byte accessed).
GPUCONV_SAN_FN void report_interval_race(const char* hazard, uint32_t other, const char* space, uintptr_t off,
                                         const char* what) {
    char m[280];
    std::snprintf(m, sizeof m, "%s hazard on %s byte offset %llu with %s in the same barrier interval%s", hazard,
                  space, (unsigned long long)off,
                  other == kManyReaders ? "several other threads" : thread_name(other).c_str(), what);
    fail("racecheck", m);
}

// Whether thread t's access is ordered after `other`'s earlier one in this interval: both lanes of one warp,
// and the warp has passed a warp-wide barrier since (`then`: its count at that access).
inline bool warp_ordered(uint32_t other, uint32_t then, uint32_t t) {
    return other != kManyReaders && other / 32 == t / 32 && then != st().warp_syncs[t / 32];
}

// Racecheck of one byte against the other threads' accesses in the current barrier interval.
inline void interval_race(const SharedShadow& b, bool write, uint32_t t, const char* space, uintptr_t off,
                          const char* what) {
    State& s = st();
    if (!(s.tools & RACECHECK)) return;
    if (b.w_phase == s.phase && b.writer != t && !warp_ordered(b.writer, b.w_sync, t))
        report_interval_race(write ? "write-after-write" : "read-after-write", b.writer, space, off, what);
    if (write && b.r_phase == s.phase && b.reader != t && !warp_ordered(b.reader, b.r_sync, t))
        report_interval_race("write-after-read", b.reader, space, off, what);
}

inline void shared_race(SharedShadow* sh, unsigned size, bool write, uint32_t t, const char* space,
                        uintptr_t off) {
    State& s = st();
    const uint32_t sync = s.warp_syncs[t / 32];
    for (unsigned i = 0; i < size; ++i) {
        SharedShadow& b = sh[i];
        interval_race(b, write, t, space, off + i, "");
        if (write) { b.w_phase = s.phase; b.writer = uint16_t(t); b.w_sync = sync; }
        else if (b.r_phase == s.phase && b.reader != t && !warp_ordered(b.reader, b.r_sync, t)) b.reader = uint16_t(kManyReaders);
        else { b.r_phase = s.phase; b.reader = uint16_t(t); b.r_sync = sync; }
    }
}

// The pending async_copy of thread `owner` that covers address a, described for a report.
GPUCONV_SAN_FN std::string pending_copy(uint32_t owner, uintptr_t a) {
    const auto& f = gpuconv_emu::rt().fibers[owner];
    for (size_t i = f.copies_landed; i < f.copies.size(); ++i) {
        const auto& c = f.copies[i];
        if (a - uintptr_t(c.dst) < unsigned(c.bytes)) {
            char b[120];
            if (c.group < f.commits)
                std::snprintf(b, sizeof b, "async_copy (issued after %u __syncthreads(), commit group %u)", c.interval,
                              c.group);
            else
                std::snprintf(b, sizeof b, "async_copy (issued after %u __syncthreads(), not committed yet)", c.interval);
            return b;
        }
    }
    return "async_copy";
}

// An access (or a new async_copy: `verb`) of the running thread t meets bytes an async_copy may still be
// writing: its own copy's (asynccheck) or another thread's (racecheck).
inline void pending_race(const SharedShadow* sh, unsigned size, const char* verb, bool write, uint32_t t,
                         const char* space, uintptr_t off, uintptr_t a) {
    State& s = st();
    for (unsigned i = 0; i < size; ++i) {
        if (sh[i].pending == 0) continue;
        const uint32_t owner = sh[i].pending - 1;
        char m[400];
        if (owner == t && (s.tools & ASYNCCHECK)) {
            std::snprintf(m, sizeof m, "%s of %s byte offset %llu (access of %u bytes) whose %s has not been waited "
                          "for", verb, space, (unsigned long long)(off + i), size, pending_copy(owner, a + i).c_str());
            fail("asynccheck", m);
        }
        if (owner != t && (s.tools & RACECHECK)) {
            std::snprintf(m, sizeof m, "%s hazard on %s byte offset %llu with the %s of %s, in flight until that "
                          "thread's async_wait retires it", write ? "write-after-write" : "read-after-write", space,
                          (unsigned long long)(off + i), pending_copy(owner, a + i).c_str(), thread_name(owner).c_str());
            fail("racecheck", m);
        }
    }
}

// An async_copy of `size` bytes into shared memory issued by thread t: checked against the accesses and
// pending copies it may overlap with, then marked pending until it lands.
inline void async_issue_shared(SharedShadow* sh, unsigned size, uint32_t t, const char* space, uintptr_t off,
                               uintptr_t a) {
    pending_race(sh, size, "async_copy into", true, t, space, off, a);
    for (unsigned i = 0; i < size; ++i) interval_race(sh[i], true, t, space, off + i, " (an async_copy's write)");
    for (unsigned i = 0; i < size; ++i) sh[i].pending = uint16_t(t + 1);
}

inline void shared_init(const SharedShadow* sh, unsigned size, const char* space, uintptr_t off) {
    State& s = st();
    for (unsigned i = 0; i < size; ++i)
        if (sh[i].w_phase < s.block_first_phase) {
            char m[200];
            std::snprintf(m, sizeof m, "read of uninitialised %s byte offset %llu (access of %u bytes): no thread "
                          "of the block wrote it", space, (unsigned long long)(off + i), size);
            fail("initcheck", m);
        }
}

// One memory access of `size` bytes at `p` by the running kernel thread. align: the width to check
// alignment at (0: unknown, bounds only). how: ATOMIC records no race; ASYNC_ISSUE and ASYNC_LANDING are
// an async_copy's source or destination at its issue (memcheck; the destination marked pending) and its
// destination just before it lands (the mark cleared; the landing itself is an ordinary access).
GPUCONV_SAN_FN void check_access(const void* p, unsigned size, bool write, unsigned align, const void* pc, How how);

// The checks call library code (std::string, hash maps) that is itself instrumented: inactive meanwhile.
GPUCONV_SAN_FN void access(const void* p, unsigned size, bool write, unsigned align, const void* pc,
                          How how = PLAIN) {
    State& s = st();
    if (!s.active) return;
    s.active = false;
    check_access(p, size, write, align, pc, how);
    s.active = true;
}

GPUCONV_SAN_FN void check_access(const void* p, unsigned size, bool write, unsigned align, const void* pc, How how) {
    State& s = st();
    const bool atomic = how == ATOMIC;
    const uintptr_t a = uintptr_t(p);
    auto& r = gpuconv_emu::rt();
    if (a - uintptr_t(r.stacks.data()) < r.stacks.size()) return;  // a thread's locals
    const unsigned t = current_thread();
    const bool misaligned = align > 1 && (a % align) != 0;
    // shared memory: the static section and the dynamic buffer
    const bool in_static = a >= s.static_lo && a < s.static_hi;
    const bool near_dyn = a + kRedzone >= s.dyn_lo && a < s.dyn_lo + s.dyn_size + kRedzone;
    const Region* outside = nullptr;  // a __shared__ array g++ left out of the section (see SHARED_OUTSIDE)
    if (!in_static && !near_dyn)
        for (const Region& g : s.regions)
            if (g.kind == SHARED_OUTSIDE && a >= g.base && a < g.base + g.size) outside = &g;
    if (in_static || near_dyn || outside) {
        std::string space;
        SharedShadow* shadow = nullptr;
        uintptr_t off = 0;
        if (outside) {
            off = a - outside->base;
            space = std::string("shared array '") + outside->name + "'";
            if ((s.tools & MEMCHECK) && off + size > outside->size)
                fail("memcheck", std::string("out-of-bounds ") + (write ? "write" : "read") + " past the end of " + space);
            shadow = s.outside_shadow[size_t(outside - s.regions.data())].data() + off;
        } else if (in_static) {
            off = a - s.static_lo;
            const Region *owner = nullptr, *before = nullptr;  // before: the array ending closest below
            for (const Region& g : s.regions) {
                if (g.kind != SHARED_STATIC) continue;
                if (off >= g.base && off < g.base + g.size) owner = &g;
                if (g.base + g.size <= off && (!before || g.base + g.size > before->base + before->size)) before = &g;
            }
            const Region* over = owner ? owner : before;
            if ((s.tools & MEMCHECK) && (owner == nullptr || off + size > owner->base + owner->size))
                fail("memcheck", std::string("out-of-bounds ") + (write ? "write" : "read") + " of static shared memory " +
                     (over ? "past the end of array '" + std::string(over->name) + "' (" + std::to_string(over->size) +
                             " bytes) at its byte offset " + std::to_string(off - over->base)
                           : "at section offset " + std::to_string(off)) +
                     ", access of " + std::to_string(size) + " bytes");
            space = owner ? std::string("shared array '") + owner->name + "'" : std::string("static shared memory");
            if (owner) off -= owner->base;
            shadow = s.static_shadow.data() + (a - s.static_lo);
        } else {
            const intptr_t o = intptr_t(a) - intptr_t(s.dyn_lo);
            if ((s.tools & MEMCHECK) && (o < 0 || uintptr_t(o) + size > s.dyn_size))
                fail("memcheck", std::string("out-of-bounds ") + (write ? "write" : "read") + " of dynamic shared memory ("
                     + std::to_string(s.dyn_size) + " bytes) at byte offset " + std::to_string(o) + ", access of " +
                     std::to_string(size) + " bytes");
            if (o < 0 || uintptr_t(o) + size > s.dyn_size) return;
            off = uintptr_t(o);
            space = "dynamic shared memory";
            shadow = s.dyn_shadow.data() + off;
        }
        if ((s.tools & MEMCHECK) && misaligned)
            fail("memcheck", "misaligned " + std::to_string(size) + "-byte " + (write ? "write" : "read") + " of " + space +
                 " at byte offset " + std::to_string(off));
        if (how == ASYNC_ISSUE) {
            if (write) async_issue_shared(shadow, size, t, space.c_str(), off, a);
            s.copies_in_flight += write;
            return;
        }
        if (how == ASYNC_LANDING) {
            for (unsigned i = 0; i < size; ++i)
                if (shadow[i].pending == t + 1) shadow[i].pending = 0;
            --s.copies_in_flight;
            return;
        }
        if (s.copies_in_flight) pending_race(shadow, size, write ? "write" : "read", write, t, space.c_str(), off, a);
        if ((s.tools & INITCHECK) && !write && !atomic) shared_init(shadow, size, space.c_str(), off);
        if (!atomic) shared_race(shadow, size, write, t, space.c_str(), off);
        else  // an atomic initialises but takes part in no hazard
            for (unsigned i = 0; i < size; ++i) shadow[i].w_phase = std::max(shadow[i].w_phase, s.block_first_phase);
        if (s.tools & COUNTERS) count(pc, a, size, false);
        return;
    }
    // global memory: the launch's pointer arguments
    const Region* hit = nullptr;
    const Region* near = nullptr;
    for (const Region& g : s.regions) {
        if (g.kind == SHARED_STATIC) continue;
        if (a >= g.base && a + size <= g.base + g.size) { hit = &g; break; }
        if (a + size > g.base - g.guard_before && a < g.base + g.size + g.guard_after) near = &g;
    }
    if (hit == nullptr) {
        if (near != nullptr && near->kind != IGNORED && (s.tools & MEMCHECK))
            fail("memcheck", std::string("out-of-bounds ") + (write ? "write" : "read") + " of " +
                 describe(*near, intptr_t(a) - intptr_t(near->base), size));
        return;
    }
    if (hit->kind == IGNORED) return;
    const uintptr_t off = a - hit->base;
    if ((s.tools & MEMCHECK) && misaligned)
        fail("memcheck", std::string("misaligned ") + (write ? "write" : "read") + " of " + describe(*hit, intptr_t(off), size));
    if ((s.tools & MEMCHECK) && write && hit->kind == GLOBAL_IN)
        fail("memcheck", "write to read-only (const) " + describe(*hit, intptr_t(off), size));
    if (how == ASYNC_ISSUE || how == ASYNC_LANDING) return;  // the source is read when the copy lands
    if (hit->written != nullptr) {
        if (write) std::memset(hit->written + off, 1, size);
        else if (s.tools & INITCHECK)
            for (unsigned i = 0; i < size; ++i)
                if (!hit->written[off + i])
                    fail("initcheck", "read of uninitialised " + describe(*hit, intptr_t(off + i), size) +
                         ": no launch wrote it");
    }
    if (write && !atomic && (s.tools & RACECHECK)) {
        auto& lw = s.last_writer[size_t(hit - s.regions.data())];
        const uint64_t me = (uint64_t(blockIdx.z) * gridDim.y * gridDim.x + uint64_t(blockIdx.y) * gridDim.x + blockIdx.x)
                            * (blockDim.x * blockDim.y * blockDim.z) + t + 1;
        for (unsigned i = 0; i < size; ++i) {
            const uint64_t other = lw[off + i];
            if (other != 0 && other != me) {
                const uint64_t n = uint64_t(blockDim.x) * blockDim.y * blockDim.z, ob = (other - 1) / n;
                char m[160];
                std::snprintf(m, sizeof m, " was also written by block %llu (linear) %s in this launch",
                              (unsigned long long)ob, thread_name(uint32_t((other - 1) % n)).c_str());
                fail("racecheck", "write-after-write hazard on global memory: " + describe(*hit, intptr_t(off + i), size) + m);
            }
            lw[off + i] = me;
        }
    }
    if (s.tools & COUNTERS) {
        if (!s.landing) count(pc, a, size, true);
        auto& tb = s.touched[size_t(hit - s.regions.data())];
        for (unsigned i = 0; i < size; ++i) tb[off + i] |= write ? 2 : 1;
    }
}

GPUCONV_SAN_FN void atomic_access(const void* p, unsigned size) {
    access(p, size, true, size, __builtin_return_address(0), ATOMIC);
}

// async_copy<bytes>(dst, src, src_bytes) is issued: src_bytes = 0 reads nothing.
GPUCONV_SAN_FN void async_issue(const void* dst, const void* src, unsigned bytes, unsigned src_bytes) {
    const void* pc = __builtin_return_address(0);
    if (src_bytes > 0) access(src, src_bytes, false, bytes, pc, ASYNC_ISSUE);
    State& s = st();
    if (s.active && (s.tools & COUNTERS)) {
        // the copy's global request is counted here, where the instruction executes, not when it lands
        // (a zero-fill copy reads nothing there): every lane's copies then number alike in its warp, and
        // a zero-fill lane is one of the request's lanes that asks for no sector
        s.active = false;
        count(pc, uintptr_t(src), src_bytes, true);
        s.active = true;
    }
    access(dst, bytes, true, bytes, pc, ASYNC_ISSUE);
}

// The running thread's copy into dst is about to land (its global read then counts as compulsory traffic
// but not as a request: async_issue counted that); async_landed() ends the landing.
GPUCONV_SAN_FN void async_landing(const void* dst, unsigned bytes) {
    access(dst, bytes, true, 0, __builtin_return_address(0), ASYNC_LANDING);
    st().landing = true;
}
GPUCONV_SAN_FN void async_landed() { st().landing = false; }
#endif

}  // namespace gpuconv_san

#ifdef GPUCONV_SANITIZE
// The hooks g++ -fsanitize=thread calls. The return address identifies the access instruction.
extern "C" {
__attribute__((no_sanitize("thread"))) void __tsan_init() {}
__attribute__((no_sanitize("thread"))) void __tsan_func_entry(void*) {}
__attribute__((no_sanitize("thread"))) void __tsan_func_exit(void*) {}
#define GPUCONV_SAN_HOOKS(n)                                                                          \
    __attribute__((no_sanitize("thread"))) void __tsan_read##n(void* p) {                             \
        gpuconv_san::access(p, n, false, n, __builtin_return_address(0)); }                           \
    __attribute__((no_sanitize("thread"))) void __tsan_write##n(void* p) {                            \
        gpuconv_san::access(p, n, true, n, __builtin_return_address(0)); }                            \
    __attribute__((no_sanitize("thread"))) void __tsan_unaligned_read##n(void* p) {                   \
        gpuconv_san::access(p, n, false, 0, __builtin_return_address(0)); }                           \
    __attribute__((no_sanitize("thread"))) void __tsan_unaligned_write##n(void* p) {                  \
        gpuconv_san::access(p, n, true, 0, __builtin_return_address(0)); }                            \
    __attribute__((no_sanitize("thread"))) void __tsan_volatile_read##n(void* p) {                    \
        gpuconv_san::access(p, n, false, n, __builtin_return_address(0)); }                           \
    __attribute__((no_sanitize("thread"))) void __tsan_volatile_write##n(void* p) {                   \
        gpuconv_san::access(p, n, true, n, __builtin_return_address(0)); }
GPUCONV_SAN_HOOKS(1)
GPUCONV_SAN_HOOKS(2)
GPUCONV_SAN_HOOKS(4)
GPUCONV_SAN_HOOKS(8)
GPUCONV_SAN_HOOKS(16)
#undef GPUCONV_SAN_HOOKS
// Atomic loads g++ emits for the runtime's own function-local statics (the guard of rt()); kernels use
// gpuconv's atomics, which are not instrumented.
__attribute__((no_sanitize("thread"))) unsigned char __tsan_atomic8_load(const volatile unsigned char* p, int) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
__attribute__((no_sanitize("thread"))) void __tsan_read_range(void* p, unsigned long n) {
    gpuconv_san::access(p, unsigned(n), false, 0, __builtin_return_address(0));
}
__attribute__((no_sanitize("thread"))) void __tsan_write_range(void* p, unsigned long n) {
    gpuconv_san::access(p, unsigned(n), true, 0, __builtin_return_address(0));
}

// Called by Python before a launch: which checks, the pointer arguments and static shared arrays
// (regions), and the dynamic shared memory size. Returns the address of the gpuconv_shared section.
__attribute__((no_sanitize("thread"))) void gpuconv_san_begin(unsigned tools, const gpuconv_san::Region* regions,
                                                             int n) {
    using namespace gpuconv_san;
    State& s = st();
    s.tools = tools;
    s.regions.assign(regions, regions + n);
    s.last_writer.assign(size_t(n), {});
    for (int i = 0; i < n; ++i)
        if (regions[i].kind == GLOBAL_OUT && (tools & RACECHECK)) s.last_writer[size_t(i)].assign(regions[i].size, 0);
    s.touched.assign(size_t(n), {});
    for (int i = 0; i < n; ++i)
        if ((regions[i].kind == GLOBAL_IN || regions[i].kind == GLOBAL_OUT) && (tools & COUNTERS))
            s.touched[size_t(i)].assign(regions[i].size, 0);
    s.outside_shadow.assign(size_t(n), {});
    for (int i = 0; i < n; ++i)
        if (regions[i].kind == SHARED_OUTSIDE) s.outside_shadow[size_t(i)].assign(regions[i].size, SharedShadow{});
    s.static_lo = uintptr_t(__start_gpuconv_shared);
    s.static_hi = uintptr_t(__stop_gpuconv_shared);
    s.static_shadow.assign(s.static_hi - s.static_lo, SharedShadow{});
    s.counters = Counters{};
    s.counters.region_requests.assign(size_t(n), 0);
    s.counters.region_sectors.assign(size_t(n), 0);
    s.counters.region_bytes.assign(size_t(n), 0);
    s.copies_in_flight = 0;
    s.requests.clear();
    s.executions.clear();
    s.pc_ids.clear();
}

__attribute__((no_sanitize("thread"))) void gpuconv_san_counters(unsigned long long* out) {
    const auto& c = gpuconv_san::st().counters;
    unsigned long long read = 0, written = 0;  // distinct global bytes: the launch's compulsory traffic
    for (const auto& tb : gpuconv_san::st().touched)
        for (unsigned char b : tb) { read += b & 1; written += b >> 1; }
    const unsigned long long v[] = {c.global_requests, c.global_sectors, c.global_bytes, c.shared_requests,
                                    c.shared_wavefronts, read, written};
    std::memcpy(out, v, sizeof v);
}

// Region i's global requests, sectors and bytes (out[0..2]); zeros past the regions.
__attribute__((no_sanitize("thread"))) void gpuconv_san_region_counters(int i, unsigned long long* out) {
    const auto& c = gpuconv_san::st().counters;
    const size_t r = size_t(i);
    const bool in = i >= 0 && r < c.region_requests.size();
    const unsigned long long v[] = {in ? c.region_requests[r] : 0, in ? c.region_sectors[r] : 0,
                                    in ? c.region_bytes[r] : 0};
    std::memcpy(out, v, sizeof v);
}

__attribute__((no_sanitize("thread"))) uintptr_t gpuconv_san_static_shared() {
    return uintptr_t(__start_gpuconv_shared);
}
}
#endif
