"""Records the launches a CUDA backend makes (and still runs them), for tests of launch geometry."""
from __future__ import annotations


class Recorder:
    """Wraps a backend's launch to record the launches it makes."""

    def __init__(self, monkeypatch, backend):
        self.launches = []
        original = backend.launch

        def record(launch):
            self.launches.append(launch)
            original(launch)
        monkeypatch.setattr(backend, "launch", record)
