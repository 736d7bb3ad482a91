"""Framework-neutral weights of the TensorFlow backend (export / import) and ptycho_core.convert."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from framework_suites.model import random_batch
from helpers_tf import hooks_for, small_config, untrained_model

from ptycho_core.bundle import read_manifest
from ptycho_core.config import ModelConfig
from ptycho_core.convert import ConversionError, convert_bundle, convert_model
from ptycho_tf.backend import TensorFlowBackend

BACKEND = TensorFlowBackend()


@pytest.fixture(scope="module")
def model():
    return untrained_model(
        small_config(model=ModelConfig(N=64, gridsize=2, n_filters_scale=2)), seed=7
    )


def test_exported_names_shapes_and_layout(model) -> None:
    arrays = BACKEND.export_arrays(model)
    network = model.network
    assert len(arrays) == 45 and "probe.real" not in arrays
    assert arrays["encoder.blocks.0.conv0.kernel"].shape == (3, 3, 4, 64)
    assert arrays["decoder_phase.outer.head.bias"].shape == (4,)
    assert arrays["log_gain"].shape == ()
    assert arrays["log_gain"] == pytest.approx(np.log(network.output_gain))
    assert all(a.dtype == np.float32 and a.flags.owndata for a in arrays.values())
    assert sum(a.size for a in arrays.values()) == 2_340_208 + 1
    kernel = network.named_weights()["decoder_amp.head.kernel"].numpy()
    assert np.array_equal(arrays["decoder_amp.head.kernel"], kernel)
    arrays["decoder_amp.head.kernel"][...] = 0  # a copy: the network is untouched
    assert np.array_equal(network.named_weights()["decoder_amp.head.kernel"].numpy(), kernel)


def test_import_gives_the_same_predictions_and_round_trips(model) -> None:
    arrays = BACKEND.export_arrays(model)
    arrays["log_gain"] = np.float32(0.25) * np.ones((), np.float32)
    copy = BACKEND.import_arrays(
        arrays,
        config=model.config,
        probe=model.probe,
        intensity_scale=model.intensity_scale,
        history={"loss": [2.0]},
    )
    assert copy.backend == "tensorflow" and copy.history == {"loss": [2.0]}
    assert copy.extra["output_gain"] == pytest.approx(np.exp(0.25))
    back = BACKEND.export_arrays(copy)
    assert set(back) == set(arrays) and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    x, coords = random_batch(3, 64, 4, seed=2)
    np.testing.assert_array_equal(
        BACKEND.forward(copy, x, coords, accelerator="cpu"),
        BACKEND.forward(model, x, coords, accelerator="cpu"),
    )


def test_trainable_probe_travels_as_two_real_arrays() -> None:
    model = untrained_model(small_config(probe_trainable=True), seed=1)
    arrays = BACKEND.export_arrays(model)
    assert arrays["probe.real"].shape == (64, 64)
    np.testing.assert_array_equal(arrays["probe.real"] + 1j * arrays["probe.imag"], model.probe)
    arrays["probe.imag"] = arrays["probe.imag"] + 0.5
    copy = BACKEND.import_arrays(
        arrays, config=model.config, probe=model.probe, intensity_scale=1.0
    )
    np.testing.assert_allclose(copy.probe.imag, model.probe.imag + 0.5, atol=1e-6)
    np.testing.assert_array_equal(copy.network.probe_array(), copy.probe)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda a: a.pop("decoder_amp.outer.up.conv1.bias"),
            r"array 'decoder_amp.outer.up.conv1.bias' is missing",
        ),
        (
            lambda a: a.update(
                {"decoder_amp.up.conv0.kernel": np.zeros((3, 3, 64, 64), np.float32)}
            ),
            r"array 'decoder_amp.up.conv0.kernel' does not belong",
        ),
        (
            lambda a: a.update(
                {"encoder.blocks.0.conv0.kernel": np.zeros((64, 4, 3, 3), np.float32)}
            ),
            r"array 'encoder.blocks.0.conv0.kernel': expected shape \(3, 3, 4, 64\), found \(64, 4, 3, 3\)",
        ),
        (
            lambda a: a.update({"log_gain": np.array(np.nan, np.float32)}),
            r"array 'log_gain' holds NaN or inf",
        ),
        (
            lambda a: a.update({"probe.real": np.zeros((64, 64), np.float32)}),
            r"array 'probe.real' does not belong",
        ),
    ],
    ids=["missing", "unexpected", "torch-layout", "nan", "probe-not-trainable"],
)
def test_import_names_the_bad_array(model, change, message) -> None:
    arrays = BACKEND.export_arrays(model)
    change(arrays)
    with pytest.raises(ValueError, match=f"import_arrays: {message}"):
        BACKEND.import_arrays(arrays, config=model.config, probe=model.probe, intensity_scale=1.0)


def test_convert_bundle_between_tensorflow_bundles(model, tmp_path: Path) -> None:
    source = tmp_path / "source.ptycho"
    BACKEND.save(model, source)
    converted = convert_bundle(source, BACKEND, tmp_path / "copy.ptycho", source_backend=BACKEND)
    assert read_manifest(tmp_path / "copy.ptycho")["backend"] == "tensorflow"
    loaded = BACKEND.load(tmp_path / "copy.ptycho")
    x, coords = random_batch(2, 64, 4, seed=4)
    expected = BACKEND.forward(model, x, coords, accelerator="cpu")
    np.testing.assert_array_equal(BACKEND.forward(loaded, x, coords, accelerator="cpu"), expected)
    np.testing.assert_array_equal(
        BACKEND.forward(converted, x, coords, accelerator="cpu"), expected
    )


class _CorruptingImport(TensorFlowBackend):
    """A (deliberately broken) backend whose import drops the phase decoder's last bias."""

    def import_arrays(self, arrays, **kwargs):
        model = super().import_arrays(arrays, **kwargs)
        variable = model.network.named_weights()["decoder_phase.outer.head.bias"]
        variable.assign(variable.numpy() + 1.0)
        return model


