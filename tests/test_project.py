"""The project's promises outside the code: README commands, CI script, import hygiene, headers help."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_has_exactly_two_commands_demo_and_tests():
    demo, tests = quick_start_commands()
    assert demo.endswith("gpuconv demo")
    assert "pytest" in tests and ".[test]" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    _, tests = quick_start_commands()
    # CI may quieten pip; otherwise the command is the README's
    assert tests.replace("pip install -e", "pip install -q -e") in ci


def test_import_stays_light():
    """`import gpuconv` must not import TensorFlow or CuPy (slow, and optional)."""
    code = "import sys, gpuconv; print(sorted(m for m in ('tensorflow', 'cupy', 'torch', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_cuda_headers_say_how_to_install_them(monkeypatch):
    from gpuconv.backends.cuda import sources
    import cuda.pathfinder as pathfinder

    def not_found(lib):
        raise RuntimeError("not found")
    monkeypatch.setattr(pathfinder, "find_nvidia_header_directory", not_found)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(sources, "CUDA_ROOT", "/nonexistent/cuda")   # a toolkit may be installed here
    sources.cuda_include_dirs.cache_clear()
    try:
        with pytest.raises(sources.CudaHeadersNotFound, match=r"pip install \"gpuconv\[cuda13\]\""):
            sources.cuda_include_dirs()
        from gpuconv.backends.cuda.emulator import EmulatorBackend
        assert "cuda_fp16.h" in EmulatorBackend.headers_reason()
        if sys.platform.startswith("linux"):     # elsewhere the emulator's reason is that it needs Linux
            assert "cuda_fp16.h" in EmulatorBackend().unavailable_reason()
    finally:
        sources.cuda_include_dirs.cache_clear()


def test_kernels_ship_as_package_data():
    from gpuconv.backends.cuda.sources import kernel_dir, kernel_files
    assert (kernel_dir() / "host" / "cuda_host.h").is_file()
    assert {f.stem for f in kernel_files()} >= {"direct", "im2col", "gemm"}
    toml = (ROOT / "pyproject.toml").read_text()
    assert '"gpuconv.kernels" = "kernels"' in toml and '"*.cu", "*.cuh", "host/*.h"' in toml


def test_small_numpy_call_probes_no_gpu():
    """backend="auto" with a small NumPy problem goes to numpy without importing CuPy (a slow import)."""
    code = ("import sys, numpy as np, gpuconv; "
            "gpuconv.conv2d(np.ones((1, 5, 5, 2), np.float32), np.ones((3, 3, 2, 2), np.float32)); "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
