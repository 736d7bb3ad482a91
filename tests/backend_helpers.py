"""Helpers shared by the framework backends' tests (tests/ is on sys.path through conftest.py)."""

from __future__ import annotations

from typing import Any

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.testing import HookRecorder as Recorder

__all__ = ["STALLED_PLATEAU", "Recorder", "hooks_for", "small_config"]


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


STALLED_PLATEAU: dict[str, Any] = {
    "nphotons": 1e3,
    "nepochs": 4,
    "batch_size": 16,
    "lr_schedule": "plateau",
    "lr_warmup_steps": 2,
    "learning_rate": 1e-9,
    "min_learning_rate": 3e-10,
    "lr_plateau_factor": 0.5,
    "lr_plateau_patience": 1,
    "early_stop_patience": 10,
}
"""Changes to :func:`small_config` under which the 'plateau' schedule cuts every epoch.

At a rate of 1e-9 the network does not move, so after the first epoch the monitored loss
never improves by 1e-4 (1e3 photons keep the loss near 1, where float32 round-off stays
far below 1e-4); early stopping's patience outlasts the run."""
