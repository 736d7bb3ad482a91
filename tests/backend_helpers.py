"""Helpers shared by the framework backends' tests (tests/ is on sys.path through conftest.py)."""

from __future__ import annotations

from typing import Any

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.testing import HookRecorder as Recorder

__all__ = ["Recorder", "hooks_for", "small_config"]


def hooks_for(recorder: Recorder | None = None):
    """A hook relay with ``recorder`` (if any) and no installed plugins."""
    plugins = () if recorder is None else (recorder,)
    return make_plugin_manager(*plugins, load_entry_points=False).hook


def small_config(**changes: Any) -> TrainingConfig:
    """A fast N=64 training config (CPU, few groups, one epoch); ``backend`` is required."""
    values: dict[str, Any] = {
        "model": ModelConfig(N=64, gridsize=1),
        "nepochs": 1,
        "batch_size": 16,
        "n_groups": 32,
        "validation_split": 0.25,
        "accelerator": "cpu",
        "seed": 3,
    }
    values.update(changes)
    return TrainingConfig(**values)
