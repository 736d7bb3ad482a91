"""``TorchBackend``: the ``pytorch`` implementation of :class:`ptycho_core.protocol.ReconstructionBackend`.

It takes and returns numpy arrays and core dataclasses only. The protocol plumbing it
shares with ``ptycho_tf`` is :class:`ptycho_core.network_backend.NetworkBackend`; training is
delegated to :mod:`ptycho_torch.training` (Lightning), persistence to
:mod:`ptycho_torch.persistence` (core bundle + state dict), weight conversion to
:mod:`ptycho_torch.convert`. Inference runs the generator and the merge canvas under
``torch.inference_mode()`` in batches, channels-last, optionally under bfloat16 autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ptycho_core.config import PRECISIONS
from ptycho_core.errors import ConfigError
from ptycho_core.network_backend import NetworkBackend, Predict
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


class TorchBackend(NetworkBackend):
    """PtychoPINN on PyTorch + Lightning (CPU, CUDA, DDP across devices or nodes).

    Under DDP every rank trains and returns the (identical) model; only rank 0 reports to
    the hooks and only rank 0 writes in :meth:`save`.
    """

    name = training.BACKEND_NAME
    _training = training
    _persistence = persistence
    _convert = convert

    @contextlib.contextmanager
    def _predictor(
        self, network: PtychoPINN, precision: str, accelerator: str
    ) -> Iterator[Predict]:
        device = select_device(accelerator)
        network.to(device=device, memory_format=torch.channels_last)
        network.eval()
        with torch.inference_mode(), _precision(precision, device):

            def predict(diffraction: np.ndarray, coords: np.ndarray) -> np.ndarray:
                x = _tensor(diffraction, np.float32, device).permute(0, 3, 1, 2)
                obj = network.predict_object(x, _tensor(coords, np.float32, device))
                return obj.permute(0, 2, 3, 1).to(torch.complex64).cpu().numpy()

            yield predict
