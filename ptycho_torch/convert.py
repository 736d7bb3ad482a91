"""Framework-neutral weights of a PyTorch model (specs/backend-protocol.md, "Framework-neutral weights").

:func:`export_arrays` turns a trained ``pytorch`` model into named float32 numpy arrays;
:func:`neutral_shapes` and :func:`assign_arrays` load such arrays, e.g. ones exported by
``ptycho_tf``, into a new network for
:meth:`~ptycho_core.network_backend.NetworkBackend.import_arrays`, which checks them first.
The names are the state-dict names of :mod:`ptycho_torch.model` with each
convolution's ``.weight`` renamed ``.kernel`` and permuted from torch's
(out, in, kh, kw) to the neutral (kh, kw, in, out); biases, ``log_gain`` and (when
trainable) the probe's parts keep their meaning. Neither this module nor the core
conversion ever imports the other framework.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ptycho_core.protocol import TrainedModel
from ptycho_torch.model import PtychoPINN
from ptycho_torch.persistence import network_of

__all__ = ["PROBE_NAMES", "assign_arrays", "export_arrays", "neutral_name", "neutral_shapes"]

PROBE_NAMES = ("probe.real", "probe.imag")
"""Names of the probe's parts; present only when the probe is trainable."""

_KERNEL_FROM_TORCH = (2, 3, 1, 0)  # (out, in, kh, kw) → (kh, kw, in, out)
_KERNEL_TO_TORCH = (3, 2, 0, 1)  # (kh, kw, in, out) → (out, in, kh, kw)


def neutral_name(name: str, tensor: torch.Tensor) -> str:
    """The neutral name of the state-dict entry ``name`` (``probe`` excepted)."""
    if name.endswith(".weight") and tensor.ndim == 4:
        return name[: -len(".weight")] + ".kernel"
    if name.endswith(".bias") or name == "log_gain":
        return name
    raise ValueError(f"state-dict entry {name!r} has no framework-neutral name")


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().to("cpu", torch.float32)
    if array.ndim == 4:
        array = array.permute(*_KERNEL_FROM_TORCH)
    return np.array(array.contiguous().numpy(), dtype=np.float32, copy=True)


def export_arrays(model: TrainedModel) -> dict[str, np.ndarray]:
    """Every learned array of ``model`` under its neutral name, as float32 numpy copies.

    Convolution kernels are (kh, kw, in, out), biases (out,), ``log_gain`` a 0-d array;
    ``probe.real`` / ``probe.imag`` (N, N) are included only when the probe is trainable.
    """
    network = network_of(model)
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in network.state_dict().items():
        if name == "probe":
            if model.config.probe_trainable:
                probe = tensor.detach().to("cpu")
                arrays["probe.real"] = np.array(probe.real.numpy(), dtype=np.float32, copy=True)
                arrays["probe.imag"] = np.array(probe.imag.numpy(), dtype=np.float32, copy=True)
            continue
        arrays[neutral_name(name, tensor)] = _to_numpy(tensor)
    return arrays


def _neutral_entries(network: PtychoPINN) -> dict[str, tuple[str, torch.Tensor]]:
    """Neutral name → (state-dict name, tensor) of every array :func:`export_arrays` gives."""
    entries: dict[str, tuple[str, torch.Tensor]] = {}
    for name, tensor in network.state_dict().items():
        if name == "probe":
            if network.probe_trainable:
                for part in PROBE_NAMES:
                    entries[part] = (name, tensor)
            continue
        entries[neutral_name(name, tensor)] = (name, tensor)
    return entries


def neutral_shapes(network: PtychoPINN) -> dict[str, tuple[int, ...]]:
    """Neutral name → shape of every array :func:`export_arrays` gives for ``network``."""
    return {
        neutral: (network.N, network.N)
        if name == "probe"
        else tuple(tensor.shape[i] for i in _KERNEL_FROM_TORCH)
        if tensor.ndim == 4
        else tuple(tensor.shape)
        for neutral, (name, tensor) in _neutral_entries(network).items()
    }


def assign_arrays(network: PtychoPINN, arrays: Mapping[str, np.ndarray]) -> None:
    """Load checked float32 ``arrays`` of :func:`neutral_shapes` into ``network``.

    Through ``load_state_dict(strict=True)``; the probe keeps its value unless it is
    trainable. The network is left in eval mode.
    """
    state: dict[str, torch.Tensor] = {"probe": network.probe.detach().clone()}
    for neutral, (name, tensor) in _neutral_entries(network).items():
        if name == "probe":
            continue
        array = arrays[neutral]
        if tensor.ndim == 4:
            array = array.transpose(_KERNEL_TO_TORCH)
        state[name] = torch.from_numpy(np.ascontiguousarray(array)).to(tensor.dtype)
    if network.probe_trainable:
        parts = arrays["probe.real"] + 1j * arrays["probe.imag"]
        state["probe"] = torch.from_numpy(parts.astype(np.complex64))
    network.load_state_dict(state, strict=True)
    network.eval()
