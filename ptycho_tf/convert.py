"""Framework-neutral weights of a TensorFlow model (specs/backend-protocol.md, "Framework-neutral weights").

:func:`export_arrays` turns a trained ``tensorflow`` model into named float32 numpy
arrays; :func:`neutral_shapes` and :func:`assign_arrays` load such arrays, e.g. ones
exported by ``ptycho_torch``, into a new network for
:meth:`~ptycho_core.network_backend.NetworkBackend.import_arrays`, which checks them first.
Keras already stores convolution kernels in the neutral layout (kh, kw, in, out), so the
arrays are the variables themselves, under the names of
:meth:`ptycho_tf.model.PtychoPINN.named_weights`. Neither this module nor the core
conversion ever imports the other framework.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ptycho_core.protocol import TrainedModel
from ptycho_tf.model import PtychoPINN
from ptycho_tf.persistence import network_of

__all__ = ["PROBE_NAMES", "assign_arrays", "export_arrays", "neutral_names", "neutral_shapes"]

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


def neutral_shapes(network: PtychoPINN) -> dict[str, tuple[int, ...]]:
    """Neutral name → shape of every array :func:`export_arrays` gives for ``network``."""
    variables = network.named_weights()
    return {name: tuple(variables[name].shape) for name in neutral_names(network)}


def assign_arrays(network: PtychoPINN, arrays: Mapping[str, np.ndarray]) -> None:
    """Set ``network``'s variables to checked float32 ``arrays`` of :func:`neutral_shapes`."""
    variables = network.named_weights()
    for name in neutral_names(network):
        variables[name].assign(arrays[name])
