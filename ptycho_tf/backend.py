"""``TensorFlowBackend``: the ``tensorflow`` implementation of :class:`ptycho_core.protocol.ReconstructionBackend`.

It takes and returns numpy arrays and core dataclasses only. Training is delegated to
:mod:`ptycho_tf.training` (Keras ``fit``), persistence to :mod:`ptycho_tf.persistence`
(core bundle + ``.weights.h5``), weight conversion to :mod:`ptycho_tf.convert`.
Inference runs the generator and the merge canvas through a compiled ``tf.function``
(one trace for every batch size, cached on the network), batch by batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ptycho_core.config import PRECISIONS, InferenceConfig, TrainingConfig
from ptycho_core.grouping import GroupedData
from ptycho_core.hooks import HookRelay
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_tf import convert, persistence, training
from ptycho_tf._keras import tf
from ptycho_tf.model import PtychoPINN

__all__ = ["TensorFlowBackend", "inference_device"]


def inference_device(accelerator: str) -> str:
    """The one device inference runs on: 'cpu' → CPU:0, 'gpu' → GPU:0 (error without one),
    'auto' → GPU:0 if TensorFlow sees a GPU, else CPU:0."""
    return training.resolve_devices(accelerator, 1)[0]


class TensorFlowBackend:
    """PtychoPINN on TensorFlow + Keras 3 (CPU, GPU, MirroredStrategy across devices)."""

    name = training.BACKEND_NAME
    description = "PtychoPINN on TensorFlow + Keras 3 (CPU, GPU, multi-device MirroredStrategy)"

    # -- protocol ---------------------------------------------------------------------------

    def train(
        self, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Fit a new network; deterministic for a given ``config.seed`` on the CPU."""
        if config.backend != self.name:
            config = config.replace(backend=self.name)
        network, history = training.fit(data, config, hooks)
        return self._trained(network, history, data, config)

    def train_from(
        self, model: TrainedModel, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Continue training ``model`` (weights, output gain, probe) on ``data``: a new model.

        The same Keras ``fit`` path as :meth:`train`, on a new network whose weights start
        as the trained one's, so ``model`` is left unchanged; deterministic for a given
        ``config.seed`` on the CPU.
        """
        initial = self._network(model)
        if config.backend != self.name:
            config = config.replace(backend=self.name)
        model.check_refinable(config, self.name)
        network, history = training.fit(data, config, hooks, initial=initial)
        return self._trained(network, history, data, config)

    def infer(
        self, model: TrainedModel, data: GroupedData, config: InferenceConfig, *, hooks: HookRelay
    ) -> np.ndarray:
        """Object patches at the group centres, complex64 (B, N, N, 1), in batches."""
        network = self._network(model)
        model.check_groups(data)
        config.require_single_device(self.name)
        config.require_no_iterations(self.name)
        device = inference_device(config.accelerator)
        total = data.n_groups
        result = np.empty((total, model.N, model.N, 1), dtype=np.complex64)
        with tf.device(device):
            predict = network.predictor(config.precision, device)
            diffraction = np.asarray(data.diffraction, dtype=np.float32)
            coords = np.asarray(data.coords_relative, dtype=np.float32)
            for start in range(0, total, config.batch_size):
                stop = min(start + config.batch_size, total)
                result[start:stop] = predict(diffraction[start:stop], coords[start:stop]).numpy()
                hooks.ptycho_infer_progress(done=stop, total=total)
        return result

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        """Write a bundle atomically (the model's backend and network are checked first)."""
        persistence.save_model(model, path)

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        """Read a ``tensorflow`` bundle; another backend's raises ``BackendMismatchError``."""
        return persistence.load_model(path)

    # -- extras -----------------------------------------------------------------------------

    def forward(
        self,
        model: TrainedModel,
        diffraction: np.ndarray,
        coords_relative: np.ndarray,
        *,
        precision: str = "32",
        accelerator: str = "auto",
    ) -> np.ndarray:
        """The bare network on one batch (no hooks, no batching): (B, N, N, 1) complex64.

        Used by ``ptycho bench`` to measure the forward throughput alone.
        """
        network = self._network(model)
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}"
            )
        device = inference_device(accelerator)
        with tf.device(device):
            output = network.predictor(precision, device)(
                np.asarray(diffraction, dtype=np.float32),
                np.asarray(coords_relative, dtype=np.float32),
            )
            return np.array(output.numpy(), copy=True)  # owned by numpy, not a view of TF memory

    def export_arrays(self, model: TrainedModel) -> dict[str, np.ndarray]:
        """Framework-neutral weights (specs/backend-protocol.md, "Framework-neutral weights")."""
        return convert.export_arrays(model)

    def import_arrays(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        config: TrainingConfig,
        probe: np.ndarray,
        intensity_scale: float,
        history: Mapping[str, Sequence[float]] | None = None,
    ) -> TrainedModel:
        """A ``tensorflow`` model from framework-neutral weights (e.g. exported by ``pytorch``)."""
        return convert.import_arrays(
            arrays, config=config, probe=probe, intensity_scale=intensity_scale, history=history
        )

    # -- helpers ----------------------------------------------------------------------------

    def _network(self, model: TrainedModel) -> PtychoPINN:
        return persistence.network_of(model)

    def _trained(
        self,
        network: PtychoPINN,
        history: dict[str, list[float]],
        data: TrainingData,
        config: TrainingConfig,
    ) -> TrainedModel:
        probe = (
            network.probe()
            if config.probe_trainable
            else np.asarray(data.probe, dtype=np.complex64)
        )
        return TrainedModel(
            backend=self.name,
            config=config,
            probe=probe,
            intensity_scale=float(data.intensity_scale),
            network=network,
            history=history,
            extra={
                "output_gain": network.output_gain,
                "parameters": network.trainable_parameters(),
            },
        )
