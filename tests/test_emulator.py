"""The emulator backend under stress: guard checks with concurrent callers, a damaged or unusable
kernel cache, a missing or hanging compiler, and Ctrl-C during a long launch; and what it models of
asynchronous copies (kernels/async_copy.cuh)."""
from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import gpuconv
from gpuconv.backends import available_backends, get_backend, unusable_reason
from gpuconv.backends.cuda import emulator, emulator_build
from gpuconv.backends.cuda.launch import Launch
from gpuconv.backends.cuda.params import conv_problem_struct
from gpuconv.backends.cuda.sources import inline_includes, kernel_dir, load_source

from threaded_calls import assert_exact_from_threads, integer_cases

EMULATOR_REASON = available_backends()["emulator"]
pytestmark = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")

# Test kernels, compiled like a kernel file (common.cuh inlined from a real one).
KERNELS = load_source("direct").split("#ifndef DIRECT_TILE_OH")[0] + r'''
extern "C" __global__ void fill(float* y, float v) { y[blockIdx.x * blockDim.x + threadIdx.x] = v; }

// A dependent chain of `iters` multiply-adds per thread; a positive output marks a block that ran.
extern "C" __global__ void busy(float* y, int iters) {
    float acc = 0.0f;
    for (int i = 0; i < iters; ++i) acc = acc * 0.999f + 1.0f;
    y[blockIdx.x * blockDim.x + threadIdx.x] = acc + 1.0f;
}

// Reads a neighbour's value without a barrier: the result depends on the (seeded) thread order.
extern "C" __global__ void racy(float* y) {
    __shared__ float s[32];
    const unsigned b = blockIdx.y * gridDim.x + blockIdx.x;
    s[threadIdx.x] = float(b * 32 + threadIdx.x);
    y[b * 32 + threadIdx.x] = s[(threadIdx.x + 1) % 32];
}
'''


def problem(xs, ws, padding="SAME"):
    p, _ = gpuconv.parse_problem(xs, np.float32, ws, np.float32, 1, padding, "NHWC", None)
    return p


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, private kernel cache: every module is built anew in it."""
    d = tmp_path / "cache"
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(d))
    return d / "emulator"


@pytest.fixture(scope="module")
def kernels():
    return emulator.EmulatedModule("emulator_test", KERNELS)


def fill(module, blocks=4, value=2.5):
    y = np.zeros(blocks * 32, np.float32)
    module.launch(Launch("emulator_test", "fill", (blocks, 1, 1), (32, 1, 1), 0, (y, np.float32(value))))
    return y


# ---------------------------------------------------------------- guard checks and threads

def out_of_bounds_launch(be):
    """The direct kernel given an output 8 elements shorter than the problem needs."""
    direct = be.algorithms()["direct"]
    p = problem((1, 8, 8, 4), (3, 3, 4, 16))
    short = be.xp.empty((p.M * p.K - 8,), np.float32)
    return Launch("direct", "conv_direct_f32_i32", direct.grid(p), (direct.threads, 1, 1), direct.shared_bytes(p, 4),
                  (conv_problem_struct(p), np.ones(p.input_shape, np.float32), np.ones(p.filter_shape, np.float32),
                   short, np.int32(4)))


def test_guard_check_holds_while_another_thread_finishes_a_call():
    """Another thread's conv2d ending between this thread's allocation and launch must not unregister
    this thread's arrays (it did: a shared registry was cleared after every call)."""
    be = emulator.EmulatorBackend()
    launch = out_of_bounds_launch(be)
    x, w = np.ones((1, 5, 5, 2), np.float32), np.ones((3, 3, 2, 3), np.float32)
    other = threading.Thread(target=be.run, args=(problem(x.shape, w.shape), x, w, "direct"))
    other.start()
    other.join()
    with pytest.raises(RuntimeError, match="conv_direct_f32_i32 wrote after the end of its 'y' array"):
        be.launch(launch)


