"""NVRTC compilation, ptxas report parsing, occupancy math, and the `gpuconv kernels` check.

The small kernels here are written to tmp files (never into kernels/). NVRTC runs on any host,
no GPU needed; each compilation is done once per session through the fixtures.
"""
from __future__ import annotations

import io
import itertools
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpuconv import cli
from gpuconv.backends.cuda import nvrtc, report, sources

pytestmark = pytest.mark.skipif(nvrtc.available() is not None, reason=f"NVRTC not installed: {nvrtc.available()}")

# A block-size macro (overridable with -D), static shared memory, a barrier and a half-precision
# header from CUDA's include dirs: the features the real kernels use.
SMALL = textwrap.dedent("""\
    #include <cuda_fp16.h>
    #ifndef NT
    #define NT 128
    #endif
    extern "C" __global__ void __launch_bounds__(NT) reverse_axpy(float a, const float* __restrict__ x,
                                                                  float* y, int n) {
        __shared__ float tile[NT];
        int i = blockIdx.x * NT + threadIdx.x;
        tile[threadIdx.x] = i < n ? x[i] : 0.f;
        __syncthreads();
        if (i < n) y[i] = a * tile[NT - 1 - threadIdx.x] + y[i];
    }
    extern "C" __global__ void __launch_bounds__(64) half_copy(const __half* x, __half* y) {
        extern __shared__ __half buf[];
        buf[threadIdx.x] = x[threadIdx.x];
        __syncthreads();
        y[threadIdx.x] = buf[threadIdx.x ^ 1];
    }
    extern "C" __global__ void unbounded(float* y) { y[threadIdx.x] = 1.f; }
    """)

# 128 accumulators live across a loop, but __launch_bounds__(1024, 1) leaves 64 registers per
# thread (65536 / 1024): ptxas must spill on every architecture.
SPILLS = textwrap.dedent("""\
    extern "C" __global__ void __launch_bounds__(1024, 1) spiller(const float* __restrict__ x, float* y, int k) {
        float acc[128];
    #pragma unroll
        for (int j = 0; j < 128; ++j) acc[j] = x[j];
        for (int i = 0; i < k; ++i) {
            float v = x[i * 1024 + threadIdx.x];
    #pragma unroll
            for (int j = 0; j < 128; ++j) acc[j] = fmaf(acc[j], v, 1.0f);
        }
        float s = 0.f;
    #pragma unroll
        for (int j = 0; j < 128; ++j) s += acc[j] * (float)(j + 1);
        y[threadIdx.x] = s;
    }
    """)

TWO_ARCHS = ("sm_75", "sm_90")


@pytest.fixture(scope="session")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kernels") / "small.cu"
    path.write_text(SMALL)
    return path


@pytest.fixture(scope="session")
def spill_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kernels") / "spiller.cu"
    path.write_text(SPILLS)
    return path


@pytest.fixture(scope="session")
def small_reports(small_file):
    return {r.arch: r for r in report.compile_report([small_file], TWO_ARCHS, defines=["NT=96"])}


@pytest.fixture(scope="session")
def spill_reports(spill_file):
    return report.compile_report([spill_file], TWO_ARCHS)


# ---------------------------------------------------------------- nvrtc.compile

@pytest.mark.parametrize("arch", TWO_ARCHS)
def test_compile_gives_a_cubin_for_the_arch(arch):
    res = nvrtc.compile(SMALL, "small.cu", arch)
    assert res.cubin[:4] == b"\x7fELF"  # SASS in an ELF container, not PTX text
    assert f".target {arch}" in res.ptx
    assert f"Compiling entry function 'reverse_axpy' for '{arch}'" in res.log  # -Xptxas=-v ran
    assert "-std=c++17" in res.options and f"--gpu-architecture={arch}" in res.options
    assert any(o.startswith("-I") and o[2:] in sources.cuda_include_dirs() for o in res.options)


def test_compile_error_names_file_arch_and_log():
    with pytest.raises(nvrtc.NvrtcCompileError) as ei:
        nvrtc.compile('extern "C" __global__ void k(float* y) { y[0] = undeclared; }', "broken.cu", "sm_86")
    msg = str(ei.value)
    assert "broken.cu" in msg and "sm_86" in msg and 'identifier "undeclared" is undefined' in msg
    assert ei.value.arch == "sm_86" and "undeclared" in ei.value.log


