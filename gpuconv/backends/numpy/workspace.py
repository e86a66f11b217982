"""Workspace budgets of the NumPy algorithms' blocks, under config's workspace bound."""
from __future__ import annotations

from ... import config


def block_budget(cap: int) -> int:
    """Bytes a block's workspace may take: an algorithm's cache-friendly cap, never above the bound
    (a worker thread's share of it inside the batch split)."""
    return min(cap, config.numpy_workspace_bytes())
