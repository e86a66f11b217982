"""`gpuconv kernels`: compile every kernel with NVRTC for real GPUs and print ptxas' report.

For each kernels/*.cu file and each architecture (sm_75, sm_80, sm_86, sm_89, sm_90 by default) the
file is compiled to a cubin with `-Xptxas=-v`, and for every function ptxas reports we print
registers, static shared memory, stack frame, spill stores/loads, constant memory, and the
theoretical occupancy of each entry point. No GPU is needed. The exit status is 1 when any file
fails to compile or any function spills registers to local memory, so CI can run it as a check.

Block size convention: every entry point declares its block size with `__launch_bounds__(N)` (N may
be a macro, e.g. a tile parameter overridable with -D). The report does not parse the C++ for it:
it reads the PTX that the same compilation produced, whose `.maxntid X, Y, Z` directive is exactly
what `__launch_bounds__` resolved to after macro expansion. An entry point without it gets no
occupancy figure (its registers were allocated for up to 1024 threads).

Occupancy follows NVIDIA's own model in CUDA 13's cuda_occupancy.h, with the per-architecture
limits of CCCL's cuda/__device/arch_traits.h (both ship in the nvidia-cuda-runtime/-cccl wheels):
the blocks resident on one SM are the minimum over
  - warps:       max warps per SM // warps per block
  - blocks:      the hardware cap on resident blocks per SM
  - registers:   registers are given to warps in units of 256 (regs * 32 rounded up), from 4
                 sub-partitions of 16384 registers each; a block must also fit 65536 registers
                 per block with its warp count rounded up to a multiple of 4
  - shared mem:  (static shared + the 1 KiB the driver reserves per block on sm_80+), rounded up
                 to 256 B (sm_7x) or 128 B (sm_8x/9x), against the largest carveout per SM (a block
                 needing more than 48 KiB is assumed to have opted in to the maximum, as it must)
  - barriers:    on sm_90 only (as in cuda_occupancy.h): 2 named barriers per block slot, shared by
                 the blocks according to the barriers ptxas says each uses
tests/test_nvrtc_report.py checks this port against cuda_occupancy.h itself (built with the host
compiler) on a few thousand cases.

Dynamic shared memory is unknown at compile time: for an entry point that uses `extern __shared__`
the figure is an upper bound (marked "<="); `--dynamic-smem BYTES` adds a per-block amount to those.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

from . import nvrtc, sass, sources

ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")


@dataclasses.dataclass(frozen=True)
class SmLimits:
    """Per-SM resources of one architecture (NVIDIA's cuda_occupancy.h and CCCL arch_traits.h)."""
    arch: str
    max_warps: int
    max_blocks: int
    smem_per_sm: int
    smem_reserved_per_block: int
    smem_granularity: int
    barriers_per_block_slot: int  # 0: barriers do not limit occupancy on this arch
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    reg_granularity: int = 256  # registers per warp are allocated in units of 256
    sub_partitions: int = 4
    max_regs_per_thread: int = 255
    max_threads_per_block: int = 1024
    warp_size: int = 32


KiB = 1024
SM_LIMITS = {
    "sm_75": SmLimits("sm_75", max_warps=32, max_blocks=16, smem_per_sm=64 * KiB, smem_reserved_per_block=0,
                      smem_granularity=256, barriers_per_block_slot=0),
    "sm_80": SmLimits("sm_80", max_warps=64, max_blocks=32, smem_per_sm=164 * KiB, smem_reserved_per_block=KiB,
                      smem_granularity=128, barriers_per_block_slot=0),
    "sm_86": SmLimits("sm_86", max_warps=48, max_blocks=16, smem_per_sm=100 * KiB, smem_reserved_per_block=KiB,
                      smem_granularity=128, barriers_per_block_slot=0),
    "sm_89": SmLimits("sm_89", max_warps=48, max_blocks=24, smem_per_sm=100 * KiB, smem_reserved_per_block=KiB,
                      smem_granularity=128, barriers_per_block_slot=0),
    "sm_90": SmLimits("sm_90", max_warps=64, max_blocks=32, smem_per_sm=228 * KiB, smem_reserved_per_block=KiB,
                      smem_granularity=128, barriers_per_block_slot=2),
}


@dataclasses.dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    max_warps: int
    limiter: str  # which resource bounds blocks_per_sm: warps, blocks, registers, shared memory, barriers

    @property
    def fraction(self) -> float:
        return self.warps_per_sm / self.max_warps


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy(arch: str, threads: int, registers: int, smem: int, barriers: int = 0) -> Occupancy:
    """Theoretical occupancy of a block of `threads` threads using `registers` per thread and
    `smem` bytes of shared memory per block (static + dynamic), as cuda_occupancy.h computes it."""
    if arch not in SM_LIMITS:
        raise ValueError(f"arch={arch!r} is not allowed: expected one of {sorted(SM_LIMITS)}")
    for argname, v in (("threads", threads), ("registers", registers), ("smem", smem), ("barriers", barriers)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{argname}={v!r} is not allowed: expected an int >= 0")
    if threads == 0:
        raise ValueError("threads=0 is not allowed: expected 1 to 1024 threads per block")
    L = SM_LIMITS[arch]
    warps_per_block = -(-threads // L.warp_size)
    limits = {"blocks": L.max_blocks}
    limits["warps"] = 0 if threads > L.max_threads_per_block else L.max_warps // warps_per_block
    regs_per_warp = _round_up(registers * L.warp_size, L.reg_granularity)
    if (registers > L.max_regs_per_thread or regs_per_warp * warps_per_block > L.regs_per_block
            or regs_per_warp * _round_up(warps_per_block, L.sub_partitions) > L.regs_per_block):
        limits["registers"] = 0
    elif regs_per_warp:
        warps_per_partition = (L.regs_per_sm // L.sub_partitions) // regs_per_warp
        limits["registers"] = warps_per_partition * L.sub_partitions // warps_per_block
    smem_alloc = _round_up(smem + L.smem_reserved_per_block, L.smem_granularity)
    if smem_alloc > L.smem_per_sm:
        limits["shared memory"] = 0
    elif smem_alloc:
        limits["shared memory"] = L.smem_per_sm // smem_alloc
    if barriers and L.barriers_per_block_slot:
        limits["barriers"] = L.max_blocks * L.barriers_per_block_slot // barriers
    # on ties the first in this order is named: warps (full occupancy) before the block cap, and
    # barriers only when they bind on their own (their limit is a multiple of the block cap)
    order = ["warps", "registers", "shared memory", "blocks", "barriers"]
    blocks = min(limits.values())
    limiter = next(name for name in order if limits.get(name, math.inf) == blocks)
    return Occupancy(blocks, blocks * warps_per_block, L.max_warps, limiter)


# ---------------------------------------------------------------- parsing ptxas' -v report

@dataclasses.dataclass
class FunctionStats:
    name: str
    entry: bool = False
    registers: Optional[int] = None
    barriers: int = 0
    smem: int = 0  # static shared memory, bytes
    stack_frame: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    cumulative_stack: int = 0
    cmem: dict = dataclasses.field(default_factory=dict)  # constant bank -> bytes
    threads: Optional[int] = None  # block size from __launch_bounds__ (PTX .maxntid / .reqntid)
    min_blocks: Optional[int] = None  # __launch_bounds__' second argument (.minnctapersm)
    dynamic_smem: bool = False  # refers to an `extern __shared__` array

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(.*)$")
_ITEM = re.compile(r"(\d+) bytes (smem|gmem|cmem\[(\d+)\]|cumulative stack size)")
_BARRIERS = re.compile(r"used (\d+) barriers")


def parse_ptxas_log(log: str) -> tuple[dict[str, FunctionStats], dict, list[str]]:
    """Functions (by name) with their ptxas statistics, module-level memory (gmem, cmem banks)
    and the warning lines of the log."""
    functions: dict[str, FunctionStats] = {}
    module: dict = {"gmem": 0, "cmem": {}}
    warnings = [ln.strip() for ln in log.splitlines() if re.search(r"\bwarning\b", ln)]
    entry = props = None

    def get(name: str) -> FunctionStats:
        return functions.setdefault(name, FunctionStats(name))

    for line in log.splitlines():
        if m := _ENTRY.search(line):
            entry = get(m.group(1))
            entry.entry = True
        elif m := _PROPS.search(line):
            props = get(m.group(1))
        elif m := _FRAME.search(line):
            if props is not None:
                props.stack_frame, props.spill_stores, props.spill_loads = map(int, m.groups())
        elif m := _USED.search(line):
            if entry is None:
                continue
            entry.registers = int(m.group(1))
            if b := _BARRIERS.search(m.group(2)):
                entry.barriers = int(b.group(1))
            for size, kind, bank in _ITEM.findall(m.group(2)):
                if kind == "smem":
                    entry.smem = int(size)
                elif kind == "cumulative stack size":
                    entry.cumulative_stack = int(size)
                elif bank:
                    entry.cmem[int(bank)] = int(size)
        elif line.startswith("ptxas info") and _ITEM.search(line):
            for size, kind, bank in _ITEM.findall(line):  # module scope: __device__ / __constant__ data
                if kind == "gmem":
                    module["gmem"] = int(size)
                elif bank:
                    module["cmem"][int(bank)] = int(size)
    return functions, module, warnings


_PTX_ENTRY = re.compile(r"\.entry\s+([\w$]+)\s*\(")
_PTX_NTID = re.compile(r"\.(maxntid|reqntid)\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?")
_PTX_MINCTA = re.compile(r"\.minnctapersm\s+(\d+)")
_PTX_EXTERN_SHARED = re.compile(r"\.extern\s+\.shared\s+[^;]*?([\w$]+)\s*\[\s*\]\s*;")


def parse_ptx_entries(ptx: str) -> dict[str, dict]:
    """Per entry point: threads per block from .maxntid/.reqntid (None without __launch_bounds__),
    .minnctapersm, and whether its body refers to an `extern __shared__` array."""
    extern_shared = set(_PTX_EXTERN_SHARED.findall(ptx))
    starts = [(m.start(), m.group(1)) for m in _PTX_ENTRY.finditer(ptx)]
    out = {}
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(ptx)
        text = ptx[start:end]
        header = text.split("{", 1)[0]
        threads = None
        if m := _PTX_NTID.search(header):
            threads = math.prod(int(v) for v in m.groups()[1:] if v)
        mincta = _PTX_MINCTA.search(header)
        body = text[len(header):]
        out[name] = {"threads": threads, "min_blocks": int(mincta.group(1)) if mincta else None,
                     "dynamic_smem": any(re.search(rf"\b{re.escape(s)}\b", body) for s in extern_shared)}
    return out


# ---------------------------------------------------------------- the report

@dataclasses.dataclass
class KernelReport:
    file: str
    arch: str
    functions: list = dataclasses.field(default_factory=list)  # FunctionStats, entry points first
    module: dict = dataclasses.field(default_factory=dict)
    warnings: list = dataclasses.field(default_factory=list)
    error: Optional[str] = None
    seconds: float = 0.0
    cubin: Optional[bytes] = dataclasses.field(default=None, repr=False)  # for `--sass`; not in the JSON

    def occupancy(self, f: FunctionStats, dynamic_smem: int = 0) -> Optional[Occupancy]:
        if not f.entry or f.threads is None or f.registers is None:
            return None
        extra = dynamic_smem if f.dynamic_smem else 0  # only kernels with `extern __shared__` get it
        return occupancy(self.arch, f.threads, f.registers, f.smem + extra, f.barriers)


def kernel_source(path: Path) -> str:
    """The text every backend compiles: load_source for kernels/*.cu, our headers inlined elsewhere."""
    path = Path(path)
    if path.parent.resolve() == sources.kernel_dir().resolve():
        return sources.load_source(path.stem)
    return sources.inline_includes(path)


def compile_one(path: Path, arch: str, defines=(), options: Iterable[str] = ()) -> KernelReport:
    path = Path(path)
    rep = KernelReport(file=path.name, arch=arch)
    try:
        res = nvrtc.compile(kernel_source(path), path.name, arch, options, defines=defines)
    except nvrtc.NvrtcCompileError as e:
        rep.error = e.log.strip() or e.status
        rep.warnings = [ln.strip() for ln in e.log.splitlines() if re.search(r"\bwarning\b", ln)]
        return rep
    rep.seconds, rep.cubin = res.seconds, res.cubin
    funcs, rep.module, rep.warnings = parse_ptxas_log(res.log)
    for name, info in parse_ptx_entries(res.ptx).items():
        f = funcs.setdefault(name, FunctionStats(name, entry=True))
        f.threads, f.min_blocks, f.dynamic_smem = info["threads"], info["min_blocks"], info["dynamic_smem"]
    rep.functions = sorted(funcs.values(), key=lambda f: (not f.entry, f.name))
    return rep


def compile_report(files: Optional[Iterable[Path]] = None, archs: Iterable[str] = ARCHS, defines=(),
                   options: Iterable[str] = (), jobs: Optional[int] = None,
                   progress: Optional[Callable[[str], None]] = None) -> list[KernelReport]:
    """Compile each file for each arch (in parallel: one NVRTC program per thread) and parse the reports.
    `progress`, if given, is called with "file [arch]" as each compilation finishes."""
    files = list(sources.kernel_files() if files is None else files)
    archs = list(archs)
    for a in archs:
        if a not in SM_LIMITS:
            raise ValueError(f"arch={a!r} is not allowed: expected one of {list(SM_LIMITS)}")
    tasks = [(Path(f), a) for f in files for a in archs]
    if not tasks:
        return []
    nvrtc.build_options(archs[0], defines, options)  # bad macros / NVRTC missing: fail once, clearly
    return _run_pool([(compile_one, (f, a, defines, options), f"{f.name} [{a}]") for f, a in tasks], jobs, progress)


def _run_pool(calls: list, jobs: Optional[int], progress: Optional[Callable[[str], None]]) -> list:
    """Results of (fn, args, label) calls run in a thread pool, in order; progress(label) as each ends."""
    if not calls:
        return []
    jobs = jobs or min(len(calls), os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(fn, *args): label for fn, args, label in calls}
        if progress is not None:
            for done in concurrent.futures.as_completed(futures):
                progress(futures[done])
        return [f.result() for f in futures]


def sass_report(reports: Iterable[KernelReport], archs: Iterable[str] = sass.SASS_ARCHS, jobs: Optional[int] = None,
                progress: Optional[Callable[[str], None]] = None) -> list[sass.SassRow]:
    """The hot loop of every entry point in the reports compiled for one of `archs` (in parallel: nvdisasm
    runs as a subprocess). Files that did not compile are left out: problems() reports them."""
    archs = set(archs)
    todo = [r for r in reports if r.arch in archs and r.error is None]
    if todo:
        sass.nvdisasm_path()  # missing: fail once, clearly
    rows = _run_pool([(sass.analyse, (r.file, r.arch, r.cubin), f"{r.file} [{r.arch}] SASS") for r in todo],
                     jobs, progress)
    return [row for per_file in rows for row in per_file]


def problems(reports: Iterable[KernelReport]) -> list[str]:
    """What fails the check: compile errors and any function that spills."""
    out = []
    for r in reports:
        if r.error is not None:
            first = next((ln for ln in r.error.splitlines() if "error" in ln), r.error.splitlines()[0])
            out.append(f"{r.file} [{r.arch}]: compile error: {first.strip()}")
        for f in r.functions:
            if f.spills:
                out.append(f"{r.file} [{r.arch}]: {f.name} spills {f.spill_stores} bytes stored / "
                           f"{f.spill_loads} bytes loaded to local memory")
    return out


def to_json(reports: list[KernelReport], dynamic_smem: int = 0, sass_rows: Optional[list] = None) -> dict:
    rows = []
    for r in reports:
        d = {"file": r.file, "arch": r.arch, "error": r.error, "warnings": r.warnings, "module": r.module,
             "seconds": round(r.seconds, 4), "functions": []}
        for f in r.functions:
            fd = dataclasses.asdict(f)
            fd["spills"] = f.spills
            occ = r.occupancy(f, dynamic_smem)
            fd["occupancy"] = None if occ is None else {**dataclasses.asdict(occ), "fraction": occ.fraction}
            d["functions"].append(fd)
        rows.append(d)
    out = {"nvrtc_version": ".".join(map(str, nvrtc.version())), "dynamic_smem": dynamic_smem,
           "reports": rows, "problems": problems(reports)}
    if sass_rows is not None:
        out["sass"] = [row.to_json() for row in sass_rows]
    return out


def _occ_text(r: KernelReport, f: FunctionStats, dynamic_smem: int) -> str:
    if not f.entry:
        return "(device function)"
    if f.threads is None:
        return "no __launch_bounds__"
    occ = r.occupancy(f, dynamic_smem)
    bound = "<=" if f.dynamic_smem and not dynamic_smem else ""
    return f"{bound}{occ.fraction:.0%} ({occ.blocks_per_sm} blk, {occ.limiter})"


def _rows(reports: list[KernelReport], dynamic_smem: int):
    for r in reports:
        if r.error is not None:
            yield (r.file, "-", r.arch, "COMPILE ERROR", "", "", "", "", "", "", ""), True
            continue
        for f in r.functions:
            cmem = ",".join(f"{v}[{k}]" for k, v in sorted(f.cmem.items())) or "-"
            yield ((r.file, f.name, r.arch, "-" if f.registers is None else str(f.registers), str(f.smem),
                    str(f.stack_frame), f"{f.spill_stores}/{f.spill_loads}", cmem,
                    "-" if f.threads is None else str(f.threads), _occ_text(r, f, dynamic_smem),
                    f"{r.seconds:.2f}"), f.spills)


HEADERS = ("file", "function", "arch", "regs", "smem B", "stack B", "spill st/ld B", "cmem B (bank)", "threads",
           "occupancy", "nvrtc s")


def _print_table(title: str, headers: tuple, rows: list, left: Iterable[str], file, width: int = 160) -> None:
    """rows: (cells, bad) pairs; a bad row is red in rich's table, marked "<-- FAIL" in plain text.
    A cell's lines are stacked in rich's table and joined with spaces in plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        rows = [([c.replace("\n", " ") for c in row], bad) for row, bad in rows]
        widths = [max(len(h), *(len(row[i]) for row, _ in rows)) if rows else len(h) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths)), file=file)
        for row, bad in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + ("  <-- FAIL" if bad else ""), file=file)
    else:
        table = Table(title=title, show_lines=False)
        for h in headers:
            table.add_column(h, justify="left" if h in left else "right")
        for row, bad in rows:  # Text: no rich markup in cells ("[0]" in "372[0]" is data)
            table.add_row(*(Text(c) for c in row), style="bold red" if bad else None)
        Console(file=file, width=max(width, Console(file=file).width)).print(table)


def print_report(reports: list[KernelReport], dynamic_smem: int = 0, file=None) -> None:
    file = file or sys.stdout
    _print_table(f"NVRTC {'.'.join(map(str, nvrtc.version()))} / ptxas -v", HEADERS, list(_rows(reports, dynamic_smem)),
                 ("file", "function", "arch", "occupancy"), file)
    for r in reports:
        for w in r.warnings:
            print(f"warning: {r.file} [{r.arch}]: {w}", file=file)


SASS_HEADERS = ("file", "entry point", "arch", "loop instr", "nested (excluded)", "FFMA", "HFMA2", "DFMA", "HMMA",
                "shared loads", "global loads", "other", "FMA share")


def _loads(counts: dict) -> str:
    return "\n".join(f"{op}:{n}" for op, n in counts.items()) or "-"


def _sass_rows(rows: list[sass.SassRow]):
    for row in rows:
        lp = row.loop
        if lp is None:
            yield (row.file, row.function, row.arch, "no loop", *[""] * 9), False
            continue
        m = lp.mix
        nested = f"{lp.nested_loops} loops, {lp.nested_length} instr" if lp.nested_loops else "-"
        yield ((row.file, row.function, row.arch, str(m.length), nested, str(m.fma["FFMA"]), str(m.fma["HFMA2"]),
                str(m.fma["DFMA"]), str(m.fma["HMMA"] + m.fma["HGMMA"]), _loads(m.shared_loads),
                _loads(m.global_loads), str(m.other), f"{m.fma_share:.0%}"), False)


def print_sass_report(rows: list[sass.SassRow], file=None) -> None:
    """One row per entry point: its hot loop's length and instruction mix (see sass.hot_loop)."""
    _print_table("SASS hot loops (nvdisasm): innermost loop doing multiply-adds, static instruction counts",
                 SASS_HEADERS, list(_sass_rows(rows)), ("file", "entry point", "arch", "nested (excluded)",
                                                          "shared loads", "global loads"), file or sys.stdout, width=200)


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool, file=None):
    """A transient progress bar on stderr (or `file`) while NVRTC and nvdisasm run; yields the callback
    compile_report / sass_report take. Disabled (a no-op callback) unless `enabled` and rich is installed."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        enabled = False
    if not enabled or total <= 0:
        yield lambda label: None
        return
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=file or sys.stderr), transient=True) as bar:
        task = bar.add_task("gpuconv kernels", total=total)
        yield lambda label: bar.update(task, advance=1, description=f"done: {label}")


def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="*", metavar="KERNEL",
                        help="kernel files to compile (names in kernels/ such as 'direct', or paths); default: all")
    parser.add_argument("--arch", action="append", choices=ARCHS, metavar="SM",
                        help=f"architecture to compile for, repeatable (default: all of {', '.join(ARCHS)})")
    parser.add_argument("-D", "--define", action="append", default=[], metavar="NAME[=VALUE]",
                        help="macro passed to NVRTC, e.g. -D TILE_K=32 (repeatable)")
    parser.add_argument("--dynamic-smem", type=int, default=0, metavar="BYTES",
                        help="dynamic shared memory per block to assume in the occupancy column (default 0)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the full report as JSON to PATH")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="parallel NVRTC compilations (default: number of CPUs)")
    parser.add_argument("--sass", action="store_true",
                        help=f"also disassemble each cubin with nvdisasm and print the instruction mix of every entry "
                             f"point's hot loop, for the --arch given (default: {', '.join(sass.SASS_ARCHS)})")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar on stderr (it is shown only when stderr is a terminal)")


def _resolve_files(names: list[str]) -> list[Path]:
    out = []
    for name in names:
        p = Path(name)
        out.append(p if p.suffix == ".cu" and p.is_file() else sources.kernel_path(name))
    return out


def run(args) -> int:
    if args.dynamic_smem < 0:
        raise SystemExit(f"gpuconv kernels: error: --dynamic-smem={args.dynamic_smem} is not allowed: "
                         f"expected bytes >= 0")
    if args.jobs is not None and args.jobs < 1:
        raise SystemExit(f"gpuconv kernels: error: --jobs={args.jobs} is not allowed: expected >= 1")
    try:
        files = _resolve_files(args.files) if args.files else sources.kernel_files()
        if not files:
            print(f"no kernel files in {sources.kernel_dir()}: nothing to compile", file=sys.stderr)
            return 1
        archs = args.arch or ARCHS
        sass_archs = [a for a in archs if a in (args.arch or sass.SASS_ARCHS)] if args.sass else []
        if sass_archs:
            sass.nvdisasm_path()  # before ~15 s of compiling
        total = len(files) * (len(archs) + len(sass_archs))
        with progress_bar(total, not args.quiet and sys.stderr.isatty()) as advance:
            reports = compile_report(files, archs, args.define, jobs=args.jobs, progress=advance)
            sass_rows = sass_report(reports, sass_archs, args.jobs, advance) if args.sass else None
    except (nvrtc.NvrtcNotFound, sass.NvdisasmNotFound, sass.NvdisasmError, ValueError) as e:
        print(f"gpuconv kernels: error: {e}", file=sys.stderr)
        return 1
    print_report(reports, args.dynamic_smem)
    if sass_rows is not None:
        print_sass_report(sass_rows)
    if args.json:
        args.json.write_text(json.dumps(to_json(reports, args.dynamic_smem, sass_rows), indent=1))
    bad = problems(reports)
    for b in bad:
        print(f"FAIL: {b}", file=sys.stderr)
    n_fn = sum(f.entry for r in reports for f in r.functions)
    print(f"{len(reports)} compilation(s) ({len({r.file for r in reports})} files x "
          f"{len({r.arch for r in reports})} archs), {n_fn} entry points, "
          f"{'no errors, no spills' if not bad else f'{len(bad)} problem(s)'}")
    return 1 if bad else 0
