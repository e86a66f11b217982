"""The emulator's sanitizer (gpuconv/backends/cuda/sanitizer.py) on deliberately broken kernels
(tests/sanitizer_kernels/defects.cu): each defect is reported with its class, kernel and location, and
its corrected twin reports nothing; the memory counters match hand-computed values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuconv.backends import available_backends
from gpuconv.backends.cuda import sanitizer
from gpuconv.backends.cuda.emulator import GuardedNumpy
from gpuconv.backends.cuda.launch import Launch
from gpuconv.backends.cuda.sources import inline_includes

from counted_runs import aligned_copy

EMULATOR_REASON = available_backends()["emulator"]
pytestmark = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")

SOURCE = inline_includes(Path(__file__).parent / "sanitizer_kernels" / "defects.cu")  # async_copy.cuh


@pytest.fixture(scope="module")
def module():
    return sanitizer.SanitizedModule("sanitizer_defects", SOURCE)


def aligned(n: int) -> np.ndarray:
    """0, 1, ..., n-1 in float32 on a 256-byte boundary, so sector counts do not depend on malloc."""
    return aligned_copy(np.arange(n, dtype=np.float32))


# kernels that use dynamic shared memory: its size in bytes
DYNAMIC_SHARED = {"async_oob_shared": 128, "async_oob_shared_ok": 128}


def run(module, kernel, tools=sanitizer.ALL_CHECKS, counters=False, nx=64, ny=32):
    xp = GuardedNumpy()
    x = aligned(nx)
    y = aligned(ny) if counters else xp.empty((ny,), np.float32)  # counters: sectors depend on alignment
    launch = Launch("sanitizer_defects", kernel, (1, 1, 1), (32, 1, 1), DYNAMIC_SHARED.get(kernel, 0), (x, y))
    return module.run(launch, tools, xp, counters=counters)


DEFECTS = [
    # kernel, the report must match this (class, what, where)
    ("oob_global_write", r"memcheck: out-of-bounds write of argument 'y' \(128 bytes\) at byte offset 128, "
                         r"access of 4 bytes by block \(0,0,0\) thread \(31,0,0\)"),
    ("oob_shared_read", r"memcheck: out-of-bounds read of static shared memory past the end of array 's' "
                        r"\(128 bytes\) at its byte offset 128, access of 4 bytes by block \(0,0,0\) thread \(31,0,0\)"),
    ("misaligned_float4", r"memcheck: misaligned read of argument 'x' \(256 bytes\) at byte offset 4, access of 16 "
                          r"bytes by block \(0,0,0\) thread \(0,0,0\)"),
    ("missing_barrier", r"racecheck: (read-after-write|write-after-read) hazard on shared array 's' byte offset \d+ with thread "
                        r"\(\d+,0,0\) in the same barrier interval by block \(0,0,0\) thread"),
    ("warp_exchange", r"racecheck: read-after-write hazard on shared array 's' byte offset \d+ with thread "
                      r"\(\d+,0,0\) in the same barrier interval"),
    # the overwritten buffer is read by other threads before and after the write: either hazard
    ("double_buffer_war", r"racecheck: (read-after-write|write-after-read) hazard on shared array 's' byte offset \d+ with thread "
                          r"\(\d+,0,0\)"),
    ("uninit_shared", r"initcheck: read of uninitialised shared array 's' byte offset 64 \(access of 4 bytes\): "
                      r"no thread of the block wrote it by block \(0,0,0\) thread \(16,0,0\)"),
    ("uninit_shared_template", r"initcheck: read of uninitialised shared array 's' byte offset 124 .* thread \(0,0,0\)"),
    ("divergent_barrier", r"synccheck: threads of block \(0,0,0\) wait at different __syncthreads\(\)"),
    ("shfl_mask_mismatch", r"synccheck: __shfl_down_sync\(mask 0xffffffff\) in warp 0 of block \(0,0,0\): lane 16 "
                           r"\(thread \(16,0,0\)\) is named in the mask but has exited"),
    # asynchronous copies: the bytes may land at any moment from the issue to the wait that retires them
    ("missing_wait", r"asynccheck: read of shared array 's' byte offset 0 \(access of 4 bytes\) whose async_copy "
                     r"\(issued after 0 __syncthreads\(\), commit group 0\) has not been waited for by block "
                     r"\(0,0,0\) thread \(0,0,0\)"),
    ("weak_wait", r"asynccheck: read of shared array 's' byte offset 128 \(access of 4 bytes\) whose async_copy "
                  r"\(issued after 0 __syncthreads\(\), commit group 1\) has not been waited for by block "
                  r"\(0,0,0\) thread \(0,0,0\)"),
    ("wait_after_barrier", r"racecheck: read-after-write hazard on shared array 's' byte offset 124 with the async_copy "
                           r"\(issued after 0 __syncthreads\(\), commit group 0\) of thread \(31,0,0\), in flight "
                           r"until that thread's async_wait retires it by block \(0,0,0\) thread \(0,0,0\)"),
    # thread 15 read s[16] in the barrier interval in which thread 16 issues its copy into s[16]
    ("wait_without_barrier", r"racecheck: write-after-read hazard on shared array 's' byte offset 64 with thread "
                             r"\(15,0,0\) in the same barrier interval \(an async_copy's write\) by block \(0,0,0\) "
                             r"thread \(16,0,0\)"),
    # thread 0's copy landed when it exited, in the barrier interval in which thread 16 reads it
    ("exit_without_wait", r"racecheck: read-after-write hazard on shared array 's' byte offset 0 with thread "
                          r"\(0,0,0\) in the same barrier interval by block \(0,0,0\) thread \(16,0,0\)"),
    # thread 16 reads s[15], which thread 15's refill wrote in the same barrier interval
    ("stage_overwrite", r"racecheck: read-after-write hazard on shared array 's' byte offset 60 with thread \(15,0,0\) "
                        r"in the same barrier interval by block \(0,0,0\) thread \(16,0,0\)"),
    ("async_oob_shared", r"memcheck: out-of-bounds write of dynamic shared memory \(128 bytes\) at byte offset 128, "
                         r"access of 4 bytes by block \(0,0,0\) thread \(31,0,0\)"),
    ("async_misaligned", r"memcheck: misaligned read of argument 'x' \(256 bytes\) at byte offset 4, access of 16 "
                         r"bytes by block \(0,0,0\) thread \(0,0,0\)"),
]
# racecheck alone: with initcheck on, reading a byte its writer has not reached yet is (also correctly) an
# uninitialised read
# racecheck alone for these: with initcheck on, the read of a byte its writer has not reached yet is (also
# correctly) an uninitialised read
RACECHECK_ONLY = {"missing_barrier", "wait_without_barrier", "warp_exchange"}


@pytest.mark.parametrize("kernel, report", DEFECTS, ids=[d[0] for d in DEFECTS])
def test_defect_is_reported(module, kernel, report):
    tools = ("racecheck",) if kernel in RACECHECK_ONLY else sanitizer.ALL_CHECKS
    with pytest.raises(RuntimeError, match=rf"kernel {kernel} failed in the emulator: {report}"):
        run(module, kernel, tools)


@pytest.mark.parametrize("kernel", [d[0] + "_ok" for d in DEFECTS])
def test_corrected_twin_is_clean(module, kernel):
    run(module, kernel)


def test_warp_primitives_compute_what_a_gpu_does(module):
    """__shfl_xor_sync butterfly, __ballot_sync and an indexed __shfl_sync, in the plain emulator too."""
    x = np.arange(64, dtype=np.float32)
    for run_it in (lambda launch: module.run(launch, sanitizer.ALL_CHECKS, GuardedNumpy()),
                   lambda launch: load_plain().launch(launch)):
        y = np.zeros(32, np.float32)
        run_it(Launch("sanitizer_defects", "warp_reduce", (1, 1, 1), (32, 1, 1), 0, (x, y)))
        assert y[0] == x[:32].sum() and y[1] == 16
        np.testing.assert_array_equal(y[2:], x[31 - np.arange(2, 32)])


def load_plain():
    from gpuconv.backends.cuda.emulator import EmulatedModule
    return EmulatedModule("sanitizer_defects", SOURCE)


def test_warp_mask_errors_without_the_sanitizer():
    """A mask naming an exited lane is an error of the plain emulator too (a GPU would hang or read garbage)."""
    with pytest.raises(RuntimeError, match=r"synccheck: __shfl_down_sync\(mask 0xffffffff\)"):
        load_plain().launch(Launch("sanitizer_defects", "shfl_mask_mismatch", (1, 1, 1), (32, 1, 1), 0,
                                   (np.zeros(64, np.float32), np.zeros(32, np.float32))))


def test_plain_emulator_poisons_template_shared_arrays():
    """g++ puts a function template's __shared__ arrays in .bss, outside the section the runtime poisons:
    they are found in the symbol table and poisoned before every block too, so an unwritten read is NaN."""
    x = np.arange(64, dtype=np.float32)
    y = np.zeros(32, np.float32)
    for _ in range(2):  # the second launch must not see the first one's values either
        load_plain().launch(Launch("sanitizer_defects", "uninit_shared_template", (1, 1, 1), (32, 1, 1), 0, (x, y)))
        assert np.isnan(y[:16]).all()  # s[31..16]: no thread wrote them
        np.testing.assert_array_equal(y[16:], x[15::-1])
        x = x + 100


def test_shuffle_width_must_be_a_power_of_two():
    src = ('extern "C" __global__ void bad_width(float* y) {\n'
           '    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, float(threadIdx.x), 1, 12);\n}\n')
    from gpuconv.backends.cuda.emulator import EmulatedModule
    m = EmulatedModule("sanitizer_bad_width", src)
    with pytest.raises(RuntimeError, match=r"synccheck: __shfl_down_sync\(mask 0xffffffff\) .* passes a width that "
                                           r"is not a power of two"):
        m.launch(Launch("sanitizer_bad_width", "bad_width", (1, 1, 1), (32, 1, 1), 0, (np.zeros(32, np.float32),)))


def test_distinct_bytes_moved(module):
    """coalesced reads 32 floats of x and writes 32 of y; stride32 reads 32 floats spread over 1024."""
    c = run(module, "coalesced", tools=(), counters=True)
    assert (c.unique_read_bytes, c.unique_written_bytes) == (128, 128)
    c = run(module, "stride32", tools=(), counters=True, nx=1024)
    assert (c.unique_read_bytes, c.unique_written_bytes) == (128, 128)


def test_tool_selection(module):
    """A defect of a class not asked for is not reported (the hazard stays silent without racecheck, the read
    of an unwaited copy without asynccheck)."""
    run(module, "missing_barrier", tools=("memcheck",))
    run(module, "missing_wait", tools=("memcheck", "racecheck", "synccheck"))
    assert "asynccheck" in sanitizer.parse_tools("all")
    with pytest.raises(ValueError, match=r"GPUCONV_EMULATOR_SANITIZE='memcheck,bogus' is not allowed"):
        sanitizer.parse_tools("memcheck,bogus")


def test_uninitialised_output_read(module):
    """initcheck on global memory: reading an output byte that no launch wrote."""
    src = 'extern "C" __global__ void reread(float* y) { y[threadIdx.x] = y[threadIdx.x] + 1.0f; }\n'
    m = sanitizer.SanitizedModule("sanitizer_reread", src)
    xp = GuardedNumpy()
    y = xp.empty((32,), np.float32)
    with pytest.raises(RuntimeError, match=r"initcheck: read of uninitialised argument 'y' .* at byte offset 0"):
        m.run(Launch("sanitizer_reread", "reread", (1, 1, 1), (32, 1, 1), 0, (y,)), sanitizer.ALL_CHECKS, xp)


def test_global_write_race(module):
    """racecheck on global memory: every thread writes y[0]."""
    src = 'extern "C" __global__ void same_slot(float* y) { y[0] = float(threadIdx.x); }\n'
    m = sanitizer.SanitizedModule("sanitizer_same_slot", src)
    y = np.zeros(32, np.float32)
    with pytest.raises(RuntimeError, match=r"racecheck: write-after-write hazard on global memory: argument 'y'"):
        m.run(Launch("sanitizer_same_slot", "same_slot", (1, 1, 1), (32, 1, 1), 0, (y,)), ("racecheck",), None)


@pytest.mark.parametrize("kernel, nx, requests, sectors", [
    ("coalesced", 64, 2, 4 + 4),     # x: 32 consecutive floats = 4 sectors; y: the same
    ("stride32", 1024, 2, 32 + 4),   # x: one sector per lane
])
def test_global_sectors(module, kernel, nx, requests, sectors):
    c = run(module, kernel, tools=(), counters=True, nx=nx)
    assert (c.global_requests, c.global_sectors) == (requests, sectors)
    assert c.global_bytes == 2 * 32 * 4
    # the same split by argument: one request each, y's 4 sectors, x's the rest
    assert c.per_argument == {"x": (1, sectors - 4, 128), "y": (1, 4, 128)}


@pytest.mark.parametrize("kernel, column_wavefronts", [("bank_conflict", 32), ("bank_conflict_ok", 1)])
def test_bank_conflicts(module, kernel, column_wavefronts):
    c = run(module, kernel, tools=(), counters=True)
    # 32 row stores of one wavefront each, then the column read
    assert (c.shared_requests, c.shared_wavefronts) == (33, 32 + column_wavefronts)


def test_sanitize_command_checks_shipped_kernels(capsys):
    """`gpuconv sanitize` on one depthwise layer: every algorithm that applies, clean, with counters."""
    from gpuconv.cli import main
    assert main(["sanitize", "--layers", "mobilenet_dw_3x3", "--counters"]) == 0
    out = capsys.readouterr().out
    assert "0 report(s)" in out and "conv_depthwise_f32_i32" in out
    assert "global requests per kernel argument" in out
    with pytest.raises(ValueError, match=r"--tool='memcheck,nope' is not allowed"):
        main(["sanitize", "--tool", "memcheck,nope"])


def test_sanitize_layers_reach_every_algorithm():
    """`gpuconv sanitize`'s reduced layers leave no algorithm out: each runs on at least one of them (the
    tensor-core kernel needs channels in multiples of 8, in float32 as TF32)."""
    import gpuconv
    from gpuconv.backends import get_backend
    from gpuconv.sanitize_cli import reduced
    from bench.layers import LAYERS
    be = get_backend("emulator")
    reached = set()
    for layer in map(reduced, LAYERS):
        for dtype, precision in ((np.float32, "highest"), (np.float16, "highest"), (np.float32, "tf32")):
            p = gpuconv.parse_problem(layer.input_shape, dtype, layer.filter_shape, dtype, layer.stride,
                                      layer.padding, dilations=layer.dilation)[0].with_(precision=precision)
            reached |= {name for name, algo in be.algorithms().items() if algo.why_not(p) is None}
    assert reached == set(be.algorithms())


def test_unlanded_copy_bytes_are_unwritten_for_initcheck(module):
    """Until its wait lands it, an async_copy has written nothing: initcheck alone sees the read of its bytes
    as uninitialised (asynccheck names the missing wait itself)."""
    with pytest.raises(RuntimeError, match=r"missing_wait failed in the emulator: initcheck: read of uninitialised "
                                           r"shared array 's' byte offset 0 .* thread \(0,0,0\)"):
        run(module, "missing_wait", tools=("initcheck",))


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("n", [128, 130, 5 * 128 - 2])  # one tile; a zero-filled tail; five tiles, last partial
def test_pipelines_are_right_and_clean(module, stages, n):
    """Two- and three-stage cp.async pipelines (wait, barrier, refill, use): exact sums, zero fill included,
    in the plain emulator (threads in order and shuffled) and with no report under every check."""
    x = (np.arange(n) % 13 + 1).astype(np.float32)  # small integers: every sum is exact
    tiles = -(-n // 128)
    padded = np.zeros(tiles * 128, np.float32)
    padded[:n] = x
    expected = padded.reshape(tiles, 32, 4).sum(axis=(0, 2))[::-1]
    plain = load_plain()
    for run_it in (lambda launch: module.run(launch, sanitizer.ALL_CHECKS, GuardedNumpy()),
                   lambda launch: plain.launch(launch),
                   lambda launch: plain.launch(launch, seed=3, shuffle=True)):
        y = np.zeros(32, np.float32)
        run_it(Launch("sanitizer_defects", f"pipeline{stages}", (1, 1, 1), (32, 1, 1), 0, (x, y, np.int32(n))))
        np.testing.assert_array_equal(y, expected)


def test_a_pipeline_without_its_barrier_is_reported(module):
    """The 3-stage pipeline without the __syncthreads() after its wait: racecheck reports the first read of
    another thread's copy, and the plain emulator reads stages before their copies land."""
    n = 5 * 128
    x = (np.arange(n) % 13 + 1).astype(np.float32)
    launch = Launch("sanitizer_defects", "pipeline3_no_barrier", (1, 1, 1), (32, 1, 1), 0,
                    (x, np.zeros(32, np.float32), np.int32(n)))
    with pytest.raises(RuntimeError, match=r"pipeline3_no_barrier failed in the emulator: racecheck: "
                                           r"(read-after-write|write-after-read) hazard on shared array 's' byte offset"):
        module.run(launch, ("racecheck",), GuardedNumpy())
    load_plain().launch(launch)
    assert np.isnan(launch.args[1]).any()