def test_every_writable_array_is_checked_with_concurrent_callers(monkeypatch):
    seen = []
    lookup = emulator.GuardedNumpy.guarded_buffer

    def recording(self, a):
        buf = lookup(self, a)
        seen.append(buf)
        return buf

    monkeypatch.setattr(emulator.GuardedNumpy, "guarded_buffer", recording)
    cases = integer_cases(1, 8, (1, 6, 7, 4), (3, 3, 4, 5))
    assert_exact_from_threads(cases, threads=4, algorithm="gemm")
    assert len(seen) >= 2 * len(cases)  # im2col's workspace and gemm's output, per call
    assert all(buf is not None for buf in seen), f"{sum(b is None for b in seen)} of {len(seen)} arrays unchecked"


def test_guarded_buffers_are_not_kept_after_the_result_is_dropped():
    be = emulator.EmulatorBackend()
    x, w = np.ones((1, 5, 5, 2), np.float32), np.ones((1, 1, 2, 3), np.float32)
    y = be.run(problem(x.shape, w.shape), x, w, "gemm1x1")
    assert len(be.xp._buffers) == 1
    del y
    assert len(be.xp._buffers) == 0


# ---------------------------------------------------------------- asynchronous copies

@pytest.fixture(scope="module")
def async_kernels():
    """tests/sanitizer_kernels/defects.cu, whose async_copy kernels come with correct twins and pipelines."""
    return emulator.EmulatedModule(
        "sanitizer_defects", inline_includes(Path(__file__).parent / "sanitizer_kernels" / "defects.cu"))


def run_async(module, kernel, x, *extra, seed=None):
    y = np.zeros(32, np.float32)
    module.launch(Launch("sanitizer_defects", kernel, (1, 1, 1), (32, 1, 1), 0, (x, y, *extra)),
                  seed=seed or 0, shuffle=seed is not None)
    return y


@pytest.mark.parametrize("seed", [None, 1, 2])
@pytest.mark.parametrize("kernel, expected, nan_threads", [
    # each thread reads its own copy: without a wait it has not landed, so the poisoned bytes are read
    ("missing_wait", lambda x: x[:32], 32),
    ("weak_wait", lambda x: x[:32] + x[32:], 32),  # async_wait<1>: the second group is still in flight
    ("missing_wait_ok", lambda x: x[:32], 0),
    ("weak_wait_ok", lambda x: x[:32] + x[32:], 0),
    # every thread waits before the barrier: all copies have landed when thread t reads thread 31 - t's
    ("wait_after_barrier_ok", lambda x: x[31::-1], 0),
])
def test_copies_land_when_their_wait_retires_them(async_kernels, kernel, expected, nan_threads, seed):
    """A copy reaches shared memory at the async_wait that retires its group (or the thread's exit), not at
    the call: a missing or too weak wait reads the poisoned (NaN) shared memory, as it may on a GPU."""
    x = np.arange(64, dtype=np.float32)
    y = run_async(async_kernels, kernel, x, seed=seed)
    assert np.isnan(y).sum() == nan_threads
    if nan_threads == 0:
        np.testing.assert_array_equal(y, expected(x))


def test_a_wait_after_the_barrier_reads_other_threads_copies_too_early(async_kernels):
    """Thread t reads thread 31 - t's copy after the barrier; that copy lands only at its own thread's wait."""
    y = run_async(async_kernels, "wait_after_barrier", np.arange(64, dtype=np.float32))
    assert np.isnan(y[:16]).all() and not np.isnan(y[16:]).any()  # threads 0-15 run before 31-16 wait


def test_copies_nobody_waited_for_land_when_their_thread_exits(async_kernels):
    """Threads 0-15 copy and exit without a wait; threads 16-31, which run after them, see the landed bytes."""
    x = np.arange(64, dtype=np.float32)
    y = run_async(async_kernels, "exit_without_wait", x)
    np.testing.assert_array_equal(y[16:], x[:16])


