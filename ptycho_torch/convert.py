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

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ptycho_core.config import TrainingConfig
from ptycho_core.protocol import TrainedModel
from ptycho_torch.model import PtychoPINN
from ptycho_torch.persistence import trainable_parameters
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


def _network(model: TrainedModel) -> PtychoPINN:
    if model.backend != BACKEND_NAME or not isinstance(model.network, PtychoPINN):
        raise ValueError(
            f"TrainedModel: expected a model of backend {BACKEND_NAME!r} holding a ptycho_torch "
            f"PtychoPINN network, found backend {model.backend!r} with {type(model.network).__name__}"
        )
    return model.network


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
    network = _network(model)
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


def _check(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(
            f"import_arrays: array {name!r}: expected shape {shape}, found {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"import_arrays: array {name!r}: expected real numbers, found dtype {array.dtype}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"import_arrays: array {name!r} holds NaN or inf")
    return array.astype(np.float32)


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
    if not isinstance(arrays, Mapping):
        raise ValueError(
            f"import_arrays: expected a mapping of name to array, found {type(arrays).__name__}"
        )
    if not (
        isinstance(intensity_scale, int | float)
        and math.isfinite(intensity_scale)
        and intensity_scale > 0
    ):
        raise ValueError(f"import_arrays: expected intensity_scale > 0, found {intensity_scale!r}")
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
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise ValueError(
            f"import_arrays: array {missing[0]!r} is missing"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    unexpected = sorted(name for name in arrays if name not in expected)
    if unexpected:
        raise ValueError(
            f"import_arrays: array {unexpected[0]!r} does not belong to the architecture of the "
            "config (a different model_type, pad_object, probe_big or probe_trainable?)"
        )
    state: dict[str, torch.Tensor] = {}
    for neutral, (name, tensor) in expected.items():
        if name == "probe":
            continue
        shape = tuple(tensor.shape)
        if tensor.ndim == 4:
            neutral_shape = tuple(shape[i] for i in _KERNEL_FROM_TORCH)
            array = _check(neutral, arrays[neutral], neutral_shape).transpose(_KERNEL_TO_TORCH)
        else:
            array = _check(neutral, arrays[neutral], shape)
        state[name] = torch.from_numpy(np.ascontiguousarray(array)).to(tensor.dtype)
    if config.probe_trainable:
        N = config.model.N
        real = _check("probe.real", arrays["probe.real"], (N, N))
        imag = _check("probe.imag", arrays["probe.imag"], (N, N))
        state["probe"] = torch.from_numpy((real + 1j * imag).astype(np.complex64))
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
