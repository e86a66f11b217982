"""Kernel entry points parsed from the CUDA source, and argument checks against them.

CuPy's RawKernel does no type checking: a Python int arrives as 64 bits and a float as a double, so
an `int` or `float` parameter silently reads garbage. Both CUDA backends therefore check every
argument against the parameter list parsed here before launching — pointer vs scalar, the scalar's
C type and size, the pointed array's dtype — and raise naming the kernel and the parameter.
"""
from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from ...dtypes import accumulator, bfloat16
from .cexpr import evaluate, macro_table
from .params import STRUCTS
from .sources import load_source

C_TYPES = {
    "float": np.dtype(np.float32), "double": np.dtype(np.float64), "__half": np.dtype(np.float16),
    "__nv_bfloat16": bfloat16, "int": np.dtype(np.int32), "long long": np.dtype(np.int64),
    "unsigned": np.dtype(np.uint32), "unsigned int": np.dtype(np.uint32),
    "unsigned long long": np.dtype(np.uint64), **STRUCTS,
}

_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\(([^)]*)\)\s*)?'
                    r'(\w+)\s*\(([^)]*)\)', re.S)


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    ctype: str        # base C type without const/__restrict__/*, e.g. "float", "ConvProblem"
    pointer: bool
    const: bool       # for pointers: the pointee is const (read-only array)

    @property
    def dtype(self) -> np.dtype:
        return C_TYPES[self.ctype]

    def c_decl(self) -> str:
        """The type as a C expression usable in a cast, e.g. 'const float*'."""
        return f"{'const ' if self.const else ''}{self.ctype}{'*' if self.pointer else ''}"


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    params: tuple[Param, ...]
    launch_bounds: str | None


def parse_param(kernel: str, text: str) -> Param:
    tokens = text.replace("*", " * ").split()
    if len(tokens) < 2:
        raise ValueError(f"kernel {kernel}: cannot parse parameter {text!r}")
    name = tokens[-1]
    pointer = "*" in tokens
    const = pointer and tokens[0] == "const"  # a const scalar is passed by value: no difference
    base = " ".join(t for t in tokens[:-1] if t not in ("const", "*", "__restrict__"))
    if base not in C_TYPES:
        raise ValueError(f"kernel {kernel}: parameter {name!r} has C type {base!r}, unknown to gpuconv "
                         f"(known: {sorted(C_TYPES)})")
    return Param(name=name, ctype=base, pointer=pointer, const=const)


def parse_entries(source: str) -> dict[str, Entry]:
    entries = {}
    for m in _ENTRY.finditer(source):
        bounds, name, plist = m.group(1), m.group(2), m.group(3)
        params = tuple(parse_param(name, p.strip()) for p in plist.split(",") if p.strip())
        entries[name] = Entry(name, params, bounds.strip() if bounds else None)
    return entries


@functools.lru_cache(maxsize=None)
def entries_of(file: str) -> dict[str, Entry]:
    return parse_entries(load_source(file))


@dataclasses.dataclass(frozen=True)
class Compiled:
    """What a kernel file's entry point needs from a block, as compiled with `defines`."""
    max_threads: int | None   # __launch_bounds__' first argument, None without one
    static_shared: int        # bytes of static __shared__ arrays


# A static shared array: `__shared__ Type name[d0][d1]...;` (extern ones are dynamic and sized at launch).
_SHARED = re.compile(r"(extern\s+)?__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:]*)\s+\w+\s*"
                     r"((?:\[[^\]]*\]\s*)+);")
_ACC_ALIAS = re.compile(r"using\s+(\w+)\s*=\s*typename\s+Acc<T>::type\s*;")


@functools.lru_cache(maxsize=None)
def compiled_limits(file: str, kernel: str, defines: tuple[tuple[str, int], ...] = ()) -> Compiled:
    """Block size bound and static shared memory of one entry point, from its source.

    Parsed rather than measured, so both backends check a launch before anything is compiled: the
    driver tells a function's static size only once its module is loaded (CuPy's
    RawKernel.shared_size_bytes), and the emulator links every entry's static arrays into one
    section, so it cannot tell one kernel's. Each kernel file has a single kernel body template
    whose instantiations are its entries, so the body's __shared__ arrays, with T the entry's
    element type, are every entry's. A test compares the result with ptxas's report."""
    source = load_source(file)
    entry = entries_of(file)[kernel]
    macros = macro_table(source, defines)
    bound = evaluate(entry.launch_bounds.split(",")[0], macros) if entry.launch_bounds else None
    elem = next(p.dtype for p in entry.params if p.pointer)
    types = {**C_TYPES, "T": elem, **{alias: accumulator(elem) for alias in _ACC_ALIAS.findall(source)}}
    static = 0
    for extern, ctype, dims in _SHARED.findall(source):
        if extern:
            continue
        if ctype not in types:
            raise ValueError(f"{file}.cu: __shared__ array of type {ctype!r}, unknown to gpuconv")
        count = 1
        for d in re.findall(r"\[([^\]]*)\]", dims):
            count *= evaluate(d, macros)
        static += count * np.dtype(types[ctype]).itemsize
    return Compiled(bound, static)


def _is_array(a) -> bool:
    return isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] == "cupy"


def check_args(entry: Entry, args: tuple, storage: dict | None = None) -> None:
    """Raise TypeError/ValueError naming the kernel and parameter for any argument that does not match.

    storage: element dtype -> the dtype an array module stores it as (CuPy has no bfloat16, so the
    cupy backend keeps bfloat16 data in uint16 arrays, bit for bit).
    """
    storage = storage or {}
    if len(args) != len(entry.params):
        raise TypeError(f"kernel {entry.name} takes {len(entry.params)} arguments "
                        f"({', '.join(p.name for p in entry.params)}), got {len(args)}")
    for p, a in zip(entry.params, args):
        where = f"kernel {entry.name}, parameter {p.name} ({p.c_decl()})"
        if p.pointer:
            if not _is_array(a):
                raise TypeError(f"{where}: expected an array, got {type(a).__name__}")
            if a.dtype != storage.get(p.dtype, p.dtype):
                raise TypeError(f"{where}: expected an array of {storage.get(p.dtype, p.dtype)}, got {a.dtype}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{where}: the array must be C-contiguous")
            if not p.const and not getattr(a.flags, "writeable", True):
                raise ValueError(f"{where}: the kernel writes this array but it is read-only")
        else:
            if isinstance(a, np.void) and p.ctype in STRUCTS:
                if a.dtype != p.dtype:
                    raise TypeError(f"{where}: expected struct dtype {p.dtype}, got {a.dtype}")
                continue
            if not isinstance(a, np.generic) or isinstance(a, np.void):
                as_what = {"int": "a 64-bit integer", "float": "a double"}.get(type(a).__name__, "whatever CuPy guesses")
                raise TypeError(f"{where}: expected a NumPy scalar of {p.dtype} (a Python "
                                f"{type(a).__name__} would be passed as {as_what}), got {a!r}")
            if a.dtype != p.dtype:
                raise TypeError(f"{where}: expected a NumPy scalar of {p.dtype}, got {a.dtype}")