def test_missing_cuda_headers_error_says_how_to_install():
    with pytest.raises(nvrtc.NvrtcCompileError, match=r"gpuconv\[cuda13\]"):
        nvrtc.compile("#include <cuda_bf16.h>\n", "needs_headers.cu", "sm_80", include_dirs=())


def test_defines_reach_the_compiler():
    src = '#if !defined(TILE) || TILE != 7\n#error TILE must be 7\n#endif\nextern "C" __global__ void k() {}\n'
    nvrtc.compile(src, "d.cu", "sm_80", defines={"TILE": 7})
    nvrtc.compile(src, "d.cu", "sm_80", defines=["TILE=7"])
    with pytest.raises(nvrtc.NvrtcCompileError, match="TILE must be 7"):
        nvrtc.compile(src, "d.cu", "sm_80", defines=["TILE=8"])


@pytest.mark.parametrize("arch, match", [("compute_80", "real architecture"), ("sm80", "real architecture"),
                                         ("sm_70", "not supported by NVRTC"), (80, "real architecture")])
def test_bad_arch_is_rejected(arch, match):
    with pytest.raises(ValueError, match=match):
        nvrtc.compile(SMALL, "small.cu", arch)


def test_bad_define_and_options_are_rejected():
    with pytest.raises(ValueError, match="'1BAD'"):
        nvrtc.build_options("sm_80", ["1BAD=2"])
    with pytest.raises(TypeError, match="list of option strings"):
        nvrtc.build_options("sm_80", (), "-lineinfo")


def test_missing_nvrtc_says_how_to_install(monkeypatch):
    import cuda.pathfinder

    def not_found(name):
        raise OSError(f"lib{name}.so: cannot open shared object file")

    monkeypatch.setattr(cuda.pathfinder, "load_nvidia_dynamic_lib", not_found)
    nvrtc._lib.cache_clear()
    try:
        why = nvrtc.available()
        with pytest.raises(nvrtc.NvrtcNotFound, match="pip install nvidia-cuda-nvrtc"):
            nvrtc.compile(SMALL, "small.cu", "sm_80")
    finally:
        monkeypatch.undo()
        nvrtc._lib.cache_clear()
    assert why is not None and "gpuconv[cuda13]" in why and "libnvrtc.so" in why
    assert nvrtc.available() is None


# ---------------------------------------------------------------- parsing

# Captured from NVRTC 13.5 for sm_75: a module-level line, an entry without spills, an entry with a
# local array (stack frame but no spill), a non-inlined device function, a ptxas warning.
LOG_SM75 = """\
ptxas warning : Value of threads per SM for entry spill is out of range. .minnctapersm will be ignored
ptxas info    : 128 bytes gmem, 256 bytes cmem[3], 8 bytes cmem[4]
ptxas info    : Compiling entry function 'dyn' for 'sm_75'
ptxas info    : Function properties for dyn
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 1 barriers, 360 bytes cmem[0]
ptxas info    : Compile time = 1.648 ms
ptxas info    : Compiling entry function 'spill' for 'sm_75'
ptxas info    : Function properties for spill
ptxas         .     256 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 64 registers, used 0 barriers, 256 bytes cumulative stack size, 372 bytes cmem[0]
ptxas info    : Compile time = 18.293 ms
ptxas info    : Function properties for _Z6helperPKfi
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""

# Captured from NVRTC 13.5 for sm_90 (no cmem[0] line there), the same entry now spilling.
LOG_SM90_SPILL = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'spill' for 'sm_90'
ptxas info    : Function properties for spill
ptxas         .     496 bytes stack frame, 532 bytes spill stores, 512 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 496 bytes cumulative stack size
ptxas info    : Compile time = 27.585 ms
ptxas info    : Compiling entry function 'axpy' for 'sm_90'
ptxas info    : Function properties for axpy
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 1 barriers, 1024 bytes smem
ptxas info    : Compile time = 4.106 ms
"""


