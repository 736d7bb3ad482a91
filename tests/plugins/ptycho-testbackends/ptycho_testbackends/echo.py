"""The 'object-echo' backend: numpy-gain plus the initial-object capability, to watch it travel.

Its ``infer_from`` runs no solver: it returns the initial object it is given, cut into
patches at the group centres in the object's own frame (through ``origin``, with
:func:`ptycho_core.geometry.extract_patches`), the model's constant where the object does
not cover and 0 outside its image. It fits no scale (it predicts nothing to fit), and it
records every initial object it receives in ``received``, on the backend instance. So a
test can see that an object handed to a workflow or to ``ptycho infer --then`` reaches
the backend unchanged, values and origin. ``model_from_probe`` gives the zero object.
Its one inference option, ``echo_gain`` (default 1), multiplies every patch that ``infer``
and ``infer_from`` return, so a test can see which backend an option reached.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ptycho_core.backend_options import BackendOption, real_in
from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.geometry import extract_patches
from ptycho_core.grouping import GroupedData
from ptycho_core.protocol import TrainedModel
from ptycho_core.stitching import Stitched
from ptycho_testbackends.gain import NumpyGainBackend


class ObjectEchoBackend(NumpyGainBackend):
    """numpy-gain whose ``infer_from`` echoes the initial object."""

    name = "object-echo"

    inference_options: tuple[BackendOption, ...] = (
        BackendOption(
            "echo_gain", "factor of every returned patch", real_in(0.0, 1e6, low_open=True), 1.0
        ),
    )

    def __init__(self) -> None:
        self.received: list[Stitched] = []

    def infer(
        self, model: TrainedModel, data: GroupedData, config: InferenceConfig, *, hooks: Any
    ) -> np.ndarray:
        out = super().infer(model, data, config, hooks=hooks)
        gain = self._inference_options(config)["echo_gain"]
        return out if gain == 1.0 else (out * np.float32(gain)).astype(np.complex64)

    def infer_from(
        self,
        model: TrainedModel,
        data: GroupedData,
        config: InferenceConfig,
        initial_object: Stitched,
        *,
        hooks: Any,
    ) -> np.ndarray:
        constant = model.payload(self.name, np.ndarray)
        model.check_groups(data)
        config.require_no_iterations(self.name)
        gain = self._inference_options(config)["echo_gain"]
        self.received.append(initial_object)
        image = np.where(initial_object.covered, initial_object.image, constant) * gain
        row0, col0 = initial_object.origin
        centres = data.coords_offsets[:, 0, :, 0]
        out = np.empty((data.n_groups, data.N, data.N, 1), dtype=np.complex64)
        for start in range(0, data.n_groups, config.batch_size):
            stop = min(start + config.batch_size, data.n_groups)
            x, y = centres[start:stop, 0] - col0, centres[start:stop, 1] - row0
            out[start:stop, :, :, 0] = extract_patches(image, x, y, data.N)
            hooks.ptycho_infer_progress(done=stop, total=data.n_groups)
        return out

    def model_from_probe(self, probe: np.ndarray, config: TrainingConfig) -> TrainedModel:
        self._training_options(config)
        N = config.model.N
        if np.shape(probe) != (N, N):
            raise ValueError(f"{self.name}: expected a ({N}, {N}) probe, found {np.shape(probe)}")
        return TrainedModel(
            backend=self.name,
            config=config.replace(backend=self.name),
            probe=np.asarray(probe, dtype=np.complex64),
            intensity_scale=math.sqrt(config.nphotons) / (N / 2),
            network=np.asarray(0j, dtype=np.complex128),
            extra={"object_constant": [0.0, 0.0]},
        )
