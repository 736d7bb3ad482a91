"""Upstream PtychoPINN archives, written at test time as upstream writes them, import into
the TensorFlow backend and compute what upstream's own network computes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from upstream_fixtures import (
    generator_archive,
    upstream_generator,
    upstream_params,
    upstream_patches,
    write_archive,
)

from ptycho_core.config import ModelConfig
from ptycho_core.convert import import_upstream
from ptycho_core.data import save_npz
from ptycho_core.errors import UpstreamArchiveError
from ptycho_core.simulate import default_dataset
from ptycho_core.upstream import read_upstream_archive
from ptycho_tf._keras import keras
from ptycho_tf.backend import TensorFlowBackend

S = 988.2
ARCHITECTURES = {
    "default": ModelConfig(),
    "gridsize-2-wide": ModelConfig(gridsize=2, n_filters_scale=2),
    "single-head": ModelConfig(gridsize=2, object_big=False, probe_big=False),
    "full-field-swish": ModelConfig(pad_object=False, amp_activation="swish"),
    "N-128-softplus": ModelConfig(N=128, amp_activation="softplus"),
}


def _archive(tmp_path: Path, model: ModelConfig, **generator: float) -> tuple[Path, object]:
    return generator_archive(tmp_path / "wts.h5", model, S, **generator)


def _upstream_patches(network: object, model: ModelConfig, x: np.ndarray, coords: np.ndarray):
    return upstream_patches(network, model, x, coords, S)


def _batch(model: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    C = model.channels
    x = rng.random((5, model.N, model.N, C), dtype=np.float32)
    return x, rng.normal(0, 3, (5, 1, 2, C)).astype(np.float32)


def _relative(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(found - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_an_upstream_archive_imports_and_computes_upstreams_patches(tmp_path, name) -> None:
    model = ARCHITECTURES[name]
    archive, network = _archive(tmp_path, model)
    bundle = tmp_path / "imported.ptycho"
    imported = import_upstream(archive, bundle)
    assert imported.backend == "tensorflow"
    assert imported.config.model == model
    assert imported.intensity_scale == pytest.approx(S)
    backend = TensorFlowBackend()
    x, coords = _batch(model)
    found = backend.forward(backend.load(bundle), x, coords)
    assert _relative(found, _upstream_patches(network, model, x, coords)) <= 1e-5


def test_the_imported_arrays_are_the_layers_upstream_built(tmp_path) -> None:
    model = ModelConfig(gridsize=2)
    archive, network = _archive(tmp_path, model)
    arrays = read_upstream_archive(archive).arrays
    convolutions = {layer.name: layer for layer in network.layers if "conv2d" in layer.name}
    # upstream creates 6 encoder convs, then per decoder: path-1 head, path-2 head, 4 block
    # convs, 2 path-2 ConvUp convs (this test's knowledge of upstream, not the reader's)
    expected = {
        "encoder.blocks.0.conv0": "conv2d",
        "encoder.blocks.2.conv1": "conv2d_5",
        "decoder_amp.head": "conv2d_6",
        "decoder_amp.outer.head": "conv2d_7",
        "decoder_amp.blocks.0.conv0": "conv2d_8",
        "decoder_amp.outer.up.conv1": "conv2d_13",
        "decoder_phase.head": "conv2d_14",
        "decoder_phase.blocks.1.conv1": "conv2d_19",
    }
    for neutral, keras_name in expected.items():
        kernel, bias = convolutions[keras_name].get_weights()
        np.testing.assert_array_equal(arrays[f"{neutral}.kernel"], kernel)
        np.testing.assert_array_equal(arrays[f"{neutral}.bias"], bias)
    assert float(arrays["log_gain"]) == 0.0


def test_a_log_scale_saved_with_the_model_is_folded_into_the_network(tmp_path) -> None:
    """Older upstream saved its log scale with the layer; its inputs were s·X_n/exp(log_scale)."""
    model = ModelConfig()
    saved = math.log(S) + 0.3
    archive, network = _archive(tmp_path, model, saved_log_scale=saved)
    bundle = tmp_path / "imported.ptycho"
    imported = import_upstream(archive, bundle)
    backend = TensorFlowBackend()
    x, coords = _batch(model)
    found = backend.forward(backend.load(bundle), x, coords)
    assert _relative(found, _upstream_patches(network, model, x, coords)) <= 1e-5
    assert float(backend.export_arrays(imported)["log_gain"]) == pytest.approx(0.3, abs=1e-6)


def test_import_upstream_then_infer_from_the_command_line(tmp_path) -> None:
    model = ModelConfig()
    archive, _ = _archive(tmp_path, model)
    bundle = tmp_path / "imported.ptycho"
    result = run_cli("import-upstream", str(archive), "--output", str(bundle))
    assert result.returncode == 0, result.stderr
    assert "as backend 'tensorflow'" in result.stdout
    data = tmp_path / "data.npz"
    save_npz(default_dataset("test", N=64, n_positions=64), data)
    result = run_cli("infer", str(bundle), str(data), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert any((tmp_path / "out").iterdir())


def test_a_layer_that_maps_nowhere_is_named(tmp_path) -> None:
    model = ModelConfig()
    _, network = _archive(tmp_path, model)
    extra = keras.layers.Dense(3, name="dense_extra")(network.outputs[0])
    odd = keras.Model(network.inputs, [*network.outputs, extra])
    params = upstream_params(model, probe=np.ones((64, 64, 1), np.complex64))
    archive = write_archive(tmp_path / "odd", params, S, models={"diffraction_to_obj": odd})
    with pytest.raises(UpstreamArchiveError, match="'dense_extra' \\(Dense\\) holds weights"):
        read_upstream_archive(archive)


def test_settings_that_contradict_the_weights_are_refused(tmp_path) -> None:
    model = ModelConfig()
    network = upstream_generator(model, S)
    params = upstream_params(ModelConfig(n_filters_scale=2), probe=np.ones((64, 64, 1)))
    archive = write_archive(tmp_path / "wts.h5", params, S, models={"diffraction_to_obj": network})
    with pytest.raises(
        UpstreamArchiveError,
        match=r"encoder\.blocks\.0\.conv0\.kernel\): expected shape \(3, 3, 1, 64\), found \(3, 3, 1, 32\)",
    ):
        read_upstream_archive(archive)