def test_each_build_keeps_its_own_template_shared_arrays():
    """A function template's __shared__ array is a vague-linkage object: g++ would make it a process-wide
    unique symbol, so a sanitized library loaded after the plain build of the same source would use the
    plain one's array, which the sanitizer does not track (its defects went unreported). Built with
    -fno-gnu-unique, each library keeps its own."""
    src = ('template <typename T> __device__ void half_staged(const T* x, T* y) {\n'
           '    __shared__ T s[32];\n'
           '    if (threadIdx.x < 16) s[threadIdx.x] = x[threadIdx.x];\n'
           '    __syncthreads();\n'
           '    y[threadIdx.x] = s[31 - threadIdx.x];\n}\n'
           'extern "C" __global__ void half_staged_f(const float* x, float* y) { half_staged<float>(x, y); }\n')
    from gpuconv.backends.cuda.emulator import EmulatedModule
    plain = EmulatedModule("sanitizer_unique_arrays", src)
    launch = Launch("sanitizer_unique_arrays", "half_staged_f", (1, 1, 1), (32, 1, 1), 0,
                    (np.arange(32, dtype=np.float32), np.zeros(32, np.float32)))
    plain.launch(launch)
    with pytest.raises(RuntimeError, match=r"initcheck: read of uninitialised shared array 's' byte offset 124"):
        sanitizer.SanitizedModule("sanitizer_unique_arrays", src).run(launch, ("initcheck",), GuardedNumpy())