def test_convert_checks_the_round_trip_and_missing_methods(
    model, ptycho_test_distributions
) -> None:
    with pytest.raises(
        ConversionError, match=r"array 'decoder_phase.outer.head.bias' changed during the import"
    ):
        convert_model(model, BACKEND, _CorruptingImport())
    from ptycho_testbackends.gain import NumpyGainBackend

    with pytest.raises(
        ConversionError,
        match=r"backend 'numpy-gain' cannot be the target .* no 'import_arrays' method",
    ):
        convert_model(model, BACKEND, NumpyGainBackend())
    foreign = dataclasses.replace(model, backend="numpy-gain")
    with pytest.raises(
        ConversionError,
        match="trained by backend 'numpy-gain', not by the source backend 'tensorflow'",
    ):
        convert_model(foreign, BACKEND, BACKEND)


def test_a_failed_conversion_writes_nothing(ptycho_test_distributions, tmp_path: Path) -> None:
    from ptycho_testbackends.gain import NumpyGainBackend

    from ptycho_core.simulate import default_dataset
    from ptycho_core.workflows import prepare_training_data

    gain = NumpyGainBackend()
    config = small_config(backend="numpy-gain", n_groups=8, validation_split=0.0)
    data = prepare_training_data(default_dataset("train", n_positions=16, seed=3), config)
    source = tmp_path / "gain.ptycho"
    gain.save(gain.train(data, config, hooks=hooks_for()), source)
    with pytest.raises(
        ConversionError,
        match=r"backend 'numpy-gain' cannot be the source .* no 'export_arrays' method",
    ):
        convert_bundle(source, BACKEND, tmp_path / "out.ptycho", source_backend=gain)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gain.ptycho"]
