"""Runs the conv2d suite on every backend and each of its algorithms.

Parameters
    target   a Target(backend, algorithm) for each usable backend and each of its algorithms, plus
             "auto". Tests call `target.conv(x, w, ...)`, which skips (with the algorithm's own reason)
             when that algorithm cannot run the problem.
    backend  each usable backend name, for tests that do not depend on the algorithm.

GPUCONV_TEST_BACKENDS="numpy,emulator" restricts the backends (comma separated). Backends that exist
but are not usable on this host appear as one skipped case each, with the reason.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import pytest

import gpuconv
from gpuconv.backends import available_backends, get_backend
from gpuconv.problem import ConvProblem, parse_problem

import configs

ENV = "GPUCONV_TEST_BACKENDS"


def selected_backends() -> list[str]:
    known = list(available_backends())
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return known
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise pytest.UsageError(f"{ENV}={raw!r} names unknown backend(s) {unknown}; known: {known}")
    return names


def pytest_configure(config):
    selected_backends()        # fail fast, before collection, on a misspelt backend name


@dataclasses.dataclass(frozen=True)
class Target:
    backend: str
    algorithm: str = "auto"

    def __str__(self) -> str:
        return f"{self.backend}-{self.algorithm}"

    @property
    def scale(self) -> configs.Scale:
        return configs.SCALES.get(self.backend, configs.DEFAULT_SCALE)

    def problem(self, x, w, strides=1, padding="VALID", data_format="NHWC", dilations=None) -> ConvProblem:
        return parse_problem(x.shape, x.dtype, w.shape, w.dtype, strides, padding, data_format, dilations)[0]

    def why_not(self, p: ConvProblem) -> Optional[str]:
        if self.algorithm == "auto":
            return None
        return get_backend(self.backend).algorithms()[self.algorithm].why_not(p)

    def resolve(self, p: ConvProblem) -> str:
        """The algorithm that actually runs p (what "auto" picks)."""
        if self.algorithm != "auto":
            return self.algorithm
        return get_backend(self.backend).choose(p).name

    def can_run(self, case: configs.Case, dtype) -> Optional[str]:
        """None when this target runs `case`, else the algorithm's reason."""
        dt = configs.np_dtype(dtype)
        p = parse_problem(case.x_shape, dt, case.w_shape, dt, case.strides, case.padding,
                          case.data_format, case.dilations)[0]
        return self.why_not(p)

    def conv(self, x, w, strides=1, padding="VALID", data_format="NHWC", dilations=None):
        """gpuconv.conv2d on this backend/algorithm; skips when the algorithm cannot run the problem."""
        xa, wa = np.asarray(x), np.asarray(w)
        why = self.why_not(self.problem(xa, wa, strides, padding, data_format, dilations))
        if why is not None:
            pytest.skip(f"{self.algorithm}: {why}")
        return gpuconv.conv2d(x, w, strides, padding, data_format, dilations,
                              backend=self.backend, algorithm=self.algorithm)


def _targets():
    params = []
    reasons = available_backends()
    for b in selected_backends():
        if reasons[b] is not None:
            params.append(pytest.param(Target(b), id=f"{b}-unusable",
                                       marks=pytest.mark.skip(reason=f"backend {b!r} is not usable: {reasons[b]}")))
            continue
        for a in ["auto", *get_backend(b).algorithms()]:
            params.append(pytest.param(Target(b, a), id=str(Target(b, a))))
    return params


def _backends():
    reasons = available_backends()
    return [pytest.param(b, id=b, marks=[pytest.mark.skip(reason=f"backend {b!r} is not usable: {reasons[b]}")]
                         if reasons[b] is not None else []) for b in selected_backends()]


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", _targets())
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends())


@pytest.fixture
def small_workspace(monkeypatch):
    """Workspaces of a few KiB, so that every chunking path (row blocks, row segments) runs."""
    monkeypatch.setattr(gpuconv.config.settings, "numpy_workspace_bytes", 2048)
    monkeypatch.setattr(gpuconv.config.settings, "cuda_workspace_bytes", 2048)
