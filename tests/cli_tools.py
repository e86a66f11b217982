"""Finding the command-line checkers the test extra installs (check-jsonschema, zizmor, hadolint).

CI runs `.venv/bin/python -m pytest` without activating the environment, so the environment's scripts
folder is not on PATH: look next to the running interpreter first, then in its scripts folder, then on PATH.
"""
from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest


def find_tool(name: str) -> str | None:
    # sys.executable unresolved: a venv's python is a symlink, and the venv's scripts sit beside the link
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.exe"):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which(name)


def require_tool(name: str, dist: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed beside {sys.executable} nor on PATH (pip install {dist}, part of "
                    f"the test extra: pip install '.[test]')")
    return path
