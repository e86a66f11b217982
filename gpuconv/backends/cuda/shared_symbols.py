"""Where a kernel library built by the emulator keeps its static __shared__ arrays, from its symbol table.

cuda_host.h puts `__shared__` variables in the `gpuconv_shared` section, except that g++ ignores the section
attribute on the static locals of function templates (gemm.cu's As/Bs) and puts those in .bss: both the
plain emulator (to poison them before every block) and the sanitizer (to name and track them) need them.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess


@functools.lru_cache(maxsize=None)
def static_shared_arrays(lib_path: str) -> tuple[tuple[int, int, str], ...]:
    """(offset from the gpuconv_shared section's start, size, name) of every static __shared__ array of
    a built library, from its symbol table (objdump, which comes with g++'s binutils). () when unknown.
    Arrays of function templates, which g++ places in .bss instead (sanitizer.h, SHARED_OUTSIDE), come
    with a negative or out-of-section offset and their name prefixed by '+'."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return ()
    try:
        headers = subprocess.run([objdump, "-h", lib_path], capture_output=True, text=True, check=True).stdout
        symbols = subprocess.run([objdump, "-t", "-C", lib_path], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ()
    m = re.search(r"^\s*\d+\s+gpuconv_shared\s+[0-9a-f]+\s+([0-9a-f]+)", headers, re.M)
    if m is None:
        return ()
    start = int(m.group(1), 16)
    out = []
    for line in symbols.splitlines():
        t = re.match(r"^([0-9a-f]+)\s.*\s\.bss\s+([0-9a-f]+)\s+(.*\)::\w+)$", line)
        if t and not t.group(3).strip().startswith("gpuconv_") and int(t.group(2), 16) > 0:
            out.append((int(t.group(1), 16) - start, int(t.group(2), 16), "+" + t.group(3).rsplit("::", 1)[-1]))
        s = re.match(r"^([0-9a-f]+)\s.*\sgpuconv_shared\s+([0-9a-f]+)\s+(.*)$", line)
        if s and int(s.group(2), 16) > 0 and not s.group(3).strip().startswith("gpuconv_"):  # runtime's own
            name = s.group(3).strip()
            # a function's static: "void gemm<float, int>(...)::As" -> "As"
            out.append((int(s.group(1), 16) - start, int(s.group(2), 16), name.rsplit("::", 1)[-1]))
    return tuple(sorted(out))