def test_parse_captured_sm75_log():
    funcs, module, warnings = report.parse_ptxas_log(LOG_SM75)
    assert set(funcs) == {"dyn", "spill", "_Z6helperPKfi"}
    dyn, spill, helper = funcs["dyn"], funcs["spill"], funcs["_Z6helperPKfi"]
    assert (dyn.entry, dyn.registers, dyn.barriers, dyn.smem, dyn.cmem) == (True, 10, 1, 0, {0: 360})
    assert (spill.registers, spill.stack_frame, spill.cumulative_stack, spill.cmem) == (64, 256, 256, {0: 372})
    assert not spill.spills  # a stack frame from a local array is not a spill
    assert not helper.entry and helper.registers is None and not helper.spills
    assert module == {"gmem": 128, "cmem": {3: 256, 4: 8}}
    assert warnings == ["ptxas warning : Value of threads per SM for entry spill is out of range. "
                        ".minnctapersm will be ignored"]


def test_parse_captured_sm90_spill_log():
    funcs, module, _ = report.parse_ptxas_log(LOG_SM90_SPILL)
    spill, axpy = funcs["spill"], funcs["axpy"]
    assert (spill.registers, spill.spill_stores, spill.spill_loads, spill.stack_frame) == (32, 532, 512, 496)
    assert spill.spills and not axpy.spills
    assert (axpy.registers, axpy.barriers, axpy.smem, axpy.cmem) == (10, 1, 1024, {})
    fake = report.KernelReport(file="k.cu", arch="sm_90", functions=[spill, axpy])
    assert report.problems([fake]) == ["k.cu [sm_90]: spill spills 532 bytes stored / 512 bytes loaded to local memory"]


def test_parse_older_ptxas_format_without_barriers():
    log = ("ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_80'\n"
           "ptxas info    : Function properties for _Z3fooPf\n"
           "    0 bytes stack frame, 8 bytes spill stores, 0 bytes spill loads\n"
           "ptxas info    : Used 255 registers, 49152 bytes smem, 352 bytes cmem[0], 4 bytes cmem[2]\n")
    f = report.parse_ptxas_log(log)[0]["_Z3fooPf"]
    assert (f.registers, f.smem, f.barriers, f.cmem) == (255, 49152, 0, {0: 352, 2: 4})
    assert (f.spill_stores, f.spill_loads, f.spills) == (8, 0, True)


def test_parse_ptx_launch_bounds_and_dynamic_shared():
    ptx = textwrap.dedent("""\
        .extern .shared .align 16 .b8 dyn_buf[];
        .visible .entry two_d(
            .param .u64 two_d_param_0
        )
        .maxntid 16, 8, 1
        .minnctapersm 2
        {
            mov.u64 %rd1, dyn_buf;
        }
        .visible .entry plain(
            .param .u64 plain_param_0
        )
        {
            ret;
        }
        .visible .entry required(
        )
        .reqntid 64
        {
            ret;
        }
        """)
    e = report.parse_ptx_entries(ptx)
    assert e["two_d"] == {"threads": 128, "min_blocks": 2, "dynamic_smem": True}
    assert e["plain"] == {"threads": None, "min_blocks": None, "dynamic_smem": False}
    assert e["required"]["threads"] == 64


# ---------------------------------------------------------------- real compilations of the small kernels

@pytest.mark.parametrize("arch", TWO_ARCHS)
def test_small_kernel_report(small_reports, arch):
    r = small_reports[arch]
    assert r.error is None
    f = {fn.name: fn for fn in r.functions}
    axpy, half, unbounded = f["reverse_axpy"], f["half_copy"], f["unbounded"]
    assert axpy.registers > 0 and half.registers > 0
    assert axpy.threads == 96  # -D NT=96 overrode the default 128, seen through the PTX
    assert axpy.smem == 96 * 4 and axpy.barriers == 1
    assert half.threads == 64 and half.dynamic_smem and not axpy.dynamic_smem
    assert unbounded.threads is None and r.occupancy(unbounded) is None
    assert report.problems([r]) == []
    occ = r.occupancy(axpy)
    assert occ == report.occupancy(arch, 96, axpy.registers, 96 * 4, 1)


def test_spilling_kernel_fails_the_check(spill_reports):
    assert {r.arch for r in spill_reports} == set(TWO_ARCHS)
    for r in spill_reports:
        (f,) = r.functions
        assert f.name == "spiller" and f.threads == 1024
        assert f.registers <= 64 and f.spill_stores > 0 and f.spill_loads > 0
    bad = report.problems(spill_reports)
    assert len(bad) == 2 and all("spiller.cu" in b and "spiller spills" in b for b in bad)


