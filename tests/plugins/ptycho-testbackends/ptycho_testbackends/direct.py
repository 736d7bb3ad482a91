"""Backends that the entry points name directly, without a BackendSpec.

``ZeroBackend`` is a dependency-free backend whose model is the zero object; it is
small but complete (train/infer/save/load, bundle with an empty payload), so it can
test the direct-class and factory resolution paths for real.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ptycho_core.bundle import read_bundle, write_bundle
from ptycho_core.protocol import TrainedModel


class ZeroBackend:
    """Predicts the zero object; its 'training' measures how far zero is from the data."""

    name = "direct-zero"

    def __init__(self, name: str = "direct-zero") -> None:
        self.name = name

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        if data.N != config.model.N:
            raise ValueError(f"{self.name}: data N={data.N} differs from config N={config.model.N}")
        hooks.ptycho_train_start(backend=self.name, config=config, n_groups=data.n_groups)
        target = data.intensity_scale * data.groups.diffraction.astype(np.float64)
        loss = float(np.mean(target**2))
        history: dict[str, list[float]] = {"loss": []}
        for epoch in range(config.nepochs):
            history["loss"].append(loss)
            hooks.ptycho_epoch_end(epoch=epoch, nepochs=config.nepochs, losses={"loss": loss})
        hooks.ptycho_train_end(history=history)
        return TrainedModel(
            backend=self.name,
            config=config,
            probe=np.asarray(data.probe, dtype=np.complex64),
            intensity_scale=float(data.intensity_scale),
            network=None,
            history=history,
        )

    def infer(self, model: TrainedModel, data: Any, config: Any, *, hooks: Any) -> np.ndarray:
        if data.N != model.N:
            raise ValueError(f"{self.name}: data N={data.N} differs from model N={model.N}")
        hooks.ptycho_infer_progress(done=data.n_groups, total=data.n_groups)
        return np.zeros((data.n_groups, data.N, data.N, 1), dtype=np.complex64)

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        write_bundle(path, model, lambda folder: None, framework={"numpy": np.__version__})

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        with read_bundle(path, expected_backend=self.name) as contents:
            return contents.trained_model(None)


def make_zero_factory_backend() -> ZeroBackend:
    """Zero-argument factory, the target of the 'zero-factory' spec."""
    return ZeroBackend(name="zero-factory")


class BadSignatureBackend:
    """Looks like a backend but its ``train`` lacks the ``config`` and ``hooks`` parameters."""

    name = "bad-signature"

    def train(self, data: Any) -> None:
        raise AssertionError("never called")

    def infer(self, model: Any, data: Any, config: Any, *, hooks: Any) -> None:
        raise AssertionError("never called")

    def save(self, model: Any, path: Any) -> None:
        raise AssertionError("never called")

    def load(self, path: Any) -> None:
        raise AssertionError("never called")


class BuggyInferBackend(ZeroBackend):
    """ZeroBackend whose ``infer`` fails with a plain ValueError: a bug, not a user error."""

    name = "buggy-infer"

    def __init__(self, name: str = "buggy-infer") -> None:
        super().__init__(name)

    def infer(self, model: TrainedModel, data: Any, config: Any, *, hooks: Any) -> np.ndarray:
        raise ValueError("buggy-infer: an internal inconsistency (a bug in the backend)")
