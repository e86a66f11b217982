"""Offline validation of .github/workflows/gpu.yml: GitHub's workflow schema, zizmor, and our rules.

The GPU workflow runs only on a self-hosted runner, so the CPU CI is where a broken or unsafe
workflow file is caught. Each tool is also run on a deliberately bad workflow to show that the
check can fail.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from cli_tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "gpu.yml"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")

# Valid syntax, but a script injection (an attacker-controlled PR title expanded into a shell) and an
# unpinned action: zizmor must call the first high severity.
BAD_WORKFLOW = """\
name: bad
on: pull_request
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
"""


def _tool(name: str) -> str:
    return require_tool(name, name)   # both are on PyPI under their command's name


def _run(*argv, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd)


def _zizmor_findings(zizmor: str, path: Path) -> list[dict]:
    # the auditor persona reports everything, so the severity filter below is ours, not zizmor's
    res = _run(zizmor, "--offline", "--persona", "auditor", "--format", "json", str(path), cwd=path.parent)
    assert res.stdout.strip(), f"zizmor gave no JSON (exit {res.returncode}): {res.stderr}"
    return json.loads(res.stdout)


def _high(findings: list[dict]) -> list[str]:
    return [f"{f['ident']}: {f['desc']}" for f in findings if f["determinations"]["severity"] == "High"]


@pytest.fixture(scope="module")
def workflow() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML (part of the test extra) is needed to read the workflow")
    return yaml.safe_load(WORKFLOW.read_text())


def test_schema():
    res = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW))
    assert res.returncode == 0, res.stdout + res.stderr


def test_schema_check_can_fail(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\non: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    res = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(bad))
    assert res.returncode != 0


def test_zizmor_no_high_findings():
    findings = _zizmor_findings(_tool("zizmor"), WORKFLOW)
    assert _high(findings) == []
    # the one expected finding: a self-hosted runner (medium, auditor persona), which is the point of this file
    assert {f["ident"] for f in findings} <= {"self-hosted-runner"}


def test_zizmor_flags_a_bad_workflow(tmp_path):
    wf = tmp_path / ".github" / "workflows" / "bad.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(BAD_WORKFLOW)
    high = _high(_zizmor_findings(_tool("zizmor"), wf))
    assert any(h.startswith("template-injection") for h in high), high


def test_runs_on_the_gpu_runner_with_the_cupy_backend(workflow):
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert job["env"]["GPUCONV_TEST_BACKENDS"] == "cupy"
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'pip install ".[test,cuda13]"' in runs
    assert "-m pytest" in runs
    assert re.search(r"gpuconv\"? kernels", runs)
    assert "available_backends()['cupy']" in runs  # an unusable cupy fails the job instead of skipping


def test_least_privilege_and_pinned_actions(workflow):
    assert workflow["permissions"] == {}
    (job,) = workflow["jobs"].values()
    assert job.get("permissions", {}) in ({}, {"contents": "read"})
    uses = [step for step in job["steps"] if "uses" in step]
    assert uses, "the job checks out the repository with actions/checkout"
    for step in uses:
        assert SHA_PIN.match(step["uses"]), f"{step['uses']} is not pinned to a full commit SHA"
        if step["uses"].startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False
    # a self-hosted runner must not run code from forks
    assert "head.repo.full_name == github.repository" in job["if"]


def test_uploads_the_kernels_report_and_a_bench_json(workflow):
    """What `gpuconv kernels --json` and `gpuconv bench --out` write is what the artifact step uploads."""
    (job,) = workflow["jobs"].values()
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    kernels_json = re.search(r'gpuconv"? kernels --json "\$RUNNER_TEMP/([\w./-]+\.json)"', runs)
    bench_out = re.search(r'gpuconv"? bench --quick --out "\$RUNNER_TEMP/([\w./-]+)"', runs)
    assert kernels_json and bench_out, runs
    (upload,) = [step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
    paths = [line.strip() for line in upload["with"]["path"].splitlines()]
    assert "${{ runner.temp }}/" + kernels_json.group(1) in paths
    assert "${{ runner.temp }}/" + bench_out.group(1).rstrip("/") + "/" in paths
    assert upload["if"] == "${{ !cancelled() }}"   # the reports matter most when a step failed
