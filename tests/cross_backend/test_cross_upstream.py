"""An upstream TensorFlow archive imports into every backend with ``import_arrays``: the
PyTorch network and the ONNX export compute what upstream's Keras network computes."""

from __future__ import annotations

import numpy as np
import pytest
from upstream_fixtures import generator_archive, upstream_patches

from ptycho_core.config import ModelConfig
from ptycho_core.convert import import_upstream
from ptycho_core.workflows import get_backend

S = 988.2


@pytest.mark.parametrize("backend", ["pytorch", "onnx"])
def test_an_upstream_archive_imports_into_another_backend(tmp_path, backend) -> None:
    pytest.importorskip("onnxruntime")
    model = ModelConfig(gridsize=2)
    archive, network = generator_archive(tmp_path / "wts.h5", model, S, seed=4)
    bundle = tmp_path / f"{backend}.ptycho"
    assert import_upstream(archive, bundle, backend=backend).backend == backend
    rng = np.random.default_rng(2)
    x = rng.random((4, model.N, model.N, model.channels), dtype=np.float32)
    coords = rng.normal(0, 3, (4, 1, 2, model.channels)).astype(np.float32)
    expected = upstream_patches(network, model, x, coords, S)
    target = get_backend(backend)
    found = target.forward(target.load(bundle), x, coords)
    assert np.abs(found - expected).max() / np.abs(expected).max() <= 1e-4
