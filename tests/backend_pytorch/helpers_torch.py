"""Helpers shared by the torch backend tests (imported by name: tests/backend_pytorch is on sys.path)."""

from __future__ import annotations

from typing import Any

from backend_helpers import Recorder, hooks_for
from backend_helpers import small_config as shared_small_config

from ptycho_core.config import TrainingConfig

__all__ = ["Recorder", "hooks_for", "small_config"]


def small_config(**changes: Any) -> TrainingConfig:
    """A fast N=64 pytorch training config (CPU, few groups, one epoch)."""
    return shared_small_config(**{"backend": "pytorch", **changes})
