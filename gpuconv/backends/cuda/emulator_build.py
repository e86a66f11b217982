"""How the emulator gets a loadable library for a kernel source: the C++ compiler (GPUCONV_CXX, under a
time limit, GPUCONV_CXX_TIMEOUT), the on-disk cache it fills (GPUCONV_CACHE_DIR) and the integrity
record that guards every cached library.

A library is compiled into a temporary file inside the cache directory and renamed into place, so
the rename never crosses filesystems and a reader never sees half a file. A sidecar `<lib>.sha256`
(size and digest, also written by rename) is recorded after each successful build; a library whose
bytes do not match it (truncated: dlopen would SIGBUS; empty or garbage: dlopen fails) is rebuilt.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

DEFAULT_COMPILER_TIMEOUT = 600.0


def find_compiler() -> tuple[Optional[str], Optional[str]]:
    """(path of the C++ compiler, None), or (None, why there is none). GPUCONV_CXX, when set, must
    name a compiler: falling back to another one would build with a compiler nobody asked for."""
    wanted = os.environ.get("GPUCONV_CXX")
    if wanted:
        found = shutil.which(wanted)
        if found is None:
            return None, f"GPUCONV_CXX={wanted!r} names no executable (not found on PATH nor as a path)"
        return found, None
    for name in ("g++", "c++", "clang++"):
        found = shutil.which(name)
        if found is not None:
            return found, None
    return None, "no C++ compiler (g++, c++ or clang++) on PATH; set GPUCONV_CXX to one"


@functools.lru_cache(maxsize=None)
def is_clang(cxx: str) -> bool:
    """Whether `cxx` is clang (also behind the names c++ or g++ on some systems), from its --version."""
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=compiler_timeout()).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "clang" in out.lower()


def compiler_flags(cxx: str, flags) -> list[str]:
    """`flags` as `cxx` takes them: clang has no STB_GNU_UNIQUE binding and rejects -fno-gnu-unique."""
    return [f for f in flags if not (f == "-fno-gnu-unique" and is_clang(cxx))]


def compiler() -> Optional[str]:
    return find_compiler()[0]


def compiler_timeout() -> float:
    raw = os.environ.get("GPUCONV_CXX_TIMEOUT", "")
    if raw == "":
        return DEFAULT_COMPILER_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"GPUCONV_CXX_TIMEOUT={raw!r} is not allowed: expected a positive number of seconds")
    return seconds


def cache_dir() -> Path:
    """Where compiled kernel libraries are kept: GPUCONV_CACHE_DIR, else ~/.cache/gpuconv, else (not
    writable, as in some containers) the temporary directory."""
    root = os.environ.get("GPUCONV_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gpuconv")
    for candidate in (Path(root), Path(tempfile.gettempdir()) / f"gpuconv-{os.getuid()}"):
        directory = candidate / "emulator"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # mkdir succeeds on an existing read-only directory: only creating a file proves we can write
            with tempfile.TemporaryFile(dir=directory):
                pass
            return directory
        except OSError:
            continue
    raise RuntimeError(f"no writable cache directory for the emulator's compiled kernels: tried {root} and "
                       f"{tempfile.gettempdir()}; set GPUCONV_CACHE_DIR")


def _record_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{path.stat().st_size} {h.hexdigest()}"


def is_intact(lib: Path) -> bool:
    """True when `lib` exists and matches the size and digest recorded when it was built."""
    try:
        recorded = _record_path(lib).read_text().strip()
        size = int(recorded.split()[0])
        return lib.stat().st_size == size and _fingerprint(lib) == recorded
    except (OSError, ValueError, IndexError):
        return False


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the record from other users of a shared cache
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_compiler(cmd: list[str], cwd: str) -> tuple[int, str]:
    """Runs the compiler under the time limit; returns (exit status, its output). The compiler runs in
    its own process group, so a timeout or Ctrl-C also kills what it started (cc1plus, as, ld)."""
    timeout = compiler_timeout()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException as e:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            raise RuntimeError(f"the C++ compiler was killed after {timeout:g} s without finishing (the limit "
                               f"is GPUCONV_CXX_TIMEOUT): {' '.join(cmd)}") from None
        raise
    return proc.returncode, output


def build_library(cmd_before_output: list[str], source_name: str, source_text: str, lib: Path,
                  what: str) -> None:
    """Compiles `source_text` with `cmd_before_output + [source, "-o", out]` into the cache entry `lib`."""
    fd, out = tempfile.mkstemp(dir=lib.parent, prefix=f".{lib.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix="gpuconv-emu-") as tmp:
            (Path(tmp) / source_name).write_text(source_text)
            # a relative source name keeps the temporary path out of the library: rebuilds are identical
            cmd = [*cmd_before_output, source_name, "-o", out]
            status, output = run_compiler(cmd, cwd=tmp)
        if status != 0:
            raise RuntimeError(f"compiling {what} for the emulator failed:\n{' '.join(cmd)}\n{output[-4000:]}")
        os.replace(out, lib)
        _write_atomically(_record_path(lib), _fingerprint(lib))
    finally:
        Path(out).unlink(missing_ok=True)
