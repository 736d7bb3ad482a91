"""Helpers shared by the TensorFlow backend tests (imported by name: tests/backend_tensorflow is on sys.path)."""

from __future__ import annotations

from backend_helpers import Recorder, hooks_for
from framework_suites.tf_framework import TENSORFLOW

from ptycho_core.config import TrainingConfig
from ptycho_core.protocol import TrainedModel

__all__ = [
    "Recorder",
    "hooks_for",
    "small_config",
    "untrained_model",
]


small_config = TENSORFLOW.small_config
"""A fast N=64 tensorflow training config (CPU, few groups, one epoch)."""


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
