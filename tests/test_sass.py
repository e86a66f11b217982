"""The SASS hot-loop report (`gpuconv kernels --sass`): parsing nvdisasm's text, loops, instruction mix.

tests/fixtures/sass_tiny_sm90.sass is nvdisasm 13.5's output for tests/fixtures/sass_tiny.cu compiled
by NVRTC 13.5 for sm_90; the counts below were read off that text by hand. The end-to-end tests
compile gpuconv's own gemm.cu and need NVRTC and nvdisasm.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from gpuconv import cli
from gpuconv.backends.cuda import nvrtc, report, sass

FIXTURE = Path(__file__).parent / "fixtures" / "sass_tiny_sm90.sass"


@pytest.fixture(scope="module")
def tiny():
    return sass.parse_sass(FIXTURE.read_text())


def _addr(fn, index):
    return fn.instructions[index].address


# ---------------------------------------------------------------- parsing

def test_parse_functions_instructions_labels(tiny):
    assert list(tiny) == ["straight", "half_loop", "staged"]
    assert all(fn.entry for fn in tiny.values())
    straight, half, staged = tiny["straight"], tiny["half_loop"], tiny["staged"]
    # addresses step by 16 bytes from 0: the padding NOPs after EXIT are instructions too
    assert [x.address for x in straight.instructions] == list(range(0, 0x180, 0x10))
    assert len(half.instructions) == 0x280 // 0x10 and len(staged.instructions) == 0x480 // 0x10
    dfma = straight.instructions[10]
    assert (dfma.opcode, dfma.base, dfma.operands, dfma.predicate) == ("DFMA", "DFMA", "R6, R2, R4, 1", "")
    branch = half.instructions[half.labels[".L_x_2"] + 11]
    assert (branch.opcode, branch.predicate, branch.target, branch.address) == ("BRA", "@!P0", ".L_x_2", 0x180)
    assert _addr(staged, staged.labels[".L_x_8"]) == 0xE0 and _addr(staged, staged.labels[".L_x_7"]) == 0x1B0
    assert staged.instructions[staged.labels[".L_x_7"] + 2].opcode == "LDG.E.128.CONSTANT"


def test_non_entry_functions_are_parsed_but_not_reported():
    text = FIXTURE.read_text().replace('.other          half_loop,@"STO_CUDA_ENTRY STV_DEFAULT"', "")
    fns = sass.parse_sass(text)
    assert not fns["half_loop"].entry and fns["staged"].entry
    assert set(sass.entry_hot_loops(text)) == {"straight", "staged"}


# ---------------------------------------------------------------- loops

def test_loops_of_the_staged_kernel(tiny):
    fn = tiny["staged"]
    loops = sass.find_loops(fn)
    # the outer loop 0xe0..0x380 (43 instructions) nests the staging loop 0x1b0..0x260 (12); the
    # `BRA .L_x_9` to itself after EXIT is unreachable padding, not a loop
    assert [(_addr(fn, lp.header), len(lp.instructions)) for lp in loops] == [(0xE0, 43), (0x1B0, 12)]
    assert [[_addr(fn, i) for i in lp.back_edges] for lp in loops] == [[0x380], [0x260]]
    outer, inner = loops
    assert sass.nested(outer, loops) == [inner] and sass.nested(inner, loops) == []
    assert len(sass.own_instructions(outer, loops)) == 31


def test_no_loop_and_unreachable_self_branch(tiny):
    assert sass.find_loops(tiny["straight"]) == []
    assert sass.hot_loop(tiny["straight"]) is None


def test_hot_loop_is_the_loop_doing_the_fmas_not_the_staging_loop(tiny):
    hot = sass.hot_loop(tiny["staged"])
    m = hot.mix
    assert (hot.header_address, hot.nested_loops, hot.nested_length) == (0xE0, 1, 12)
    assert (m.length, m.fma["FFMA"], m.fma_count, m.shared_loads, m.global_loads, m.other) == (
        31, 4, 4, {"LDS.128": 1}, {}, 26)
    assert m.fma_share == pytest.approx(4 / 31)
    assert (m.first_address, m.last_address) == (0xE0, 0x380)
    assert m.opcodes["FFMA"] == 4 and m.opcodes["BAR"] == 2 and sum(m.opcodes.values()) == 31


def test_hot_loop_of_the_half_kernel(tiny):
    hot = sass.hot_loop(tiny["half_loop"])
    m = hot.mix
    assert (hot.header_address, hot.nested_loops, m.length) == (0xD0, 0, 12)
    # HFMA2.MMA R11, R2, R6, R11 counts; the `HFMA2.MMA R11, -RZ, RZ, 0, 0` before the loop is a move
    assert m.fma == {"FFMA": 0, "HFMA2": 1, "DFMA": 0, "HMMA": 0, "HGMMA": 0}
    assert (m.global_loads, m.shared_loads, m.other) == ({"LDG.E.CONSTANT": 2}, {}, 9)
    zero = tiny["half_loop"].instructions[6]
    assert zero.opcode == "HFMA2.MMA" and sass.category(zero) == "other"


# Hand-written: an outer loop with 3 FFMAs of its own holding a loop with one, then two innermost
# loops side by side, the second with more FMAs. Addresses as nvdisasm prints them.
SELECTION = textwrap.dedent("""\
    \t.section\t.text.pick,"ax",@progbits
            .other          pick,@"STO_CUDA_ENTRY STV_DEFAULT"
    .L_x_0:
            /*0000*/                   FFMA R1, R2, R3, R1 ;
            /*0010*/                   FFMA R1, R2, R3, R1 ;
    .L_x_1:
            /*0020*/                   FFMA R4, R2, R3, R4 ;
            /*0030*/                   LDS.64 R2, [R0] ;
            /*0040*/               @P0 BRA `(.L_x_1) ;
            /*0050*/                   FFMA R1, R2, R3, R1 ;
            /*0060*/               @P1 BRA `(.L_x_0) ;
    .L_x_2:
            /*0070*/                   DFMA R6, R2, R4, R6 ;
            /*0080*/              @!P2 BRA `(.L_x_2) ;
    .L_x_3:
            /*0090*/                   HFMA2 R8, R9.H0_H0, R10, R8 ;
            /*00a0*/                   HFMA2 R8, R9, -RZ, R8 ;
            /*00b0*/                   HFMA2 R8, R9, R10, R8 ;
            /*00c0*/                   LDG.E.U16 R9, desc[UR4][R2.64] ;
            /*00d0*/                   BRA `(.L_x_3) ;
            /*00e0*/                   EXIT ;
    """)


def test_hot_loop_selection_rules():
    fn = sass.parse_sass(SELECTION)["pick"]
    loops = sass.find_loops(fn)
    assert [(_addr(fn, lp.header), len(lp.instructions)) for lp in loops] == [(0, 7), (0x20, 3), (0x70, 2),
                                                                              (0x90, 5)]
    hot = sass.hot_loop(fn)
    # the innermost loops with FMAs beat the outer loop's 3; of those, 2 HFMA2 (the third has a zero
    # multiplicand) beat 1 DFMA and 1 FFMA
    assert hot.header_address == 0x90
    assert hot.mix.fma["HFMA2"] == 2 and hot.mix.global_loads == {"LDG.E.U16": 1} and hot.mix.length == 5
    assert sass.load_bits("LDG.E.U16") == 16


def test_without_fma_the_longest_innermost_loop_is_reported():
    text = SELECTION.replace("FFMA", "FMUL").replace("DFMA", "DMUL").replace("HFMA2", "HMUL2")
    hot = sass.hot_loop(sass.parse_sass(text)["pick"])
    assert hot.header_address == 0x90 and hot.mix.fma_count == 0 and hot.mix.fma_share == 0


@pytest.mark.parametrize("opcode, bits", [("LDS", 32), ("LDS.64", 64), ("LDS.U.128", 128), ("LDG.E", 32),
                                          ("LDG.E.128.CONSTANT", 128), ("LDG.E.S8", 8), ("LDG.E.64", 64)])
def test_load_bits(opcode, bits):
    assert sass.load_bits(opcode) == bits


@pytest.mark.parametrize("line, kind", [
    ("FFMA R1, R2, R3, R1", "fma"), ("FFMA R1, -RZ, R3, R1", "other"), ("HMMA.16816.F32 R0, R4, R8, R0", "fma"),
    ("DFMA R6, R2, |R4|, 1", "fma"), ("LDS.U.128 R4, [R0]", "shared load"), ("LDSM.16.M88.4 R4, [R0]", "shared load"),
    ("LDGSTS.E.128 [R0], desc[UR4][R2.64]", "global load"), ("STS.128 [R12], R4", "other"),
    ("LDC R1, c[0x0][0x28]", "other"), ("LDL R1, [R1]", "other")])
def test_category(line, kind):
    opcode, _, operands = line.partition(" ")
    assert sass.category(sass.Instruction(0, opcode, operands)) == kind


def test_nvdisasm_is_found_from_the_wheel_without_pathfinder(monkeypatch):
    import cuda.pathfinder

    if sass._from_wheel() is None:
        pytest.skip("the nvidia-cuda-nvdisasm wheel is not installed")
    monkeypatch.delattr(cuda.pathfinder, "find_nvidia_binary_utility", raising=False)  # as in older releases
    monkeypatch.setenv("PATH", "")
    sass.nvdisasm_path.cache_clear()
    try:
        path = sass.nvdisasm_path()
    finally:
        monkeypatch.undo()
        sass.nvdisasm_path.cache_clear()
    assert Path(path).name == "nvdisasm" and Path(path).parent.name == "bin"


def test_disassemble_rejects_what_is_not_a_cubin():
    with pytest.raises(ValueError, match="cubin is not allowed"):
        sass.disassemble(b"// PTX text, not an ELF")


def test_missing_nvdisasm_says_how_to_install(monkeypatch, capsys):
    import cuda.pathfinder

    monkeypatch.setattr(cuda.pathfinder, "find_nvidia_binary_utility", lambda name: None, raising=False)
    monkeypatch.setattr(sass, "_from_wheel", lambda: None)
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    sass.nvdisasm_path.cache_clear()
    try:
        assert "pip install nvidia-cuda-nvdisasm" in sass.available()
        rc = cli.main(["kernels", "gemm", "--arch", "sm_90", "--sass"])
    finally:
        monkeypatch.undo()
        sass.nvdisasm_path.cache_clear()
    assert rc == 1 and "error: nvdisasm (CUDA's SASS disassembler) was not found" in capsys.readouterr().err


# ---------------------------------------------------------------- end to end on gpuconv's gemm.cu

needs_tools = pytest.mark.skipif(nvrtc.available() is not None or sass.available() is not None,
                                 reason=f"needs NVRTC and nvdisasm: {nvrtc.available() or sass.available()}")


@needs_tools
def test_gemm_f32_hot_loop_is_ffma_dominated_with_shared_loads(tmp_path, capsys):
    out = tmp_path / "k.json"
    rc = cli.main(["kernels", "gemm", "--arch", "sm_90", "--sass", "--quiet", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "SASS hot loops" in text and "conv_gemm_f32_i32" in text
    rows = {(r["function"], r["arch"]): r["hot_loop"] for r in json.loads(out.read_text())["sass"]}
    assert set(rows) == {(f"conv_gemm_{t}_{i}", "sm_90") for t in ("f16", "bf16", "f32", "f64") for i in ("i32", "i64")}
    loop = rows["conv_gemm_f32_i32", "sm_90"]
    # the 4x4 register tile times GEMM_BK=16, fully unrolled: FFMA is the loop's most frequent opcode
    assert loop["fma"]["FFMA"] == loop["fma_count"] >= 64
    assert next(iter(loop["opcodes"])) == "FFMA"
    assert sum(n for op, n in loop["shared_loads"].items() if op.startswith("LDS")) > 0
    assert loop["nested_loops"] >= 1  # the tile-staging loops inside the k-loop
    assert 0 < loop["fma_share"] < 1
    assert rows["conv_gemm_f64_i32", "sm_90"]["fma"]["DFMA"] == loop["fma"]["FFMA"]


@needs_tools
def test_sass_defaults_to_sm80_and_sm90(tmp_path):
    path = tmp_path / "tiny.cu"
    path.write_text((Path(__file__).parent / "fixtures" / "sass_tiny.cu").read_text())
    reports = report.compile_report([path], report.ARCHS)
    rows = report.sass_report(reports)
    assert {r.arch for r in rows} == set(sass.SASS_ARCHS) == {"sm_80", "sm_90"}
    by = {(r.function, r.arch): r.loop for r in rows}
    assert by["straight", "sm_80"] is None and by["half_loop", "sm_80"].mix.fma["HFMA2"] >= 1
    assert by["staged", "sm_90"].nested_loops == 1 and by["staged", "sm_90"].mix.fma["FFMA"] == 4
