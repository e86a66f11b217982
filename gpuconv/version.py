"""gpuconv's version: from the installed package's metadata, so that pyproject.toml is its one source."""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

UNKNOWN = "0+unknown"


def _source_tree_version(pyproject: Path) -> str | None:
    """The [project] version of a gpuconv checkout that was put on sys.path without being installed."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if table is None or not re.search(r'^name\s*=\s*"gpuconv"\s*$', table.group(1), re.M):
        return None
    version = re.search(r'^version\s*=\s*"([^"]+)"\s*$', table.group(1), re.M)
    return version.group(1) if version else None


def package_version() -> str:
    try:
        return importlib.metadata.version("gpuconv")
    except importlib.metadata.PackageNotFoundError:
        return _source_tree_version(Path(__file__).resolve().parents[1] / "pyproject.toml") or UNKNOWN