def test_compile_error_is_reported_not_raised(tmp_path):
    path = tmp_path / "broken.cu"
    path.write_text('extern "C" __global__ void k(float* y) { y[0] = nope; }\n')
    (r,) = report.compile_report([path], ["sm_80"])
    assert r.error is not None and "nope" in r.error
    assert report.problems([r]) == ['broken.cu [sm_80]: compile error: broken.cu(1): error: identifier "nope" '
                                    'is undefined']


# ---------------------------------------------------------------- occupancy, computed by hand

@pytest.mark.parametrize("arch, threads, regs, smem, barriers, blocks, warps, limiter", [
    # 8 warps/block; 32 regs -> 1024 regs/warp -> 16 warps per 16K-register partition -> 64 warps: all fit
    ("sm_80", 256, 32, 0, 0, 8, 64, "warps"),
    # 64 regs -> 2048 regs/warp -> 8 warps/partition -> 32 warps -> 4 blocks of 8 warps
    ("sm_80", 256, 64, 0, 0, 4, 32, "registers"),
    # the same kernel on sm_86: 32 of 48 warps
    ("sm_86", 256, 64, 0, 0, 4, 32, "registers"),
    # 255 regs -> 8160 rounded up to 8192 per warp -> 2 warps/partition -> 8 warps -> 2 blocks of 4
    ("sm_75", 128, 255, 0, 0, 2, 8, "registers"),
    # 40 KiB + 1 KiB reserved = 41984 B per block; 228 KiB / 41984 = 5 blocks
    ("sm_90", 128, 32, 40 * 1024, 0, 5, 20, "shared memory"),
    # sm_75 reserves nothing: 33 KiB rounds to 33792 B (multiple of 256): 64 KiB holds 1
    ("sm_75", 64, 16, 33 * 1024, 0, 1, 2, "shared memory"),
    # 100 B + 1 KiB = 1124 -> 1152 B (128-byte units) on sm_89: 88 blocks would fit; the 24-block cap binds
    ("sm_89", 32, 16, 100, 0, 24, 24, "blocks"),
    # one-warp blocks: 48 would fit by warps, 16 by the hardware cap
    ("sm_86", 32, 16, 0, 0, 16, 16, "blocks"),
    # sm_90 has 2 named barriers per block slot: 3 per block leave 32 * 2 // 3 = 21 blocks
    ("sm_90", 32, 16, 0, 3, 21, 21, "barriers"),
    # 2 per block: 32 blocks, the block cap binds as early
    ("sm_90", 32, 16, 0, 2, 32, 32, "blocks"),
    # NVIDIA's calculator models barriers from sm_90 on only
    ("sm_86", 32, 16, 0, 3, 16, 16, "blocks"),
    # 3 warps of 168 regs = 5376 regs/warp: 3 warps per partition -> 12 warps -> 4 blocks
    ("sm_80", 96, 168, 0, 0, 4, 12, "registers"),
    # 1024 threads x 128 regs = 131072 registers > 65536 per block: cannot launch at all
    ("sm_80", 1024, 128, 0, 0, 0, 0, "registers"),
    # more static shared memory than an SM has
    ("sm_86", 128, 32, 100 * 1024, 0, 0, 0, "shared memory"),
])
def test_occupancy_by_hand(arch, threads, regs, smem, barriers, blocks, warps, limiter):
    occ = report.occupancy(arch, threads, regs, smem, barriers)
    assert (occ.blocks_per_sm, occ.warps_per_sm, occ.limiter) == (blocks, warps, limiter)
    assert occ.fraction == warps / report.SM_LIMITS[arch].max_warps


