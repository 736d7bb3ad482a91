"""``TorchBackend``: the ``pytorch`` implementation of :class:`ptycho_core.protocol.ReconstructionBackend`.

It takes and returns numpy arrays and core dataclasses only. Training is delegated to
:mod:`ptycho_torch.training` (Lightning), persistence to :mod:`ptycho_torch.persistence`
(core bundle + state dict). Inference runs the generator and the merge canvas under
``torch.inference_mode()`` in batches, channels-last, optionally under bfloat16 autocast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from ptycho_core.config import PRECISIONS, InferenceConfig, TrainingConfig
from ptycho_core.errors import ConfigError
from ptycho_core.grouping import GroupedData
from ptycho_core.hooks import HookRelay
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_torch import convert, persistence, training
from ptycho_torch.model import PtychoPINN

__all__ = ["TorchBackend", "select_device"]


def select_device(accelerator: str) -> torch.device:
    """'cpu' → CPU; 'gpu' → the current CUDA device (error without one); 'auto' → CUDA if present."""
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "accelerator: expected a device torch can use, found 'gpu' but torch sees no "
                "CUDA device (use 'cpu' or 'auto')"
            )
        return torch.device("cuda")
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ValueError(f"accelerator: expected 'auto', 'cpu' or 'gpu', found {accelerator!r}")


def _tensor(array: np.ndarray, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """A tensor of ``array`` (copied only when needed: torch refuses read-only numpy memory)."""
    array = np.ascontiguousarray(array, dtype=dtype)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device, non_blocking=True)


@contextlib.contextmanager
def _precision(precision: str, device: torch.device) -> Iterator[None]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}")
    if precision == "bf16-mixed":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


class TorchBackend:
    """PtychoPINN on PyTorch + Lightning (CPU, CUDA, DDP across devices or nodes)."""

    name = training.BACKEND_NAME

    # -- protocol ---------------------------------------------------------------------------

    def train(
        self, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Fit a new network; deterministic for a given ``config.seed`` on the CPU.

        Under DDP every rank returns the (identical) trained model; only rank 0 reports
        to the hooks and only rank 0 writes in :meth:`save`.
        """
        if config.backend != self.name:
            config = config.replace(backend=self.name)
        network, history = training.fit(data, config, hooks)
        return self._trained(network, history, data, config)

    def train_from(
        self, model: TrainedModel, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Continue training ``model`` (weights, output gain, probe) on ``data``: a new model.

        The same Lightning path as :meth:`train`, around a copy of the trained network, so
        ``model`` is left unchanged; deterministic for a given ``config.seed`` on the CPU.
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
        device = select_device(config.accelerator)
        total = data.n_groups
        result = np.empty((total, model.N, model.N, 1), dtype=np.complex64)
        self._prepare(network, device)
        with torch.inference_mode(), _precision(config.precision, device):
            for start in range(0, total, config.batch_size):
                stop = min(start + config.batch_size, total)
                result[start:stop] = self._predict(
                    network, data.diffraction[start:stop], data.coords_relative[start:stop], device
                )
                hooks.ptycho_infer_progress(done=stop, total=total)
        return result

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        """Write a bundle atomically; a no-op on DDP ranks other than 0."""
        self._network(model)
        if training.is_global_zero():
            persistence.save_model(model, path)

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        """Read a ``pytorch`` bundle; another backend's raises ``BackendMismatchError``."""
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
        device = select_device(accelerator)
        self._prepare(network, device)
        with torch.inference_mode(), _precision(precision, device):
            out = self._predict(network, diffraction, coords_relative, device)
        return out.copy()  # owned by numpy, not a view of torch memory

    def export_arrays(self, model: TrainedModel) -> dict[str, np.ndarray]:
        """Framework-neutral weights (specs/backend-protocol.md §8; see :mod:`ptycho_torch.convert`)."""
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
        """A ``pytorch`` model from framework-neutral weights (e.g. exported by ``tensorflow``)."""
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
        probe = network.probe.detach().numpy().copy() if config.probe_trainable else data.probe
        return TrainedModel(
            backend=self.name,
            config=config,
            probe=np.asarray(probe, dtype=np.complex64),
            intensity_scale=float(data.intensity_scale),
            network=network,
            history=history,
            extra={
                "output_gain": network.output_gain,
                "parameters": persistence.trainable_parameters(network),
            },
        )

    @staticmethod
    def _prepare(network: PtychoPINN, device: torch.device) -> None:
        network.to(device=device, memory_format=torch.channels_last)
        network.eval()

    @staticmethod
    def _predict(
        network: PtychoPINN, diffraction: np.ndarray, coords: np.ndarray, device: torch.device
    ) -> np.ndarray:
        x = _tensor(diffraction, np.float32, device).permute(0, 3, 1, 2)
        c = _tensor(coords, np.float32, device)
        obj = network.predict_object(x, c)
        return obj.permute(0, 2, 3, 1).to(torch.complex64).cpu().numpy()
