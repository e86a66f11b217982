"""Kernel-level tests of the CUDA path that need no GPU: struct layouts, signatures, argument checks,
index-width choice, the emulator's barrier semantics and race detection, and the cupy backend's
launch code driven through a stand-in for CuPy that executes on the emulator."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

import gpuconv
from gpuconv import config
from gpuconv.backends import available_backends, get_backend
from gpuconv.backends.cuda import emulator
from gpuconv.backends.cuda.launch import DeviceLimits, Launch, index_bits
from gpuconv.backends.cuda.params import CONV_PROBLEM_DTYPE, GEMM_PROBLEM_DTYPE, conv_problem_struct
from gpuconv.backends.cuda.signature import check_args, compiled_limits, entries_of, parse_entries
from gpuconv.backends.cuda.sources import default_macros, kernel_dir, kernel_files, load_source

from launch_recorder import Recorder
from threaded_calls import assert_exact_from_threads, integer_cases

EMULATOR_REASON = available_backends()["emulator"]
needs_emulator = pytest.mark.skipif(EMULATOR_REASON is not None, reason=f"emulator unusable: {EMULATOR_REASON}")
DTYPES = ["f16", "bf16", "f32", "f64"]


def problem(xs=(2, 9, 11, 6), ws=(3, 3, 6, 5), strides=1, padding="SAME", fmt="NHWC", dil=None, dtype=np.float32):
    p, _ = gpuconv.parse_problem(xs, dtype, ws, dtype, strides, padding, fmt, dil)
    return p


# ---------------------------------------------------------------- one problem description on both sides

def c_struct_fields(name: str) -> list[tuple[str, str]]:
    text = (kernel_dir() / "common.cuh").read_text(encoding="ascii")
    body = re.search(r"struct\s+%s\s*\{(.*?)\};" % name, text, re.S).group(1)
    fields = []
    for line in body.splitlines():
        line = line.split("//")[0].strip().rstrip(";")
        if not line:
            continue
        ctype, names = re.match(r"(long long|int)\s+(.*)", line).groups()
        fields += [(n.strip(), ctype) for n in names.split(",")]
    return fields


@pytest.mark.parametrize("name,dtype", [("ConvProblem", CONV_PROBLEM_DTYPE), ("GemmProblem", GEMM_PROBLEM_DTYPE)])
def test_struct_fields_match_python(name, dtype):
    fields = c_struct_fields(name)
    assert [f for f, _ in fields] == list(dtype.names)
    sizes = {"long long": 8, "int": 4}
    assert [sizes[t] for _, t in fields] == [dtype.fields[n][0].itemsize for n in dtype.names]


def test_conv_problem_letters_are_the_python_letters():
    p = problem()
    s = conv_problem_struct(p)
    for name in CONV_PROBLEM_DTYPE.names:
        if hasattr(p, name):
            assert int(s[name]) == getattr(p, name), name


@needs_emulator
@pytest.mark.parametrize("name,dtype", [("ConvProblem", CONV_PROBLEM_DTYPE), ("GemmProblem", GEMM_PROBLEM_DTYPE)])
def test_struct_offsets_match_the_compiler(tmp_path, name, dtype):
    """The C compiler's offsetof/sizeof agree with NumPy's aligned structured dtype."""
    from gpuconv.backends.cuda.sources import cuda_include_dirs
    prog = tmp_path / "offsets.cpp"
    prints = "".join(f'printf("{f} %zu\\n", offsetof({name}, {f}));' for f in dtype.names)
    prog.write_text(f'#include <cstdio>\n#include <cstddef>\n{load_source("direct")}\n'
                    f'int main() {{ {prints} printf("sizeof %zu\\n", sizeof({name})); }}\n')
    exe = tmp_path / "offsets"
    subprocess.run([emulator.compiler(), "-std=c++17", "-w", "-include", str(kernel_dir() / "host" / "cuda_host.h"),
                    *[f"-I{d}" for d in cuda_include_dirs()], str(prog), "-o", str(exe)], check=True)
    out = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True).stdout.splitlines())
    assert {f: int(out[f]) for f in dtype.names} == {f: dtype.fields[f][1] for f in dtype.names}
    assert int(out["sizeof"]) == dtype.itemsize


# ---------------------------------------------------------------- signatures and argument checks

# Kernel files whose hardware takes fewer types: tensor cores have no float64 path here (why_not says so).
KERNEL_DTYPES = {"tensor_core_gemm": ("f16", "bf16", "f32")}


def test_every_kernel_has_every_dtype_and_index_variant():
    stems = [f.stem for f in kernel_files()]
    assert {"direct", "depthwise", "im2col", "gemm"} <= set(stems)
    for stem in stems:
        names = set(entries_of(stem))
        prefixes = {n.rsplit("_", 2)[0] for n in names}
        assert len(prefixes) == 1, f"{stem}.cu mixes entry point families: {prefixes}"
        (prefix,) = prefixes
        assert names == {f"{prefix}_{d}_i{b}" for d in KERNEL_DTYPES.get(stem, DTYPES) for b in (32, 64)}, stem
        for e in entries_of(stem).values():
            assert e.launch_bounds, f"{e.name} declares no __launch_bounds__"


def test_kernel_files_have_header_comments_and_overridable_tiles():
    for f in kernel_files():
        text = f.read_text(encoding="ascii")
        assert text.startswith(f"// {f.name} - "), f"{f.name}: header comment must say what it computes"
        for word in ("Launch", "Layouts" if f.stem != "gemm" else "Tiling"):
            assert word in text, f"{f.name}: header comment lacks {word!r}"
        for macro in re.findall(r"#define\s+([A-Z0-9_]+)\s+\d+", text):
            assert f"#ifndef {macro}" in text, f"{f.name}: tile macro {macro} is not overridable with -D"


def test_every_kernel_source_is_ascii():
    """NVRTC 12.2 + CuPy 13 fail on the second module load of a source with any non-ASCII byte."""
    files = [f for f in kernel_dir().rglob("*") if f.suffix in (".cu", ".cuh", ".h")]
    assert {"common.cuh", "cuda_host.h", "gemm.cu"} <= {f.name for f in files}
    for f in files:
        text = f.read_bytes()
        bad = [i + 1 for i, line in enumerate(text.splitlines()) if not line.isascii()]
        assert not bad, f"{f.name}: non-ASCII bytes on lines {bad}"


def test_reading_a_non_ascii_source_names_the_file_and_line(tmp_path):
    from gpuconv.backends.cuda.sources import inline_includes
    (tmp_path / "k.cu").write_text("// fine\n// k.cu \u2014 not fine\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"k.cu has a non-ASCII byte b'\\xe2' on line 2: kernel sources must be ASCII"):
        inline_includes(tmp_path / "k.cu")


@pytest.fixture
def no_wheel_headers(monkeypatch, tmp_path):
    """cuda_include_dirs() with no header wheels, CUDA_ROOT under tmp_path, CUDA_HOME/PATH unset."""
    from gpuconv.backends.cuda import sources
    monkeypatch.setattr(sources, "_wheel_include_dirs", lambda: [])
    monkeypatch.setattr(sources, "CUDA_ROOT", str(tmp_path / "cuda"))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    sources.cuda_include_dirs.cache_clear()
    yield sources
    sources.cuda_include_dirs.cache_clear()


def toolkit(root, cccl=False, headers=True):
    (root / "include" / "cccl").mkdir(parents=True) if cccl else (root / "include").mkdir(parents=True)
    if headers:
        (root / "include" / "cuda_fp16.h").write_text("")
    return str(root / "include")


def test_headers_fall_back_to_versioned_toolkits_newest_first(no_wheel_headers, tmp_path):
    toolkit(tmp_path / "cuda-12.9")
    new = toolkit(tmp_path / "cuda-13.0", cccl=True)
    toolkit(tmp_path / "cuda-9.2")
    assert no_wheel_headers.cuda_include_dirs() == (new, new + "/cccl")


def test_headers_prefer_cuda_home_then_the_default_toolkit(no_wheel_headers, tmp_path, monkeypatch):
    toolkit(tmp_path / "cuda-13.0")
    default = toolkit(tmp_path / "cuda")
    assert no_wheel_headers.cuda_include_dirs() == (default,)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "home"))
    toolkit(tmp_path / "home", headers=False)   # a CUDA_HOME without the headers is passed over
    monkeypatch.setenv("CUDA_PATH", str(tmp_path / "path"))
    path = toolkit(tmp_path / "path")
    no_wheel_headers.cuda_include_dirs.cache_clear()
    assert no_wheel_headers.cuda_include_dirs() == (path,)


def test_headers_from_wheels_win_and_missing_everywhere_is_explained(no_wheel_headers, tmp_path, monkeypatch):
    toolkit(tmp_path / "cuda")
    wheel = toolkit(tmp_path / "wheel")
    monkeypatch.setattr(no_wheel_headers, "_wheel_include_dirs", lambda: [wheel])
    assert no_wheel_headers.cuda_include_dirs() == (wheel,)
    monkeypatch.setattr(no_wheel_headers, "_wheel_include_dirs", lambda: [])
    (tmp_path / "cuda" / "include" / "cuda_fp16.h").unlink()
    no_wheel_headers.cuda_include_dirs.cache_clear()
    with pytest.raises(no_wheel_headers.CudaHeadersNotFound, match=r"gpuconv\[cuda13\].*Looked in: \[.*cuda/include"):
        no_wheel_headers.cuda_include_dirs()


@pytest.mark.parametrize("extra,major,parts", [("cuda13", 13, {"nvrtc", "cudart", "crt", "cccl"}),
                                               ("cuda12", 12, {"nvrtc", "cudart", "cccl"})])
def test_cuda_extras_take_nvrtc_and_headers_from_one_toolkit_release(extra, major, parts):
    from pathlib import Path

    from packaging.requirements import Requirement
    tomllib = pytest.importorskip("tomllib", reason="Python 3.10 has no tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in pyproject["project"]["optional-dependencies"][extra]]
    assert not [r.name for r in reqs if r.name.startswith("nvidia-")], "header wheels pinned one by one drift apart"
    (toolkit_req,) = [r for r in reqs if r.name == "cuda-toolkit"]
    assert toolkit_req.extras == parts
    assert f"{major}.9" in toolkit_req.specifier and f"{major + 1}.0" not in toolkit_req.specifier
    assert "cuda-pathfinder" in {r.name for r in reqs}


def test_parse_entries_reads_types():
    e = parse_entries('extern "C" __global__ void __launch_bounds__(128) k(const ConvProblem p, '
                      'const __half* __restrict__ x, float* y, int n, long long m) {}')["k"]
    assert e.launch_bounds == "128"
    assert [(p.name, p.ctype, p.pointer, p.const) for p in e.params] == [
        ("p", "ConvProblem", False, False), ("x", "__half", True, True), ("y", "float", True, False),
        ("n", "int", False, False), ("m", "long long", False, False)]


def test_parse_entries_rejects_unknown_types():
    with pytest.raises(ValueError, match=r"kernel k: parameter 'z' has C type 'float2'"):
        parse_entries('extern "C" __global__ void k(float2 z) {}')


@pytest.fixture
def direct_entry():
    return entries_of("direct")["conv_direct_f32_i32"]


def good_args():
    p = problem()
    return [conv_problem_struct(p), np.zeros(p.input_shape, np.float32), np.zeros(p.filter_shape, np.float32),
            np.zeros(p.output_shape, np.float32), np.int32(6)]


@pytest.mark.parametrize("index,value,message", [
    (4, 6, r"parameter CC \(int\): expected a NumPy scalar of int32 \(a Python int would be passed as a 64-bit integer"),
    (4, np.int64(6), r"parameter CC \(int\): expected a NumPy scalar of int32, got int64"),
    (4, 6.0, r"parameter CC .*a Python float would be passed as a double"),
    (1, np.zeros((2, 9, 11, 6), np.float64), r"parameter x \(const float\*\): expected an array of float32, got float64"),
    (1, np.float32(1), r"parameter x \(const float\*\): expected an array, got float32"),
    (3, np.zeros((2, 9, 11, 5), np.float32)[:, ::2], r"parameter y .* must be C-contiguous"),
    (0, np.zeros((), GEMM_PROBLEM_DTYPE)[()], r"parameter p \(ConvProblem\): expected struct dtype"),
])
def test_check_args_names_kernel_and_parameter(direct_entry, index, value, message):
    args = good_args()
    args[index] = value
    with pytest.raises(TypeError if "contiguous" not in message else ValueError,
                       match=r"kernel conv_direct_f32_i32, " + message):
        check_args(direct_entry, tuple(args))


def test_check_args_rejects_read_only_output_and_wrong_count(direct_entry):
    args = good_args()
    args[3].flags.writeable = False
    with pytest.raises(ValueError, match="parameter y .* writes this array but it is read-only"):
        check_args(direct_entry, tuple(args))
    with pytest.raises(TypeError, match=r"takes 5 arguments \(p, x, w, y, CC\), got 4"):
        check_args(direct_entry, tuple(good_args()[:4]))
    check_args(direct_entry, tuple(good_args()))  # and the right arguments pass


def test_launch_check_rejects_unknown_kernel_and_bad_grid():
    with pytest.raises(ValueError, match="not an entry point of direct.cu"):
        Launch("direct", "conv_direct_f32_i16", (1, 1, 1), (256, 1, 1), 0, tuple(good_args())).check()
    with pytest.raises(ValueError, match="grid dimension y=70000 outside 1..65535"):
        Launch("direct", "conv_direct_f32_i32", (1, 70000, 1), (256, 1, 1), 0, tuple(good_args())).check()


def gemm_args(dtype=np.float64):
    q = np.zeros((), GEMM_PROBLEM_DTYPE)[()]
    return (q, np.zeros(4, dtype), np.zeros(4, dtype), np.zeros(4, dtype))


@pytest.mark.parametrize("block,message", [
    ((2048, 1, 1), r"block dimension x=2048 outside 1..1024"),
    ((16, 16, 65), r"block dimension z=65 outside 1..64"),
    ((32, 32, 2), r"block \(32, 32, 2\) has 2048 threads, more than the 1024 a block may have"),
    ((256, 1, 1), r"block \(256, 1, 1\) has 256 threads, more than its __launch_bounds__\(128\) allows"),
])
def test_launch_check_refuses_blocks_a_gpu_refuses(block, message):
    with pytest.raises(ValueError, match=r"kernel conv_direct_f32_i32: " + message):
        Launch("direct", "conv_direct_f32_i32", (1, 1, 1), block, 0, tuple(good_args())).check()


def test_launch_check_refuses_shared_memory_a_gpu_refuses():
    big = DeviceLimits(threads_per_block=1024, shared_optin=227 * 1024)
    gemm = Launch("gemm", "conv_gemm_f64_i32", (1, 1, 1), (256, 1, 1), 40000, gemm_args())
    with pytest.raises(ValueError, match=r"16896 bytes of static \+ 40000 of dynamic shared memory exceed the "
                                         r"49152 bytes a block may use on this device"):
        gemm.check()   # the emulator's limits: what every GPU gives
    with pytest.raises(ValueError, match=r"exceed 49152 bytes, which needs the kernel's max_dynamic_shared_size_bytes"):
        gemm.check(limits=big)
    gemm.check(limits=big, opt_in=True)
    assert gemm.needs_opt_in()
    with pytest.raises(ValueError, match=r"exceed the 232448 bytes"):
        Launch("gemm", "conv_gemm_f64_i32", (1, 1, 1), (256, 1, 1), 227 * 1024 - 16000, gemm_args()).check(
            limits=big, opt_in=True)


def test_static_shared_memory_and_launch_bounds_follow_the_macros():
    # gemm.cu's header: (GEMM_BK*(GEMM_BM+GEMM_PAD) + GEMM_BK*GEMM_BN) accumulator elements
    assert compiled_limits("gemm", "conv_gemm_f64_i64").static_shared == (16 * 68 + 16 * 64) * 8
    assert compiled_limits("gemm", "conv_gemm_f16_i32").static_shared == (16 * 68 + 16 * 64) * 4
    small = compiled_limits("gemm", "conv_gemm_f32_i32", (("GEMM_BM", 32), ("GEMM_TM", 2), ("GEMM_BK", 8)))
    assert small == type(small)(max_threads=16 * 16, static_shared=(8 * 36 + 8 * 64) * 4)
    assert compiled_limits("direct", "conv_direct_f32_i32", (("DIRECT_TILE_K", 8),)).max_threads == 8 * 4 * 2
    assert compiled_limits("direct", "conv_direct_f64_i32").static_shared == 0   # dynamic only


def test_macro_expressions_evaluate_like_c_and_refuse_the_rest():
    from gpuconv.backends.cuda.cexpr import evaluate, macro_table
    macros = macro_table("#ifndef A\n#define A 8\n#endif\n#define B (A * 3 / 2 + 16u)  // note\n"
                         "#define F(x) (x)\n#define C (B % 5 - A)\n", (("A", 10),))
    assert (evaluate("B", macros), evaluate("C", macros), evaluate("-A", macros)) == (31, -9, -10)
    assert "F" not in macros                                # function-like macros are not values
    with pytest.raises(ValueError, match=r"cannot evaluate 'B \+ D': D is not an object-like macro"):
        evaluate("B + D", macros)
    with pytest.raises(ValueError, match=r"cannot evaluate 'A << 2': only integers"):
        evaluate("A << 2", macros)
    with pytest.raises(ValueError, match=r"does not terminate"):
        evaluate("L", {"L": "L + 1"})


def test_static_shared_memory_and_launch_bounds_match_ptxas():
    from gpuconv.backends.cuda import nvrtc, report
    from gpuconv.backends.cuda.sources import kernel_path
    if nvrtc.available() is not None:
        pytest.skip(f"NVRTC not installed: {nvrtc.available()}")
    for stem in ("gemm", "direct"):
        rep = report.compile_one(kernel_path(stem), "sm_80")
        assert rep.error is None, rep.error
        compiled = {f.name: f for f in rep.functions if f.entry}
        assert set(compiled) == set(entries_of(stem))
        for name, f in compiled.items():
            assert (f.threads, f.smem) == (compiled_limits(stem, name).max_threads,
                                           compiled_limits(stem, name).static_shared), name


# ---------------------------------------------------------------- 32- or 64-bit indexing

def test_index_bits_boundary():
    assert index_bits(2 ** 31 - 1, 10) == 32
    assert index_bits(10, 2 ** 31) == 64
    assert index_bits(10, force64=True) == 64
    assert index_bits() == 32


def test_depthwise_index_width_follows_the_largest_array():
    """The depthwise loops walk pixel groups (a quarter of the outputs or fewer), so the arrays decide:
    an output past 2^31 elements takes the 64-bit variant, one just below keeps the 32-bit one."""
    depthwise = get_backend("emulator").algorithms()["depthwise"]
    assert depthwise.plan(problem((330, 300, 300, 80), (3, 3, 1, 80)))[2] == 64
    assert depthwise.plan(problem((300, 300, 300, 64), (3, 3, 1, 64)))[2] == 32


def test_im2col_loop_end_over_a_large_workspace_counts(monkeypatch):
    monkeypatch.setattr(config.settings, "cuda_workspace_bytes", 8 * 10 ** 9)
    gemm = get_backend("emulator").algorithms()["gemm"]
    mc, blocks, threads, bits = gemm.plan(problem((1, 2000, 2000, 64), (3, 3, 64, 64)))
    assert mc * 576 < 2 ** 31 - 1 < mc * 576 - 1 + blocks * threads   # the workspace alone fits int32
    assert bits == 64


def test_gemm_refuses_rows_whose_last_tile_overflows_int():
    gemm1x1 = get_backend("emulator").algorithms()["gemm1x1"]
    p = problem((1, 1, 2 ** 31 - 10, 4), (1, 1, 4, 4), padding="VALID")   # M fits, M rounded to 64 does not
    assert "rows of whole tiles = 2147483648 overflows gemm.cu's 32-bit int indices" in gemm1x1.why_not(p)
    assert gemm1x1.why_not(problem((1, 1, 2 ** 31 - 64, 4), (1, 1, 4, 4), padding="VALID")) is None


@needs_emulator
@pytest.mark.parametrize("algorithm", ["direct", "gemm", "gemm1x1", "depthwise"])
@pytest.mark.parametrize("force64", [False, True])
def test_index_variant_is_chosen_and_correct(monkeypatch, algorithm, force64):
    backend = get_backend("emulator")
    rec = Recorder(monkeypatch, backend)
    monkeypatch.setattr(config.settings, "cuda_force_index64", force64)
    rng = np.random.default_rng(1)
    ws = {"gemm1x1": (1, 1, 6, 5), "depthwise": (3, 3, 1, 12)}.get(algorithm, (3, 3, 6, 5))
    x = rng.integers(-3, 4, (2, 7, 8, 6)).astype(np.float32)
    w = rng.integers(-3, 4, ws).astype(np.float32)
    pad = "VALID" if algorithm == "gemm1x1" else "SAME"
    y = gpuconv.conv2d(x, w, padding=pad, backend="emulator", algorithm=algorithm)
    p = problem(x.shape, ws, padding=pad)
    np.testing.assert_array_equal(y, gpuconv.conv2d_reference(x, w, p))
    suffixes = {launch.kernel.rsplit("_", 1)[1] for launch in rec.launches}
    assert suffixes == {"i64" if force64 else "i32"}


# ---------------------------------------------------------------- what algorithms can and cannot run

def test_direct_refuses_what_does_not_fit_shared_memory_and_auto_falls_through():
    be = get_backend("emulator")
    p = problem((1, 200, 200, 2), (31, 31, 2, 4), dil=3, dtype=np.float64)
    why = be.algorithms()["direct"].why_not(p)
    assert why is not None and "shared memory" in why
    assert be.choose(p).name == "implicit_gemm"


def test_gemm_refuses_rows_beyond_the_workspace(monkeypatch):
    monkeypatch.setattr(config.settings, "cuda_workspace_bytes", 1000)
    p = problem((1, 8, 8, 64), (3, 3, 64, 64))
    assert "workspace bound of 1000 bytes" in get_backend("emulator").algorithms()["gemm"].why_not(p)


def test_auto_rule_documented_and_followed():
    be = get_backend("emulator")
    assert be.choose(problem((1, 8, 8, 16), (1, 1, 16, 32), padding="VALID")).name == "implicit_gemm"
    assert be.choose(problem((1, 8, 8, 3), (3, 3, 3, 16))).name == "direct"        # first layer: R = 27
    assert be.choose(problem((1, 8, 8, 16), (3, 3, 1, 16))).name == "depthwise"    # one channel per group
    assert be.choose(problem((1, 8, 8, 16), (3, 3, 2, 16))).name == "direct"       # small groups
    assert be.choose(problem((1, 8, 8, 64), (3, 3, 64, 64))).name == "implicit_gemm"  # deep layer
    # few outputs over a long reduction (the filter gradient's forward problem): split-K, not direct
    p = problem((4, 14, 14, 32), (14, 14, 2, 16), padding="VALID")
    assert p.R == 392 and be.choose(p).name == "implicit_gemm"
    assert be.choose(problem((4, 14, 14, 32), (1, 14, 2, 16), padding="VALID")).name == "direct"  # R = 28
    assert "implicit_gemm" in be.auto_rule() and "direct" in be.auto_rule() and "split-K" in be.auto_rule()


@needs_emulator
def test_gemm_in_small_workspace_chunks_matches(monkeypatch):
    backend = get_backend("emulator")
    rec = Recorder(monkeypatch, backend)
    rng = np.random.default_rng(2)
    x = rng.integers(-2, 3, (2, 6, 7, 4)).astype(np.float32)
    w = rng.integers(-2, 3, (3, 3, 2, 6)).astype(np.float32)   # G = 2
    monkeypatch.setattr(config.settings, "cuda_workspace_bytes", 2 * 18 * 4 * 10)  # 10 rows per chunk
    y = gpuconv.conv2d(x, w, padding="SAME", data_format="NHWC", backend="emulator", algorithm="gemm")
    np.testing.assert_array_equal(y, gpuconv.conv2d_reference(x, w, problem(x.shape, w.shape)))
    assert sum(launch.file == "im2col" for launch in rec.launches) == -(-2 * 6 * 7 // 10)


# ---------------------------------------------------------------- emulator semantics

RACY = r'''
#include "common.cuh"
// Thread t publishes t*t, then reads its neighbour's value. Without the barrier, what it reads
// depends on whether the neighbour ran first: a race.
extern "C" __global__ void __launch_bounds__(64) neighbour(float* out, int sync) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = float(t * t);
    if (sync) __syncthreads();
    out[blockIdx.x * 64 + t] = s[(t + 1) % 64];
}
extern "C" __global__ void __launch_bounds__(64) early_exit(float* out) {
    __shared__ float s[64];
    if (threadIdx.x == 0) return;
    s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}
'''


@pytest.fixture(scope="module")
def racy_module(tmp_path_factory):
    if EMULATOR_REASON is not None:
        pytest.skip(f"emulator unusable: {EMULATOR_REASON}")
    # common.cuh comes from kernels/; the test kernel is compiled like any kernel file.
    source = RACY.replace('#include "common.cuh"', load_source("direct").split("#ifndef DIRECT_TILE_OH")[0])
    return emulator.EmulatedModule("racy_test", source)


def run_neighbour(module, sync, seed, shuffle):
    out = np.zeros(3 * 64, np.float32)
    module.launch(Launch("racy_test", "neighbour", (3, 1, 1), (64, 1, 1), 0, (out, np.int32(sync))),
                  seed=seed, shuffle=shuffle)
    return out


def test_barrier_makes_the_exchange_correct_in_any_order(racy_module):
    expected = np.tile(((np.arange(64) + 1) % 64) ** 2, 3).astype(np.float32)
    for seed in range(4):
        np.testing.assert_array_equal(run_neighbour(racy_module, 1, seed, True), expected)


def test_shuffled_order_exposes_a_missing_barrier(racy_module):
    results = {run_neighbour(racy_module, 0, seed, True).tobytes() for seed in range(6)}
    assert len(results) > 1, "a race must show as results that change between seeds"


def test_barrier_with_exited_threads_is_reported(racy_module):
    out = np.zeros(64, np.float32)
    with pytest.raises(RuntimeError, match=r"early_exit failed in the emulator: synccheck: __syncthreads\(\) reached by 63 of 64"):
        racy_module.launch(Launch("racy_test", "early_exit", (1, 1, 1), (64, 1, 1), 0, (out,)))


@needs_emulator
def test_compile_error_is_reported_with_the_compiler_output():
    with pytest.raises(RuntimeError, match=r"compiling broken.cu for the emulator failed(.|\n)*not_declared"):
        emulator.EmulatedModule("broken", 'extern "C" __global__ void k(float* y) { y[0] = not_declared; }')


@needs_emulator
@pytest.mark.parametrize("algorithm,ws,padding", [("direct", (3, 3, 5, 7), "SAME"), ("gemm", (3, 3, 5, 7), "SAME"),
                                                  ("gemm1x1", (1, 1, 5, 7), "VALID"),
                                                  ("depthwise", (3, 3, 1, 10), "SAME")])
def test_shuffled_mode_gives_identical_results_for_the_real_kernels(algorithm, ws, padding):
    """Every kernel synchronises correctly: any thread order between barriers gives the same bits."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 10, 5)).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    p = problem(x.shape, w.shape, padding=padding)
    runs = [emulator.EmulatorBackend(seed=seed).run(p, x, w, algorithm) for seed in (None, 11, 12)]
    for r in runs[1:]:
        np.testing.assert_array_equal(runs[0], r)
    tolerances_ok = np.abs(runs[0] - gpuconv.conv2d_reference(x, w, p)).max() < 1e-4
    assert tolerances_ok


