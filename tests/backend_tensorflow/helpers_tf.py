"""Helpers shared by the TensorFlow backend tests (imported by name: tests/backend_tensorflow is on sys.path)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from backend_helpers import Recorder, hooks_for
from backend_helpers import small_config as shared_small_config

from ptycho_core.config import TrainingConfig
from ptycho_core.protocol import TrainedModel

__all__ = [
    "Recorder",
    "hooks_for",
    "small_config",
    "subprocess_env",
    "untrained_model",
]

REPO = Path(__file__).resolve().parents[2]


def small_config(**changes: Any) -> TrainingConfig:
    """A fast N=64 tensorflow training config (CPU, few groups, one epoch)."""
    return shared_small_config(**{"backend": "tensorflow", **changes})


def untrained_model(config: TrainingConfig | None = None, *, seed: int = 0) -> TrainedModel:
    """A ``tensorflow`` TrainedModel with freshly initialised weights (no training run)."""
    from ptycho_core.physics import focused_probe, normalize_probe
    from ptycho_tf.training import build_network

    config = small_config() if config is None else config
    N = config.model.N
    probe = normalize_probe(focused_probe(N), config.model.probe_scale)
    network = build_network(
        config.model,
        probe,
        988.0,
        intensity_scale_trainable=config.intensity_scale_trainable,
        probe_trainable=config.probe_trainable,
        seed=seed,
    )
    return TrainedModel(
        backend="tensorflow",
        config=config,
        probe=probe,
        intensity_scale=988.0,
        network=network,
        history={"loss": [1.0]},
        extra={"output_gain": network.output_gain},
    )


def subprocess_env() -> dict[str, str]:
    """The environment for child Pythons: this interpreter's import path, quiet TensorFlow."""
    env = dict(os.environ)
    paths = [str(REPO), *[p for p in sys.path if p]]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env