def test_occupancy_limits_table():
    L = report.SM_LIMITS
    assert [L[a].max_warps for a in report.ARCHS] == [32, 64, 48, 48, 64]
    assert [L[a].max_blocks for a in report.ARCHS] == [16, 32, 16, 24, 32]
    assert [L[a].smem_per_sm // 1024 for a in report.ARCHS] == [64, 164, 100, 100, 228]
    assert [L[a].smem_reserved_per_block for a in report.ARCHS] == [0, 1024, 1024, 1024, 1024]


@pytest.mark.parametrize("kwargs, match", [
    (dict(arch="sm_70", threads=128, registers=32, smem=0), "arch='sm_70'"),
    (dict(arch="sm_80", threads=0, registers=32, smem=0), "threads=0"),
    (dict(arch="sm_80", threads=128, registers=-1, smem=0), "registers=-1"),
    (dict(arch="sm_80", threads=128, registers=32, smem=1.5), "smem=1.5"),
])
def test_occupancy_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        report.occupancy(**kwargs)


# ---------------------------------------------------------------- the command

def test_kernels_command_passes_and_writes_json(small_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = cli.main(["kernels", str(small_file), "--arch", "sm_80", "-D", "NT=256", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "reverse_axpy" in text and "no errors, no spills" in text
    data = json.loads(out.read_text())
    (rep,) = data["reports"]
    fn = {f["name"]: f for f in rep["functions"]}
    assert rep["arch"] == "sm_80" and fn["reverse_axpy"]["threads"] == 256 and data["problems"] == []
    assert fn["reverse_axpy"]["occupancy"]["blocks_per_sm"] >= 1


def test_compile_report_reports_progress_once_per_compilation(small_file):
    labels = []
    reports = report.compile_report([small_file], TWO_ARCHS, progress=labels.append)
    assert sorted(labels) == ["small.cu [sm_75]", "small.cu [sm_90]"]
    assert [r.arch for r in reports] == list(TWO_ARCHS)  # in task order, whatever order they finished in


def test_kernels_output_on_a_pipe_has_no_progress_and_parses(small_file):
    res = subprocess.run([sys.executable, "-m", "gpuconv.cli", "kernels", str(small_file), "--arch", "sm_80",
                          "--arch", "sm_90"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # stderr is a pipe: no progress bar
    assert "\x1b" not in res.stdout and "\r" not in res.stdout  # no cursor movement or colour codes
    lines = res.stdout.splitlines()
    header = next(ln for ln in lines if "function" in ln and "occupancy" in ln)
    names = [c.strip() for c in header.strip("┃ ").split("┃")]
    rows = [dict(zip(names, (c.strip() for c in ln.strip("│ ").split("│")))) for ln in lines if ln.startswith("│")]
    axpy = {r["arch"]: r for r in rows if r["function"] == "reverse_axpy"}
    assert set(axpy) == {"sm_80", "sm_90"} and axpy["sm_80"]["threads"] == "128" and axpy["sm_80"]["file"] == "small.cu"
    assert lines[-1] == "2 compilation(s) (1 files x 2 archs), 6 entry points, no errors, no spills"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_only_on_a_terminal_stderr(small_file, monkeypatch, capsys, quiet):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    rc = cli.main(["kernels", str(small_file), "--arch", "sm_80"] + (["--quiet"] if quiet else []))
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[-1].endswith("no errors, no spills") and "done:" not in out
    assert ("done: small.cu [sm_80]" in err.getvalue()) is not quiet


def test_kernels_command_fails_on_spills(spill_file, capsys):
    rc = cli.main(["kernels", str(spill_file), "--arch", "sm_89"])
    err = capsys.readouterr().err
    assert rc == 1 and "FAIL: spiller.cu [sm_89]: spiller spills" in err


def test_kernels_command_rejects_unknown_arch(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["kernels", "--arch", "sm_70"])
    assert ei.value.code == 2 and "invalid choice: 'sm_70'" in capsys.readouterr().err


# ---------------------------------------------------------------- the project's kernels

@pytest.fixture(scope="session")
def project_reports():
    files = sources.kernel_files()
    if not files:
        pytest.skip(f"no kernels yet in {sources.kernel_dir()}")
    return report.compile_report(files, report.ARCHS)


def test_every_kernel_compiles_for_all_archs_without_spills(project_reports):
    assert {(r.file, r.arch) for r in project_reports} == {
        (f.name, a) for f in sources.kernel_files() for a in report.ARCHS}
    bad = report.problems(project_reports)
    assert not bad, "NVRTC check failed:\n" + "\n".join(bad)


def test_every_entry_point_declares_its_block_size(project_reports):
    missing = sorted({(r.file, f.name) for r in project_reports for f in r.functions
                      if f.entry and f.threads is None})
    assert missing == [], "entry points without __launch_bounds__ (no occupancy figure)"


# ---------------------------------------------------------------- occupancy against NVIDIA's own calculator

# cuda_occupancy.h (CUDA's header-only occupancy calculator, shipped with the runtime headers) run on
# the host: one line per case on stdin, active blocks per SM on stdout.
OCC_HARNESS = r"""
#include <cstdio>
#include <cuda_occupancy.h>
int main() {
    int major, minor, threads_sm, smem_sm, reserved, block, regs, smem, bars;
    while (std::scanf("%d %d %d %d %d %d %d %d %d", &major, &minor, &threads_sm, &smem_sm, &reserved,
                      &block, &regs, &smem, &bars) == 9) {
        cudaOccDeviceProp p;
        p.computeMajor = major; p.computeMinor = minor; p.maxThreadsPerBlock = 1024;
        p.maxThreadsPerMultiprocessor = threads_sm; p.regsPerBlock = 65536; p.regsPerMultiprocessor = 65536;
        p.warpSize = 32; p.sharedMemPerBlock = 48 * 1024; p.sharedMemPerMultiprocessor = smem_sm;
        p.numSms = 1; p.sharedMemPerBlockOptin = smem_sm - reserved; p.reservedSharedMemPerBlock = reserved;
        cudaOccFuncAttributes a;  // a kernel that opted in to the largest shared memory per block
        a.maxThreadsPerBlock = 1024; a.numRegs = regs; a.sharedSizeBytes = 0;
        a.shmemLimitConfig = FUNC_SHMEM_LIMIT_OPTIN; a.maxDynamicSharedSizeBytes = smem_sm - reserved;
        a.numBlockBarriers = bars;
        cudaOccDeviceState s;
        cudaOccResult r;
        if (cudaOccMaxActiveBlocksPerMultiprocessor(&r, &p, &a, &s, block, smem) != CUDA_OCC_SUCCESS) return 1;
        std::printf("%d\n", r.activeBlocksPerMultiprocessor);
    }
    return 0;
}
"""


def test_occupancy_matches_cuda_occupancy_h(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler to build NVIDIA's cuda_occupancy.h")
    try:
        include = [d for d in sources.cuda_include_dirs() if (Path(d) / "cuda_occupancy.h").is_file()]
    except sources.CudaHeadersNotFound as e:
        pytest.skip(str(e))
    if not include:
        pytest.skip("cuda_occupancy.h is not among CUDA's headers here")
    exe = tmp_path / "occ"
    (tmp_path / "occ.cpp").write_text(OCC_HARNESS)
    subprocess.run([cxx, "-O1", "-std=c++17", f"-I{include[0]}", str(tmp_path / "occ.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    cases = list(itertools.product(report.ARCHS, (32, 96, 128, 256, 512, 1024), (16, 32, 40, 64, 72, 128, 168, 255),
                                   (0, 100, 4096, 12 * 1024, 40 * 1024, 99 * 1024), (0, 1, 3)))
    lines = []
    for arch, threads, regs, smem, bars in cases:
        L = report.SM_LIMITS[arch]
        major, minor = divmod(int(arch[3:]), 10)
        lines.append(f"{major} {minor} {L.max_warps * 32} {L.smem_per_sm} {L.smem_reserved_per_block} "
                     f"{threads} {regs} {smem} {bars}")
    res = subprocess.run([str(exe)], input="\n".join(lines), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    theirs = [int(v) for v in res.stdout.split()]
    assert len(theirs) == len(cases)
    mismatches = [(case, ours.blocks_per_sm, t) for case, t in zip(cases, theirs)
                  if (ours := report.occupancy(*case)).blocks_per_sm != t]
    assert mismatches == [], f"{len(mismatches)} of {len(cases)} differ, e.g. {mismatches[:5]}"


def test_plain_text_report_without_rich(spill_reports, small_reports, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rich.console", None)  # makes `from rich.console import ...` fail
    report.print_report(list(small_reports.values()) + spill_reports)
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["file", "function", "arch"]
    fails = [r for r in rows if r.endswith("<-- FAIL")]
    assert len(fails) == 2 and all(r.startswith("spiller.cu") and " spiller " in r for r in fails)
    assert any(r.startswith("small.cu") and "reverse_axpy" in r and "(" in r for r in rows)
