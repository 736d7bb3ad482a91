"""``TensorFlowBackend``: the ``tensorflow`` implementation of :class:`ptycho_core.protocol.ReconstructionBackend`.

It takes and returns numpy arrays and core dataclasses only. The protocol plumbing it
shares with ``ptycho_torch`` is :class:`ptycho_core.network_backend.NetworkBackend`; training
is delegated to :mod:`ptycho_tf.training` (Keras ``fit``), persistence to
:mod:`ptycho_tf.persistence` (core bundle + ``.weights.h5``), weight conversion to
:mod:`ptycho_tf.convert`. Inference runs the generator and the merge canvas through a
compiled ``tf.function`` (one trace for every batch size, cached on the network), batch by
batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ptycho_core.config import TrainingConfig
from ptycho_core.network_backend import NetworkBackend, Predict
from ptycho_tf import convert, persistence, training
from ptycho_tf._keras import tf
from ptycho_tf.model import PtychoPINN

__all__ = ["TensorFlowBackend", "inference_device"]


def inference_device(accelerator: str) -> str:
    """The one device inference runs on: 'cpu' → CPU:0, 'gpu' → GPU:0 (error without one),
    'auto' → GPU:0 if TensorFlow sees a GPU, else CPU:0."""
    return training.resolve_devices(accelerator, 1)[0]


class TensorFlowBackend(NetworkBackend):
    """PtychoPINN on TensorFlow + Keras 3 (CPU, GPU, MirroredStrategy across devices)."""

    name = training.BACKEND_NAME
    description = "PtychoPINN on TensorFlow + Keras 3 (CPU, GPU, multi-device MirroredStrategy)"
    _training = training
    _persistence = persistence
    _convert = convert

    def _build_options(self, config: TrainingConfig) -> dict[str, Any]:
        return {"seed": config.seed}

    @contextlib.contextmanager
    def _predictor(
        self, network: PtychoPINN, precision: str, accelerator: str
    ) -> Iterator[Predict]:
        device = inference_device(accelerator)
        with tf.device(device):
            compiled = network.predictor(precision, device)

            def predict(diffraction: np.ndarray, coords: np.ndarray) -> np.ndarray:
                x = np.asarray(diffraction, dtype=np.float32)
                return compiled(x, np.asarray(coords, dtype=np.float32)).numpy()

            yield predict
