"""The ONNX export computes what both framework networks compute, architecture by
architecture: the same neutral weights imported into ``pytorch``, ``tensorflow`` and
``onnx`` give the same object patches, and the core's weight layout is theirs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from ptycho_core.architecture import initial_arrays, neutral_shapes
from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.physics import focused_probe, normalize_probe
from ptycho_onnx.backend import OnnxBackend
from ptycho_tf.backend import TensorFlowBackend
from ptycho_tf.convert import neutral_shapes as tf_shapes
from ptycho_torch.backend import TorchBackend
from ptycho_torch.convert import neutral_shapes as torch_shapes

S0 = 988.0
ARCHITECTURES = {
    "default": ModelConfig(),
    "gridsize-2": ModelConfig(gridsize=2),
    "gridsize-2-single-head": ModelConfig(gridsize=2, object_big=False),
    "full-field-swish": ModelConfig(pad_object=False, amp_activation="swish"),
    "no-outer-field-relu": ModelConfig(probe_big=False, amp_activation="relu"),
    "wide-softplus": ModelConfig(n_filters_scale=2, amp_activation="softplus"),
    "N-128": ModelConfig(N=128),
}


def relative_error(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(found - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_one_set_of_weights_gives_one_object_in_every_runtime(name: str) -> None:
    model = ARCHITECTURES[name]
    probe = normalize_probe(focused_probe(model.N), model.probe_scale).astype(np.complex64)
    config = TrainingConfig(model=model)
    arrays = initial_arrays(model, probe, S0, seed=5)
    rng = np.random.default_rng(1)
    C = model.channels
    x = rng.random((6, model.N, model.N, C), dtype=np.float32)
    coords = rng.normal(0, 3, (6, 1, 2, C)).astype(np.float32)
    outputs = {}
    for backend in (TorchBackend(), TensorFlowBackend(), OnnxBackend()):
        imported = backend.import_arrays(
            arrays, config=config.replace(backend=backend.name), probe=probe, intensity_scale=S0
        )
        outputs[backend.name] = backend.forward(imported, x, coords)
        if backend.name != "onnx":
            network = imported.network
            shapes = (torch_shapes if backend.name == "pytorch" else tf_shapes)(network)
            assert shapes == neutral_shapes(model)
    assert relative_error(outputs["onnx"], outputs["pytorch"]) <= 1e-4
    assert relative_error(outputs["onnx"], outputs["tensorflow"]) <= 1e-4
