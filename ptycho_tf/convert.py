"""Framework-neutral weights of a TensorFlow model (specs/backend-protocol.md, "Framework-neutral weights").

:func:`export_arrays` turns a trained ``tensorflow`` model into named float32 numpy
arrays; :func:`import_arrays` builds a ``tensorflow`` model from such arrays, e.g. ones
exported by ``ptycho_torch``. Keras already stores convolution kernels in the neutral
layout (kh, kw, in, out), so the arrays are the variables themselves, under the names of
:meth:`ptycho_tf.model.PtychoPINN.named_weights`. Neither this module nor the core
conversion ever imports the other framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ptycho_core.config import TrainingConfig
from ptycho_core.convert import checked_import, checked_intensity_scale
from ptycho_core.protocol import TrainedModel
from ptycho_tf.model import PtychoPINN
from ptycho_tf.persistence import network_of
from ptycho_tf.training import BACKEND_NAME, build_network

__all__ = ["PROBE_NAMES", "export_arrays", "import_arrays", "neutral_names"]

PROBE_NAMES = ("probe.real", "probe.imag")
"""Names of the probe's parts; present only when the probe is trainable."""


def neutral_names(network: PtychoPINN) -> list[str]:
    """The neutral names :func:`export_arrays` gives for ``network``'s configuration."""
    return [
        name
        for name in network.named_weights()
        if network.probe_trainable or name not in PROBE_NAMES
    ]


def export_arrays(model: TrainedModel) -> dict[str, np.ndarray]:
    """Every learned array of ``model`` under its neutral name, as float32 numpy copies.

    Convolution kernels are (kh, kw, in, out), biases (out,), ``log_gain`` a 0-d array;
    ``probe.real`` / ``probe.imag`` (N, N) are included only when the probe is trainable
    (otherwise the probe is the model's ``probe`` field).
    """
    network = network_of(model)
    variables = network.named_weights()
    return {
        name: np.array(variables[name].numpy(), dtype=np.float32, copy=True)
        for name in neutral_names(network)
    }


def import_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    config: TrainingConfig,
    probe: np.ndarray,
    intensity_scale: float,
    history: Mapping[str, Sequence[float]] | None = None,
) -> TrainedModel:
    """A ``tensorflow`` :class:`TrainedModel` holding ``arrays`` (names as :func:`export_arrays`).

    ``config.model`` is the architecture, ``probe`` the normalised training probe and
    ``intensity_scale`` s₀; with a trainable probe the arrays' ``probe.real`` /
    ``probe.imag`` are the network's probe and the model's. Raises ``ValueError`` naming
    the array for a missing, unexpected, misshapen or non-finite one.
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
        seed=config.seed,
    )
    variables = network.named_weights()
    names = neutral_names(network)
    checked = checked_import(arrays, {name: tuple(variables[name].shape) for name in names})
    for name in names:
        variables[name].assign(checked[name])
    return TrainedModel(
        backend=BACKEND_NAME,
        config=config,
        probe=network.probe(),
        intensity_scale=float(intensity_scale),
        network=network,
        history={k: list(v) for k, v in (history or {}).items()},
        extra={"output_gain": network.output_gain, "parameters": network.trainable_parameters()},
    )
