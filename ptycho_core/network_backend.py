"""``NetworkBackend``: the protocol side of a backend whose model is one trained network.

``ptycho_torch`` and ``ptycho_tf`` run the same PtychoPINN network in two frameworks, and
everything they do around it that needs no framework is the same: binding the training
configuration to the backend, the checks before refining and inferring, inference in
batches with progress reports, the :class:`~ptycho_core.protocol.TrainedModel` they return
(the trained probe when it trains, the output gain and parameter count for the manifest),
reading that state off the network again before saving, and checking framework-neutral
weights before importing them. :class:`NetworkBackend` does all of it once, so the two
backends cannot drift apart; a subclass adds the framework.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

import numpy as np

from ptycho_core.backend_options import declared_options, resolve_backend_options
from ptycho_core.config import PRECISIONS, InferenceConfig, TrainingConfig
from ptycho_core.convert import checked_import, checked_intensity_scale
from ptycho_core.grouping import GroupedData
from ptycho_core.hooks import HookRelay
from ptycho_core.protocol import TrainedModel, TrainingData

__all__ = ["Network", "NetworkBackend", "Predict"]

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""One batch of normalised diffraction (B, N, N, C) and ``coords_relative`` (B, 1, 2, C),
float32 numpy, to object patches (B, N, N, 1) complex64 numpy."""


class Network(Protocol):
    """What :class:`NetworkBackend` reads off a subclass's network for the model and manifest."""

    @property
    def output_gain(self) -> float:
        """g = exp(log_gain), stored in the manifest as ``extra['output_gain']``."""
        ...

    def trainable_parameters(self) -> int:
        """Values the optimiser updates, stored in the manifest as ``extra['parameters']``."""
        ...

    def probe_array(self) -> np.ndarray:
        """The current probe P̃, complex64 (N, N), owned by numpy."""
        ...


