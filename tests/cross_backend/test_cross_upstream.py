"""An upstream TensorFlow archive imports into every backend with ``import_arrays``: the
PyTorch network and the ONNX export compute what upstream's Keras network computes."""

from __future__ import annotations

import numpy as np
import pytest
from upstream_fixtures import upstream_generator, upstream_params, write_archive

from ptycho_core.config import ModelConfig
from ptycho_core.convert import import_upstream
from ptycho_core.object_patches import object_patches
from ptycho_core.physics import focused_probe, normalize_probe
from ptycho_core.workflows import get_backend

S = 988.2


@pytest.mark.parametrize("backend", ["pytorch", "onnx"])
def test_an_upstream_archive_imports_into_another_backend(tmp_path, backend) -> None:
    pytest.importorskip("onnxruntime")
    import tensorflow as tf

    model = ModelConfig(gridsize=2)
    network = upstream_generator(model, S, seed=4)
    probe = normalize_probe(focused_probe(model.N), model.probe_scale)
    params = upstream_params(model, probe=tf.constant(probe[..., None]))
    archive = write_archive(tmp_path / "wts.h5", params, S, models={"diffraction_to_obj": network})
    bundle = tmp_path / f"{backend}.ptycho"
    assert import_upstream(archive, bundle, backend=backend).backend == backend
    rng = np.random.default_rng(2)
    x = rng.random((4, model.N, model.N, model.channels), dtype=np.float32)
    coords = rng.normal(0, 3, (4, 1, 2, model.channels)).astype(np.float32)
    amplitude, phase = network.predict([x * np.float32(S), coords], verbose=0)
    expected = object_patches(amplitude, phase, coords, model)
    target = get_backend(backend)
    found = target.forward(target.load(bundle), x, coords)
    assert np.abs(found - expected).max() / np.abs(expected).max() <= 1e-4