def test_a_misaligned_async_copy_fails_without_the_sanitizer(async_kernels):
    with pytest.raises(RuntimeError, match=r"async_misaligned failed in the emulator: memcheck: async_copy<16> from "
                                           r"global 0x[0-9a-f]+ to shared 0x[0-9a-f]+: not 16-byte aligned by block "
                                           r"\(0,0,0\) thread \(0,0,0\)"):
        run_async(async_kernels, "async_misaligned", np.arange(64, dtype=np.float32))


def test_src_bytes_outside_the_copy_fails():
    src = (kernel_dir() / "async_copy.cuh").read_text() + (
        'extern "C" __global__ void too_many(const float* x, float* y) {\n'
        '    __shared__ float s[32];\n'
        '    async_copy<4>(&s[threadIdx.x], x + threadIdx.x, 5);\n'
        '}\n')
    m = emulator.EmulatedModule("emulator_src_bytes", src)
    with pytest.raises(RuntimeError, match=r"memcheck: async_copy<4> with src_bytes=5, outside \[0, 4\] by block "
                                           r"\(0,0,0\) thread \(0,0,0\)"):
        m.launch(Launch("emulator_src_bytes", "too_many", (1, 1, 1), (32, 1, 1), 0,
                        (np.zeros(32, np.float32), np.zeros(32, np.float32))))


# ---------------------------------------------------------------- the kernel cache

def test_build_works_when_the_temp_dir_is_on_another_filesystem(cache, tmp_path, monkeypatch):
    """Renaming a library built in /tmp into the cache fails with EXDEV when /tmp is a tmpfs: the
    library must be built inside the cache directory. A rename across directories is made to fail
    here as it does across filesystems."""
    rename = os.replace

    def same_directory_only(src, dst):
        if Path(src).resolve().parent != Path(dst).resolve().parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link (simulated)", str(src))
        rename(src, dst)

    monkeypatch.setattr(os, "replace", same_directory_only)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    np.testing.assert_array_equal(fill(emulator.EmulatedModule("emulator_test", KERNELS)), np.full(128, 2.5, np.float32))
    assert emulator_build.is_intact(next(cache.glob("emulator_test-*.so")))


CHILD = """
import sys, numpy as np
from gpuconv.backends.cuda import emulator
from gpuconv.backends.cuda.launch import Launch
m = emulator.EmulatedModule("emulator_test", open(sys.argv[1]).read())
y = np.zeros(64, np.float32)
m.launch(Launch("emulator_test", "fill", (2, 1, 1), (32, 1, 1), 0, (y, np.float32(3))))
print(y.sum())
"""


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_cache_entry_is_rebuilt(cache, tmp_path, damage):
    """A truncated library made every later process die of SIGBUS in dlopen; an empty or garbage one
    failed to load forever. The next process must notice and rebuild."""
    emulator.EmulatedModule("emulator_test", KERNELS)
    lib = next(cache.glob("emulator_test-*.so"))
    data = lib.read_bytes()
    bad = {"truncated": data[:len(data) // 2], "empty": b"", "garbage": os.urandom(len(data))}[damage]
    # a new file renamed over it: this process has the library mapped, and must not see it change
    (tmp_path / "bad.so").write_bytes(bad)
    os.replace(tmp_path / "bad.so", lib)
    (tmp_path / "kernels.cu").write_text(KERNELS)
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "kernels.cu")], capture_output=True,
                           text=True, env={**os.environ, "GPUCONV_CACHE_DIR": str(cache.parent)})
    assert child.returncode == 0, f"rc {child.returncode}: {child.stderr[-2000:]}"
    assert float(child.stdout) == 192.0
    assert emulator_build.is_intact(lib)


def test_a_library_without_its_integrity_record_is_rebuilt(cache):
    emulator.EmulatedModule("emulator_test", KERNELS)
    lib = next(cache.glob("emulator_test-*.so"))
    lib.with_name(lib.name + ".sha256").unlink()
    before = lib.stat().st_ino
    emulator.EmulatedModule("emulator_test", KERNELS)
    assert lib.stat().st_ino != before and emulator_build.is_intact(lib)