# ---------------------------------------------------------------- the cupy backend on this host

def test_cupy_backend_reports_why_it_is_unusable_here():
    why = available_backends()["cupy"]
    if why is None:
        pytest.skip("a CUDA device is usable here")
    assert "CuPy" in why or "CUDA" in why or "cuda" in why


@pytest.mark.skipif(available_backends()["cupy"] is not None, reason=f"no CUDA device: {available_backends()['cupy']}")
def test_more_than_2_31_elements_on_the_gpu():
    import cupy
    x = cupy.ones((1, 2 ** 15 + 8, 2 ** 15, 2), cupy.float16)  # 2^31 + 2^19 elements
    w = cupy.ones((1, 1, 2, 1), cupy.float16)
    y = gpuconv.conv2d(x, w, backend="cupy", algorithm="gemm1x1")
    assert y.shape == (1, 2 ** 15 + 8, 2 ** 15, 1)
    assert float(y[0, -1, -1, 0]) == 2.0 and float(y[0, 0, 0, 0]) == 2.0


@needs_emulator
def test_out_of_bounds_write_is_caught():
    """The emulator's guard bytes catch a launch that writes past its output: here the direct kernel
    gets an output array 8 elements shorter than the problem needs."""
    be = emulator.EmulatorBackend()
    direct = be.algorithms()["direct"]
    p = problem((1, 8, 8, 4), (3, 3, 4, 16))
    x = np.ones(p.input_shape, np.float32)
    w = np.ones(p.filter_shape, np.float32)
    short = be.xp.empty((p.M * p.K - 8,), np.float32)
    launch = Launch("direct", "conv_direct_f32_i32", direct.grid(p), (direct.threads, 1, 1), direct.shared_bytes(p, 4),
                    (conv_problem_struct(p), x, w, short, np.int32(4)))
    with pytest.raises(RuntimeError, match="conv_direct_f32_i32 (wrote after the end of its 'y' array"
                       # under GPUCONV_EMULATOR_SANITIZE, memcheck stops the write before the guard sees it
                       "|failed in the emulator: memcheck: out-of-bounds write of argument 'y')"):
        be.launch(launch)


