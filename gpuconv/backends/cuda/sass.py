"""`gpuconv kernels --sass`: the instruction mix of each entry point's innermost hot loop, from SASS.

The cubin NVRTC builds for a real architecture is disassembled with nvdisasm (pip wheel
nvidia-cuda-nvdisasm, or a CUDA toolkit). For every entry point we rebuild the control-flow graph
from the disassembly: basic blocks split at labels and after branches, edges for fall-through and
for branch targets. A branch to an address at or before its own is a back edge; its natural loop
is the target (the header) plus every block that reaches the branch without passing the header.
Back edges to one header make one loop. The hot loop is the innermost loop that does multiply-adds
(see hot_loop): its own instructions, nested loops excluded, make the mix.

The mix is static (each instruction counted once, as laid out), which is what bounds a loop's
throughput: a warp scheduler issues at most one instruction per cycle, so the FMA share of the loop
is the fraction of issue slots doing arithmetic that counts towards peak FLOP/s.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import tempfile
from typing import Iterable, Optional

# the archs `--sass` reports when no --arch is given: one Ampere, one Hopper
SASS_ARCHS = ("sm_80", "sm_90")

INSTALL_HELP = ("nvdisasm (CUDA's SASS disassembler) was not found. Install it with "
                "`pip install nvidia-cuda-nvdisasm` (or `pip install \"gpuconv[test]\"`), or install a CUDA "
                "toolkit and put its bin/ on PATH.")

# Opcodes whose every lane does multiply-adds: the FLOP/s of the loop. HGMMA is Hopper's warpgroup MMA.
FMA_OPCODES = ("FFMA", "HFMA2", "DFMA", "HMMA", "HGMMA")
# Control transfers to a label; the register-indirect ones (BRX, JMX) have no label we can follow.
_BRANCHES = {"BRA", "BRX", "JMP", "JMX"}
_NO_FALLTHROUGH = _BRANCHES | {"EXIT", "RET", "KILL"}


class NvdisasmNotFound(RuntimeError):
    pass


class NvdisasmError(RuntimeError):
    """nvdisasm ran and failed (e.g. a cubin for an architecture it does not know)."""


def _from_wheel() -> Optional[str]:
    """nvdisasm inside the nvidia-cuda-nvdisasm wheel, found from the wheel's own file list."""
    try:
        files = importlib.metadata.distribution("nvidia-cuda-nvdisasm").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name in ("nvdisasm", "nvdisasm.exe") and f.parent.name == "bin":
            path = str(f.locate())
            if os.access(path, os.X_OK):
                return path
    return None


@functools.lru_cache(maxsize=None)
def nvdisasm_path() -> str:
    """nvdisasm's path: cuda-pathfinder (NVIDIA's wheels, conda, a toolkit), the wheel's file list
    (older cuda-pathfinder has no find_nvidia_binary_utility), PATH, then $CUDA_HOME/bin, $CUDA_PATH/bin."""
    try:
        from cuda.pathfinder import find_nvidia_binary_utility
    except ImportError:
        found = None
    else:
        found = find_nvidia_binary_utility("nvdisasm")
    found = found or _from_wheel() or shutil.which("nvdisasm")
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        candidate = os.path.join(home, "bin", "nvdisasm") if home else None
        if found is None and candidate and os.access(candidate, os.X_OK):
            found = candidate
    if found is None:
        raise NvdisasmNotFound(INSTALL_HELP)
    return found


def available() -> Optional[str]:
    """None when nvdisasm can be found, else the reason it cannot."""
    try:
        nvdisasm_path()
    except NvdisasmNotFound as e:
        return str(e)
    return None