def read_only_cache_root(tmp_path, monkeypatch):
    root = tmp_path / "ro"
    (root / "emulator").mkdir(parents=True)
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return root


def test_a_read_only_cache_root_falls_back_to_the_temp_dir(tmp_path, monkeypatch):
    root = read_only_cache_root(tmp_path, monkeypatch)
    for d in (root / "emulator", root):
        d.chmod(0o555)
    try:
        if os.access(root / "emulator", os.W_OK):
            pytest.skip("permission bits do not bind this user (root): see the simulated variant below")
        assert emulator.cache_dir() == tmp_path / "tmp" / f"gpuconv-{os.getuid()}" / "emulator"
    finally:
        for d in (root, root / "emulator"):
            d.chmod(stat.S_IRWXU)


def test_an_unwritable_cache_root_falls_back_to_the_temp_dir_simulated(tmp_path, monkeypatch):
    """As the test above, for users that permission bits do not bind: creating a file in the
    existing cache directory fails."""
    root = read_only_cache_root(tmp_path, monkeypatch)
    create = tempfile.TemporaryFile

    def refuse_in_root(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(root):
            raise PermissionError(errno.EACCES, "Permission denied (simulated)", str(dir))
        return create(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse_in_root)
    assert emulator.cache_dir() == tmp_path / "tmp" / f"gpuconv-{os.getuid()}" / "emulator"


# ---------------------------------------------------------------- the compiler

def test_a_hanging_compiler_is_killed_with_a_clear_error(cache, tmp_path, monkeypatch):
    pidfile = tmp_path / "sleeper.pid"
    fake = tmp_path / "hanging-cxx"
    fake.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {pidfile}\nwait\n")
    fake.chmod(0o755)
    monkeypatch.setenv("GPUCONV_CXX", str(fake))
    monkeypatch.setenv("GPUCONV_CXX_TIMEOUT", "0.5")
    with pytest.raises(RuntimeError, match=r"killed after 0.5 s(.|\n)*GPUCONV_CXX_TIMEOUT(.|\n)*hanging-cxx"):
        emulator.EmulatedModule("emulator_test", KERNELS)
    # what the compiler started is gone too (at most a zombie awaiting its reaper)
    stat_file = Path(f"/proc/{pidfile.read_text().strip()}/stat")
    assert not stat_file.exists() or stat_file.read_text().split(")")[-1].split()[0] == "Z"
    assert not list(cache.glob("*.so")) and not list(cache.glob(".*.tmp"))


@pytest.mark.parametrize("raw", ["soon", "0", "-1", "inf", "nan"])
def test_invalid_compiler_timeout_is_rejected(monkeypatch, raw):
    monkeypatch.setenv("GPUCONV_CXX_TIMEOUT", raw)
    with pytest.raises(ValueError, match=f"GPUCONV_CXX_TIMEOUT='{raw}' is not allowed: expected a positive"):
        emulator_build.compiler_timeout()


@pytest.fixture
def fresh_probe():
    unusable_reason.cache_clear()
    yield
    unusable_reason.cache_clear()


def test_a_missing_GPUCONV_CXX_makes_the_backend_unusable(monkeypatch, fresh_probe):
    """No silent fallback to g++ when the compiler asked for is not there."""
    monkeypatch.setenv("GPUCONV_CXX", "/nonexistent/g++")
    why = available_backends()["emulator"]
    assert why is not None and "GPUCONV_CXX='/nonexistent/g++'" in why
    with pytest.raises(RuntimeError, match="needs a C.. compiler: GPUCONV_CXX='/nonexistent/g..' names no"):
        emulator.EmulatedModule("emulator_test", KERNELS)
    assert emulator.compiler() is None


# ---------------------------------------------------------------- long launches

@pytest.fixture
def python_sigint_handler():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_interrupts_a_long_launch(kernels, python_sigint_handler):
    """The grid runs for seconds; SIGINT sent once it is under way must stop it part-way (it used to
    wait for the whole grid, in C), and the next launch must work."""
    blocks = 8000
    y = np.zeros(blocks * 32, np.float32)
    main = threading.main_thread().ident

    def interrupt_once_started():
        while y[:32].min() == 0:  # the first block has not finished yet
            threading.Event().wait(0.01)
        threading.Event().wait(0.3)
        signal.pthread_kill(main, signal.SIGINT)

    timer = threading.Thread(target=interrupt_once_started)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            kernels.launch(Launch("emulator_test", "busy", (blocks, 1, 1), (32, 1, 1), 0, (y, np.int32(20000))))
    finally:
        timer.join()
    ran = int((y.reshape(blocks, 32) > 0).all(axis=1).sum())
    assert 0 < ran < blocks // 2, f"{ran} of {blocks} blocks ran before the interrupt took effect"
    np.testing.assert_array_equal(fill(kernels), np.full(128, 2.5, np.float32))


def test_a_grid_run_one_block_per_slice_gives_the_same_bits(kernels, monkeypatch):
    """The seeded thread order carries over from one slice of the grid to the next."""
    def racy(seed):
        y = np.zeros(6 * 32, np.float32)
        kernels.launch(Launch("emulator_test", "racy", (3, 2, 1), (32, 1, 1), 0, (y,)), seed=seed, shuffle=True)
        return y

    whole = [racy(seed) for seed in (1, 2)]
    assert whole[0].tobytes() != whole[1].tobytes(), "the seeds must give different orders for this to test anything"
    monkeypatch.setattr(emulator, "SLICE_SECONDS", 0.0)
    for seed, expected in zip((1, 2), whole):
        np.testing.assert_array_equal(racy(seed), expected)


def test_two_builds_of_one_kernel_file_keep_their_own_shared_arrays():
    """g++ gives a template function's static (here __shared__) arrays STB_GNU_UNIQUE binding: the dynamic
    linker shares one copy among every library loaded in the process, RTLD_LOCAL or not. gemm.cu built
    with 128x64 tiles and then with 64x128 ran the second build on the first one's smaller B tile (wrong
    results, found by the autotuner); -fno-gnu-unique keeps each build's arrays its own."""
    be = get_backend("emulator")
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (1, 6, 6, 8)).astype(np.float32)
    w = rng.integers(-3, 4, (3, 3, 8, 8)).astype(np.float32)
    p = problem(x.shape, w.shape)
    gemm = be.algorithms()["gemm"]
    for macros in (dict(GEMM_BM=128, GEMM_BN=64, GEMM_BK=16, GEMM_TM=8, GEMM_TN=4),
                   dict(GEMM_BM=64, GEMM_BN=128, GEMM_BK=16, GEMM_TM=4, GEMM_TN=8)):
        np.testing.assert_array_equal(be.run(p, x, w, gemm.configured(**macros)), gpuconv.conv2d_reference(x, w, p),
                                      err_msg=str(macros))


def test_gnu_unique_flag_is_dropped_for_clang(tmp_path):
    """-fno-gnu-unique is g++'s; clang++ (found as c++ or clang++) rejects it, so it is left out there."""
    from gpuconv.backends.cuda.emulator_build import compiler_flags
    for name, version in (("fake-clang", "Ubuntu clang version 18.1.3"), ("fake-gcc", "g++ (Debian 12.2.0-14) 12.2.0")):
        fake = tmp_path / name
        fake.write_text(f"#!/bin/sh\necho '{version}'\n")
        fake.chmod(0o755)
        flags = compiler_flags(str(fake), ("-O2", "-fno-gnu-unique"))
        assert flags == (["-O2"] if "clang" in version else ["-O2", "-fno-gnu-unique"])