@needs_emulator
@pytest.mark.parametrize("algorithm,defines", [
    ("direct", (("DIRECT_TILE_OH", 4), ("DIRECT_TILE_OW", 16), ("DIRECT_TILE_K", 8), ("DIRECT_THREAD_K", 2))),
    ("gemm", (("GEMM_BM", 32), ("GEMM_BN", 32), ("GEMM_BK", 8), ("GEMM_TM", 2), ("GEMM_TN", 4),
              ("IM2COL_THREADS", 128))),
    ("depthwise", (("DEPTHWISE_THREADS", 64),)),
])
def test_tile_macros_overridden_with_D_stay_consistent(monkeypatch, algorithm, defines):
    """Launch geometry and shared memory come from the macros the kernel is compiled with, so a -D
    override changes both sides together and the result stays exact."""
    be = emulator.EmulatorBackend()
    algo = be.algorithms()[algorithm]
    monkeypatch.setattr(algo, "defines", defines)
    rec = Recorder(monkeypatch, be)
    rng = np.random.default_rng(7)
    ws = (3, 3, 1, 10) if algorithm == "depthwise" else (3, 3, 5, 9)
    x = rng.integers(-3, 4, (2, 9, 11, 5)).astype(np.float32)
    w = rng.integers(-3, 4, ws).astype(np.float32)
    p = problem(x.shape, ws, strides=(1, 2))
    np.testing.assert_array_equal(be.run(p, x, w, algorithm), gpuconv.conv2d_reference(x, w, p))
    launches = [launch for launch in rec.launches if not launch.file.startswith("nonfinite")]  # the backend's
    # each file gets its own macros (a gemm tile change does not rebuild im2col)
    assert launches and all(launch.defines == tuple(d for d in defines if d[0] in default_macros(launch.file))
                            for launch in launches)
    assert {d for launch in launches for d in launch.defines} == set(defines)
    if algorithm == "direct":
        assert launches[0].block == (4 * (16 // 4) * (8 // 2), 1, 1)   # DIRECT_THREAD_OW = 4
    if algorithm == "gemm":
        assert {launch.block for launch in launches} == {(128, 1, 1)}   # 32/2 * 32/4 and IM2COL_THREADS


@needs_emulator
def test_concurrent_emulator_calls_from_threads():
    """ctypes releases the GIL during a launch; concurrent callers must not share the fiber runtime."""
    assert_exact_from_threads(integer_cases(8, 6, (2, 7, 8, 6), (3, 3, 6, 5)), threads=3, algorithm="direct")