class NetworkBackend:
    """The four protocol methods, ``train_from``, ``forward`` and the weight extras, framework-free.

    A subclass sets ``name`` and names its framework's modules, which provide:

    - ``_training``: ``fit(data, config, hooks, *, initial) -> (network, history)`` (a new
      network, or one whose weights start as ``initial``'s, which is left unchanged) and
      ``build_network(model_config, probe, intensity_scale, **options)``;
    - ``_persistence``: ``network_of(model)`` (the payload, after
      :meth:`TrainedModel.payload`'s checks), ``save_model(model, path)`` and
      ``load_model(path)``;
    - ``_convert``: ``export_arrays(model)``, ``neutral_shapes(network)`` (neutral name →
      shape, specs/backend-protocol.md §8) and ``assign_arrays(network, arrays)``.

    It implements :meth:`_predictor`, and :meth:`_build_options` when its networks take
    more than the config's trainability; its networks provide :class:`Network`. These names
    start with ``_`` because public names on a backend are reserved by the protocol.
    """

    name: ClassVar[str]
    _training: ClassVar[Any]
    _persistence: ClassVar[Any]
    _convert: ClassVar[Any]

    # -- protocol ---------------------------------------------------------------------------

    def train(
        self, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Fit a new network; deterministic for a given ``config.seed`` on the CPU."""
        self._training_options(config)
        return self._fit(data, config, hooks, initial=None)

    def train_from(
        self, model: TrainedModel, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Continue training ``model`` (weights, output gain, probe) on ``data``: a new model.

        The same path as :meth:`train`, on a new network whose weights start as the trained
        one's, so ``model`` is left unchanged; deterministic for a given ``config.seed`` on
        the CPU.
        """
        initial = self._network(model)
        model.check_refinable(config, self.name)
        self._training_options(config)
        return self._fit(data, config, hooks, initial=initial)

    def infer(
        self, model: TrainedModel, data: GroupedData, config: InferenceConfig, *, hooks: HookRelay
    ) -> np.ndarray:
        """Object patches at the group centres, complex64 (B, N, N, 1), in batches."""
        network = self._network(model)
        model.check_groups(data)
        config.require_single_device(self.name)
        config.require_no_iterations(self.name)
        self._inference_options(config)
        total = data.n_groups
        result = np.empty((total, model.N, model.N, 1), dtype=np.complex64)
        with self._predictor(network, config.precision, config.accelerator) as predict:
            for start in range(0, total, config.batch_size):
                stop = min(start + config.batch_size, total)
                result[start:stop] = predict(
                    data.diffraction[start:stop], data.coords_relative[start:stop]
                )
                hooks.ptycho_infer_progress(done=stop, total=total)
        return result

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        """Write a bundle atomically (the model's backend and network are checked first).

        The manifest's probe, output gain and parameter count are read off the network
        now, so a network changed after training is saved as it is.
        """
        network = self._network(model)
        probe, extra = self._state(network, model.config, model.probe)
        current = dataclasses.replace(model, probe=probe, extra={**dict(model.extra), **extra})
        self._persistence.save_model(current, path)

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        """Read a bundle of this backend; another backend's raises ``BackendMismatchError``."""
        return self._persistence.load_model(path)

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
        with self._predictor(network, precision, accelerator) as predict:
            return np.array(predict(diffraction, coords_relative), copy=True)

    def export_arrays(self, model: TrainedModel) -> dict[str, np.ndarray]:
        """Framework-neutral weights (specs/backend-protocol.md §8)."""
        return self._convert.export_arrays(model)

    def import_arrays(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        config: TrainingConfig,
        probe: np.ndarray,
        intensity_scale: float,
        history: Mapping[str, Sequence[float]] | None = None,
    ) -> TrainedModel:
        """A model of this backend holding ``arrays`` (names as :meth:`export_arrays`).

        ``config.model`` is the architecture, ``probe`` the normalised training probe and
        ``intensity_scale`` s₀; with a trainable probe the arrays' ``probe.real`` /
        ``probe.imag`` are the network's probe and the model's. Raises ``ValueError`` naming
        the array for a missing, unexpected, misshapen or non-finite one.
        """
        intensity_scale = checked_intensity_scale(intensity_scale)
        self._training_options(config)
        config = self._bound(config)
        network = self._training.build_network(
            config.model,
            probe,
            intensity_scale,
            **config.trainability(),
            **self._build_options(config),
        )
        checked = checked_import(arrays, self._convert.neutral_shapes(network))
        self._convert.assign_arrays(network, checked)
        return self._model(
            network, config, probe=probe, intensity_scale=intensity_scale, history=history
        )

    # -- framework --------------------------------------------------------------------------

    def _predictor(
        self, network: Any, precision: str, accelerator: str
    ) -> AbstractContextManager[Predict]:
        """A context in which the returned :data:`Predict` runs ``network`` on the device
        ``accelerator`` names, at ``precision``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _predictor")

    def _build_options(self, config: TrainingConfig) -> dict[str, Any]:
        """``build_network`` keywords beyond the trainability, for a network of ``config``."""
        return {}

    # -- helpers ----------------------------------------------------------------------------

    def _training_options(self, config: TrainingConfig) -> dict[str, Any]:
        """``config.backend_options`` resolved against this backend's ``training_options``
        (none by default, so any option is refused rather than ignored)."""
        return resolve_backend_options(
            self.name,
            config.backend_options,
            declared_options(self, "training"),
            field="TrainingConfig.backend_options",
        )

    def _inference_options(self, config: InferenceConfig) -> dict[str, Any]:
        """``config.backend_options`` resolved against this backend's ``inference_options``."""
        return resolve_backend_options(
            self.name,
            config.backend_options,
            declared_options(self, "inference"),
            field="InferenceConfig.backend_options",
        )

    def _network(self, model: TrainedModel) -> Any:
        return self._persistence.network_of(model)

    def _bound(self, config: TrainingConfig) -> TrainingConfig:
        """``config`` naming this backend (a model records the backend that trained it)."""
        return config if config.backend == self.name else config.replace(backend=self.name)

    def _fit(
        self, data: TrainingData, config: TrainingConfig, hooks: HookRelay, *, initial: Any
    ) -> TrainedModel:
        config = self._bound(config)
        network, history = self._training.fit(data, config, hooks, initial=initial)
        return self._model(
            network, config, probe=data.probe, intensity_scale=data.intensity_scale, history=history
        )

    def _model(
        self,
        network: Network,
        config: TrainingConfig,
        *,
        probe: np.ndarray,
        intensity_scale: float,
        history: Mapping[str, Sequence[float]] | None,
    ) -> TrainedModel:
        probe, extra = self._state(network, config, probe)
        return TrainedModel(
            backend=self.name,
            config=config,
            probe=probe,
            intensity_scale=float(intensity_scale),
            network=network,
            history={name: list(values) for name, values in (history or {}).items()},
            extra=extra,
        )

    @staticmethod
    def _state(
        network: Network, config: TrainingConfig, probe: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """What a model records of ``network`` now: its probe (the network's when ``config``
        trains it, else ``probe``) and the manifest's ``output_gain`` and ``parameters``."""
        if config.probe_trainable:
            probe = network.probe_array()
        extra = {"output_gain": network.output_gain, "parameters": network.trainable_parameters()}
        return np.asarray(probe, dtype=np.complex64), extra
