"""Helpers shared by the TensorFlow backend tests (imported by name: tests/backend_tensorflow is on sys.path)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.hooks import hookimpl, make_plugin_manager
from ptycho_core.protocol import TrainedModel

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Recorder:
    """A hook plugin that records every call (a real plugin, registered with pluggy)."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @hookimpl
    def ptycho_train_start(self, backend: str, config: Any, n_groups: int) -> None:
        self.calls.append(
            ("train_start", {"backend": backend, "config": config, "n_groups": n_groups})
        )

    @hookimpl
    def ptycho_epoch_end(self, epoch: int, nepochs: int, losses: Mapping[str, float]) -> None:
        self.calls.append(
            ("epoch_end", {"epoch": epoch, "nepochs": nepochs, "losses": dict(losses)})
        )

    @hookimpl
    def ptycho_train_end(self, history: Mapping[str, Sequence[float]]) -> None:
        self.calls.append(("train_end", {"history": {k: list(v) for k, v in history.items()}}))

    @hookimpl
    def ptycho_infer_progress(self, done: int, total: int) -> None:
        self.calls.append(("infer_progress", {"done": done, "total": total}))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [args for call, args in self.calls if call == name]


def hooks_for(recorder: Recorder | None = None):
    """A hook relay with ``recorder`` (if any) and no installed plugins."""
    plugins = () if recorder is None else (recorder,)
    return make_plugin_manager(*plugins, load_entry_points=False).hook


def small_config(**changes: Any) -> TrainingConfig:
    """A fast N=64 training config (CPU, few groups, few epochs)."""
    model = changes.pop("model", ModelConfig(N=64, gridsize=1))
    values: dict[str, Any] = {
        "model": model,
        "backend": "tensorflow",
        "nepochs": 1,
        "batch_size": 16,
        "n_groups": 32,
        "validation_split": 0.25,
        "accelerator": "cpu",
        "seed": 3,
    }
    values.update(changes)
    return TrainingConfig(**values)


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


def random_batch(B: int, N: int, C: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-looking diffraction (B, N, N, C) and coords_relative (B, 1, 2, C)."""
    rng = np.random.default_rng(seed)
    diffraction = rng.random((B, N, N, C), dtype=np.float32)
    coords = (rng.random((B, 1, 2, C), dtype=np.float32) - 0.5) * (8.0 if C > 1 else 0.0)
    return diffraction, coords.astype(np.float32)


def subprocess_env() -> dict[str, str]:
    """The environment for child Pythons: this interpreter's import path, quiet TensorFlow."""
    env = dict(os.environ)
    paths = [str(REPO), *[p for p in sys.path if p]]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env
