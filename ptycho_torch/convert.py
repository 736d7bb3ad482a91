"""Framework-neutral weights of a PyTorch model (specs/backend-protocol.md, "Framework-neutral weights").

:func:`export_arrays` turns a trained ``pytorch`` model into named float32 numpy arrays;
:func:`import_arrays` builds a ``pytorch`` model from such arrays, e.g. ones exported by
``ptycho_tf``. The names are the state-dict names of :mod:`ptycho_torch.model` with each
convolution's ``.weight`` renamed ``.kernel`` and permuted from torch's
(out, in, kh, kw) to the neutral (kh, kw, in, out); biases, ``log_gain`` and (when
trainable) the probe's parts keep their meaning. Neither this module nor the core
conversion ever imports the other framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ptycho_core.config import TrainingConfig
from ptycho_core.convert import checked_import, checked_intensity_scale
from ptycho_core.protocol import TrainedModel
from ptycho_torch.persistence import network_of, trainable_parameters
from ptycho_torch.training import BACKEND_NAME, build_network

__all__ = ["PROBE_NAMES", "export_arrays", "import_arrays", "neutral_name"]

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


def import_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    config: TrainingConfig,
    probe: np.ndarray,
    intensity_scale: float,
    history: Mapping[str, Sequence[float]] | None = None,
) -> TrainedModel:
    """A ``pytorch`` :class:`TrainedModel` holding ``arrays`` (names as :func:`export_arrays`).

    ``config.model`` is the architecture, ``probe`` the normalised training probe and
    ``intensity_scale`` s₀; with a trainable probe the arrays' ``probe.real`` /
    ``probe.imag`` are the network's probe and the model's. Raises ``ValueError`` naming
    the array for a missing, unexpected, misshapen or non-finite one; the network is
    loaded with ``load_state_dict(strict=True)``.
    """
    intensity_scale = checked_intensity_scale(intensity_scale)
    if config.backend != BACKEND_NAME:
        config = config.replace(backend=BACKEND_NAME)
    network = build_network(
        config.model,
        probe,
        float(intensity_scale),
        intensity_scale_trainable=config.intensity_scale_trainable,
        probe_trainable=config.probe_trainable,
    )
    reference = network.state_dict()
    expected: dict[str, tuple[str, torch.Tensor]] = {}
    for name, tensor in reference.items():
        if name == "probe":
            if config.probe_trainable:
                for part in PROBE_NAMES:
                    expected[part] = (name, tensor)
            continue
        expected[neutral_name(name, tensor)] = (name, tensor)
    shapes = {
        neutral: (config.model.N, config.model.N)
        if name == "probe"
        else tuple(tensor.shape[i] for i in _KERNEL_FROM_TORCH)
        if tensor.ndim == 4
        else tuple(tensor.shape)
        for neutral, (name, tensor) in expected.items()
    }
    checked = checked_import(arrays, shapes)
    state: dict[str, torch.Tensor] = {}
    for neutral, (name, tensor) in expected.items():
        if name == "probe":
            continue
        array = checked[neutral]
        if tensor.ndim == 4:
            array = array.transpose(_KERNEL_TO_TORCH)
        state[name] = torch.from_numpy(np.ascontiguousarray(array)).to(tensor.dtype)
    if config.probe_trainable:
        parts = checked["probe.real"] + 1j * checked["probe.imag"]
        state["probe"] = torch.from_numpy(parts.astype(np.complex64))
    else:
        state["probe"] = reference["probe"].clone()
    network.load_state_dict(state, strict=True)
    network.eval()
    model_probe = (
        state["probe"].numpy().copy() if config.probe_trainable else np.asarray(probe, np.complex64)
    )
    return TrainedModel(
        backend=BACKEND_NAME,
        config=config,
        probe=np.asarray(model_probe, dtype=np.complex64),
        intensity_scale=float(intensity_scale),
        network=network,
        history={k: list(v) for k, v in (history or {}).items()},
        extra={"output_gain": network.output_gain, "parameters": trainable_parameters(network)},
    )