def disassemble(cubin: bytes) -> str:
    """nvdisasm's text for the code sections of a cubin (nvdisasm reads files only)."""
    if not isinstance(cubin, (bytes, bytearray)) or cubin[:4] != b"\x7fELF":
        raise ValueError("cubin is not allowed: expected the ELF bytes of a cubin (nvrtc.compile(...).cubin)")
    exe = nvdisasm_path()
    with tempfile.TemporaryDirectory(prefix="gpuconv-sass-") as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        res = subprocess.run([exe, "-c", path], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise NvdisasmError(f"{exe} -c failed with status {res.returncode}: {res.stderr.strip()}")
    return res.stdout


# ---------------------------------------------------------------- parsing nvdisasm's text

@dataclasses.dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # the full mnemonic with its modifiers, e.g. "LDS.U.128", "HFMA2.MMA"
    operands: str
    predicate: str = ""  # "@P0", "@!P1", ... or "" when always executed
    target: Optional[str] = None  # the label a branch goes to

    @property
    def base(self) -> str:
        return self.opcode.split(".", 1)[0]


@dataclasses.dataclass
class Function:
    name: str
    entry: bool = False
    instructions: list = dataclasses.field(default_factory=list)
    labels: dict = dataclasses.field(default_factory=dict)  # label -> index of the instruction it marks


_SECTION = re.compile(r"^\s*\.section\s+\.text\.([^,\s]+)\s*,")
_ENTRY = re.compile(r'^\s*\.other\s+([^,\s]+)\s*,\s*@"[^"]*STO_CUDA_ENTRY')
_LABEL = re.compile(r"^([.$\w]+):\s*$")
_INSTR = re.compile(r"^\s*\{?\s*/\*([0-9a-fA-F]+)\*/\s+(.*?)\s*;")
_PRED = re.compile(r"^(@!?U?P(?:T|\d+))\s+")
_TARGET = re.compile(r"`\(([^)]+)\)")


def parse_sass(text: str) -> dict[str, Function]:
    """Functions (by name, in order) with their instructions and labels, from nvdisasm's output."""
    functions: dict[str, Function] = {}
    entries = set()
    fn = None
    for line in text.splitlines():
        if m := _SECTION.match(line):
            fn = functions.setdefault(m.group(1), Function(m.group(1)))
        elif m := _ENTRY.match(line):
            entries.add(m.group(1))
        elif fn is None:
            continue
        elif m := _INSTR.match(line):
            body = m.group(2)
            pred = ""
            if p := _PRED.match(body):
                pred, body = p.group(1), body[p.end():]
            opcode, _, operands = body.partition(" ")
            target = _TARGET.search(operands)
            fn.instructions.append(Instruction(int(m.group(1), 16), opcode, operands.strip(), pred,
                                               target.group(1) if target else None))
        elif m := _LABEL.match(line.strip()):
            fn.labels[m.group(1)] = len(fn.instructions)
    for name in entries & functions.keys():
        functions[name].entry = True
    return functions


# ---------------------------------------------------------------- control flow and loops

@dataclasses.dataclass(frozen=True)
class Loop:
    header: int  # index of the loop's first instruction (the back edges' target)
    instructions: tuple  # indices of the loop's instructions, in address order
    back_edges: tuple  # indices of the branches that close the loop


def _blocks(fn: Function) -> tuple[list[tuple[int, int]], dict[int, list[int]]]:
    """Basic blocks as (first, last) instruction indices, and each block's successor blocks."""
    ins = fn.instructions
    n = len(ins)
    leaders = {0} | {i for i in fn.labels.values() if i < n}
    for i, x in enumerate(ins):
        if x.base in _NO_FALLTHROUGH and i + 1 < n:
            leaders.add(i + 1)
    starts = sorted(leaders) if n else []
    blocks = [(s, (starts[k + 1] if k + 1 < len(starts) else n) - 1) for k, s in enumerate(starts)]
    block_of = {s: k for k, (s, _) in enumerate(blocks)}
    succ: dict[int, list[int]] = {}
    for k, (_, last) in enumerate(blocks):
        x = ins[last]
        out = []
        if x.base in _BRANCHES and x.target in fn.labels and fn.labels[x.target] in block_of:
            out.append(block_of[fn.labels[x.target]])
        always = x.predicate in ("", "@PT")
        if not (x.base in _NO_FALLTHROUGH and always) and k + 1 < len(blocks):
            out.append(k + 1)
        succ[k] = out
    return blocks, succ


def find_loops(fn: Function) -> list[Loop]:
    """The natural loops of the function's reachable code, one per header, in address order."""
    blocks, succ = _blocks(fn)
    if not blocks:
        return []
    reachable, todo = {0}, [0]
    while todo:
        for s in succ[todo.pop()]:
            if s not in reachable:
                reachable.add(s)
                todo.append(s)
    pred = collections.defaultdict(set)
    for k in reachable:
        for s in succ[k]:
            pred[s].add(k)
    latches = collections.defaultdict(list)  # header block -> blocks whose last branch jumps back to it
    for k in sorted(reachable):
        for s in succ[k]:
            if blocks[s][0] <= blocks[k][1]:  # fall-through goes forward: this is the branch
                latches[s].append(k)
    loops = []
    for header in sorted(latches):
        body, todo = {header}, list(latches[header])
        while todo:
            k = todo.pop()
            if k not in body:
                body.add(k)
                todo.extend(pred[k])
        indices = tuple(i for k in sorted(body) for i in range(blocks[k][0], blocks[k][1] + 1))
        loops.append(Loop(blocks[header][0], indices, tuple(blocks[k][1] for k in latches[header])))
    return loops


def nested(loop: Loop, loops: list[Loop]) -> list[Loop]:
    """The other loops inside `loop` (their header lies in its body)."""
    body = set(loop.instructions)
    return [other for other in loops if other.header != loop.header and other.header in body]


def own_instructions(loop: Loop, loops: list[Loop]) -> tuple:
    """The loop's instructions that are in none of its nested loops."""
    inner = {i for other in nested(loop, loops) for i in other.instructions}
    return tuple(i for i in loop.instructions if i not in inner)


# ---------------------------------------------------------------- instruction mix

def _multiplicands(operands: str) -> list[str]:
    # "R4, R8.H0_H0, -R9, R4" -> the 2nd and 3rd operands without sign, |abs| or half-selector
    ops = [o.strip() for o in operands.split(",")]
    return [re.sub(r"^[-|!]+|\|$|\.(?:H0_H0|H1_H1|H0_H1|H1_H0|F32|BF16_V2|reuse)+$", "", o) for o in ops[1:3]]


def category(x: Instruction) -> str:
    """'fma', 'shared load', 'global load' or 'other'. A multiply-add with a zero multiplicand
    (`HFMA2.MMA R3, -RZ, RZ, 0, 0` is ptxas' way to move a constant) does no arithmetic: other."""
    if x.base in FMA_OPCODES:
        if x.base in ("HMMA", "HGMMA") or "RZ" not in _multiplicands(x.operands):
            return "fma"
        return "other"
    if x.base in ("LDS", "LDSM"):
        return "shared load"
    if x.base in ("LDG", "LDGSTS", "LD"):  # LDGSTS: cp.async, global to shared; LD: generic address
        return "global load"
    return "other"


def load_bits(opcode: str) -> int:
    """The width of one lane's load from its mnemonic: LDS.128 -> 128, LDG.E.U16 -> 16, LDS -> 32."""
    mods = opcode.split(".")[1:]
    for m in mods:
        if m in ("64", "128"):
            return int(m)
        if m in ("U8", "S8"):
            return 8
        if m in ("U16", "S16"):
            return 16
    return 32


@dataclasses.dataclass(frozen=True)
class LoopMix:
    length: int  # instructions in the loop
    fma: dict  # FMA opcode (base) -> count, every opcode of FMA_OPCODES present
    shared_loads: dict  # full mnemonic -> count
    global_loads: dict  # full mnemonic -> count
    other: int
    opcodes: dict  # every opcode without modifiers (FFMA, IMAD, ...) -> count, most frequent first
    first_address: int
    last_address: int

    @property
    def fma_count(self) -> int:
        return sum(self.fma.values())

    @property
    def fma_share(self) -> float:
        return self.fma_count / self.length if self.length else 0.0

    def to_json(self) -> dict:
        return {"length": self.length, "fma": self.fma, "shared_loads": self.shared_loads,
                "global_loads": self.global_loads, "other": self.other, "opcodes": self.opcodes,
                "fma_count": self.fma_count,
                "fma_share": round(self.fma_share, 4),
                "shared_load_bits": {k: load_bits(k) for k in self.shared_loads},
                "global_load_bits": {k: load_bits(k) for k in self.global_loads},
                "address_range": [f"{self.first_address:#06x}", f"{self.last_address:#06x}"]}


def mix(instructions: Iterable[Instruction]) -> LoopMix:
    instructions = list(instructions)
    fma = {op: 0 for op in FMA_OPCODES}
    shared: collections.Counter = collections.Counter()
    glob: collections.Counter = collections.Counter()
    other = 0
    for x in instructions:
        kind = category(x)
        if kind == "fma":
            fma[x.base] += 1
        elif kind == "shared load":
            shared[x.opcode] += 1
        elif kind == "global load":
            glob[x.opcode] += 1
        else:
            other += 1
    addresses = [x.address for x in instructions] or [0]
    opcodes = dict(collections.Counter(x.base for x in instructions).most_common())
    return LoopMix(len(instructions), fma, dict(sorted(shared.items())), dict(sorted(glob.items())), other,
                   opcodes, min(addresses), max(addresses))


@dataclasses.dataclass(frozen=True)
class HotLoop:
    mix: LoopMix  # of the loop's own instructions (nested loops excluded)
    header_address: int
    nested_loops: int  # loops inside it, whose instructions are not in the mix
    nested_length: int  # their instructions, each counted once


def hot_loop(fn: Function) -> Optional[HotLoop]:
    """The innermost loop doing multiply-adds: among the loops with FMA-class instructions of their own
    (outside any nested loop), those containing no other such loop, the one with the most of them.
    Without any, the innermost loop with the most instructions. None when the function has no loop.

    "Of their own" matters: a GEMM's k-loop typically nests runtime loops that stage tiles into shared
    memory around a fully unrolled multiply, so the innermost loops proper hold no arithmetic at all."""
    loops = find_loops(fn)
    candidates = []
    for lp in loops:
        own = own_instructions(lp, loops)
        candidates.append((lp, mix(fn.instructions[i] for i in own)))
    working = [(lp, m) for lp, m in candidates if m.fma_count]
    if working:
        pool = [(lp, m) for lp, m in working if not any(m2.fma_count for lp2, m2 in working
                                                          if lp2 in nested(lp, loops))]
    else:
        pool = [(lp, m) for lp, m in candidates if not nested(lp, loops)]
    if not pool:
        return None
    lp, m = max(pool, key=lambda c: (c[1].fma_count, c[1].length, -c[0].header))
    inner = nested(lp, loops)
    inner_ins = {i for other in inner for i in other.instructions}
    return HotLoop(m, fn.instructions[lp.header].address, len(inner), len(inner_ins))


# ---------------------------------------------------------------- per kernel file

def entry_hot_loops(text: str) -> dict[str, Optional[HotLoop]]:
    """Each entry point's hot loop (None: no loop), from nvdisasm's text of one cubin."""
    return {name: hot_loop(fn) for name, fn in parse_sass(text).items() if fn.entry}


@dataclasses.dataclass(frozen=True)
class SassRow:
    file: str
    arch: str
    function: str
    loop: Optional[HotLoop]

    def to_json(self) -> dict:
        d = {"file": self.file, "arch": self.arch, "function": self.function, "hot_loop": None}
        if self.loop is not None:
            d["hot_loop"] = {**self.loop.mix.to_json(), "header_address": f"{self.loop.header_address:#06x}",
                             "nested_loops": self.loop.nested_loops, "nested_length": self.loop.nested_length}
        return d


def analyse(file: str, arch: str, cubin: bytes) -> list[SassRow]:
    """Disassemble one cubin and find every entry point's hot loop, entry points in name order."""
    loops = entry_hot_loops(disassemble(cubin))
    return [SassRow(file, arch, name, loops[name]) for name in sorted(loops)]
