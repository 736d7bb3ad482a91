"""TensorFlowBackend: the shared backend suite, and its refusals of bad bundles."""

from __future__ import annotations

import dataclasses
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from framework_suites.backend import BackendSuite
from helpers_tf import hooks_for, small_config, untrained_model

from ptycho_core.bundle import write_bundle
from ptycho_core.config import InferenceConfig, ModelConfig
from ptycho_core.errors import BackendMismatchError, BundleError
from ptycho_core.protocol import TrainedModel
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_inference_data, prepare_training_data
from ptycho_tf._keras import keras_numpy_copy_warning_ignored
from ptycho_tf.backend import TensorFlowBackend
from ptycho_tf.persistence import WEIGHTS_NAME

BACKEND = TensorFlowBackend()


class TestBackend(BackendSuite):
    """The shared backend suite (framework_suites/backend.py) on TensorFlow."""


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return untrained_model(small_config(model=ModelConfig(N=64, gridsize=1)), seed=1)


@pytest.fixture(scope="module")
def saved(model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tf-bundle") / "model.ptycho"
    BACKEND.save(model, path)
    return path


def test_save_refuses_foreign_and_diverged_models_writing_nothing(
    model: TrainedModel, saved: Path, tmp_path: Path
) -> None:
    target = tmp_path / "new.ptycho"
    with pytest.raises(BackendMismatchError):
        BACKEND.save(dataclasses.replace(model, backend="pytorch"), target)
    assert not target.exists()
    bad = untrained_model(seed=2)
    bundle = tmp_path / "kept.ptycho"
    bundle.write_bytes(saved.read_bytes())
    variable = bad.network.named_weights()["decoder_phase.head.bias"]
    variable.assign(np.full(variable.shape, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"weight 'decoder_phase.head.bias' holds NaN or inf"):
        BACKEND.save(bad, bundle)
    assert bundle.read_bytes() == saved.read_bytes()  # the old bundle is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.ptycho"]  # no temporary left


# ----------------------------------------------------------------------------- bad bundles


def _bundle(
    tmp_path: Path, model: TrainedModel, mutate: Callable[[Path], None] | None, **changes
) -> Path:
    """A bundle written by core with the model's Keras weights, changed by ``mutate``."""
    path = tmp_path / "bad.ptycho"

    def write_payload(folder: Path) -> None:
        file = folder / WEIGHTS_NAME
        with keras_numpy_copy_warning_ignored():
            model.network.save_weights(str(file))
        if mutate is not None:
            mutate(file)

    current = dataclasses.replace(model, **changes)
    write_bundle(path, current, write_payload, framework={"tensorflow": "test"})
    return path


def _dataset_path(file: Path, suffix: str) -> str:
    found: list[str] = []
    with h5py.File(file, "r") as handle:
        handle.visititems(
            lambda name, item: found.append(name) if isinstance(item, h5py.Dataset) else None
        )
    (path,) = [name for name in found if name.endswith(suffix)]
    return path


def _delete(suffix: str) -> Callable[[Path], None]:
    def mutate(file: Path) -> None:
        path = _dataset_path(file, suffix)
        with h5py.File(file, "r+") as handle:
            del handle[path]

    return mutate


def _reshape(suffix: str) -> Callable[[Path], None]:
    def mutate(file: Path) -> None:
        path = _dataset_path(file, suffix)
        with h5py.File(file, "r+") as handle:
            del handle[path]
            handle.create_dataset(path, data=np.zeros((3, 3, 60, 2), np.float32))

    return mutate


def _add_dataset(file: Path) -> None:
    with h5py.File(file, "r+") as handle:
        handle.create_dataset("layers/stowaway/vars/0", data=np.zeros(3, np.float32))


def _external_link(file: Path) -> None:
    path = _dataset_path(file, "decoder_amp/head/vars/1")
    with h5py.File(file, "r+") as handle:
        del handle[path]
        handle[path] = h5py.ExternalLink("/etc/hostname", "/data")


def _garbage(file: Path) -> None:
    file.write_bytes(b"not an HDF5 file at all")


def _remove(file: Path) -> None:
    file.unlink()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _delete("decoder_amp/head/vars/0"),
            r"weight 'decoder_amp.head.kernel' \(HDF5 dataset '.*'\) is missing from 'model.weights.h5'",
        ),
        (
            _delete("decoder_phase/outer/head/vars/1"),
            r"weight 'decoder_phase.outer.head.bias' .* is missing",
        ),
        (
            _reshape("decoder_amp/head/vars/0"),
            r"weight 'decoder_amp.head.kernel' .*expected shape \(3, 3, 28, 1\) float32 .*found \(3, 3, 60, 2\)",
        ),
        (
            _add_dataset,
            r"HDF5 dataset 'layers/stowaway/vars/0' in 'model.weights.h5' does not belong",
        ),
        (
            _external_link,
            r"payload file 'model.weights.h5' is refused: '.*' is a link to another file",
        ),
        (_garbage, r"payload file 'model.weights.h5' is not a readable HDF5 file"),
        (
            _remove,
            r"payload file 'model.weights.h5' is missing; a tensorflow bundle holds its weights there",
        ),
    ],
    ids=[
        "missing-kernel",
        "missing-bias",
        "wrong-shape",
        "extra-dataset",
        "external-link",
        "not-hdf5",
        "no-payload",
    ],
)
def test_bad_weights_are_named(model: TrainedModel, tmp_path: Path, mutate, message: str) -> None:
    path = _bundle(tmp_path, model, mutate)
    with pytest.raises(BundleError, match=message) as caught:
        BACKEND.load(path)
    assert str(caught.value).startswith(f"bundle {path}: ")


def test_inconsistent_probe_and_gain_are_refused(model: TrainedModel, tmp_path: Path) -> None:
    other_probe = (model.probe * 2).astype(np.complex64)
    path = _bundle(tmp_path, model, None, probe=other_probe)
    with pytest.raises(BundleError, match=r"weight 'probe' differs from probe\.npy"):
        BACKEND.load(path)
    path = _bundle(tmp_path, model, None, extra={"output_gain": 5.0})
    with pytest.raises(
        BundleError,
        match=rf"manifest extra .output_gain. is 5\.0 but the weight .log_gain. gives "
        rf"{re.escape(f'{model.network.output_gain:.6g}')}",
    ):
        BACKEND.load(path)


def test_truncated_bundle(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    truncated = tmp_path / "truncated.ptycho"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=rf"bundle {truncated}: truncated or corrupt zip archive"):
        BACKEND.load(truncated)


def test_a_corrupted_payload_member_fails_its_checksum(saved: Path, tmp_path: Path) -> None:
    copy = tmp_path / "flipped.ptycho"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(copy, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == f"payload/{WEIGHTS_NAME}":
                content = content[:-9] + bytes([content[-9] ^ 0xFF]) + content[-8:]
            target.writestr(info, content)
    with pytest.raises(
        BundleError, match=f"payload member '{WEIGHTS_NAME}' does not match manifest.json"
    ):
        BACKEND.load(copy)


def test_a_pytorch_bundle_is_a_backend_mismatch(model: TrainedModel, tmp_path: Path) -> None:
    path = tmp_path / "torch.ptycho"
    foreign = dataclasses.replace(model, backend="pytorch", network=None)
    write_bundle(
        path,
        foreign,
        lambda folder: (folder / "weights.pt").write_bytes(b"\x80\x02}q\x00."),
        framework={},
    )
    with pytest.raises(
        BackendMismatchError,
        match=r"written by backend 'pytorch'; backend 'tensorflow' cannot load it",
    ):
        BACKEND.load(path)


def test_a_numpy_gain_bundle_is_a_backend_mismatch(
    ptycho_test_distributions, tmp_path: Path
) -> None:
    from ptycho_testbackends.gain import NumpyGainBackend

    gain = NumpyGainBackend()
    config = small_config(backend="numpy-gain", n_groups=16, validation_split=0.0)
    data = prepare_training_data(default_dataset("train", n_positions=32, seed=3), config)
    path = tmp_path / "gain.ptycho"
    gain.save(gain.train(data, config, hooks=hooks_for()), path)
    with pytest.raises(BackendMismatchError, match="written by backend 'numpy-gain'"):
        BACKEND.load(path)


def test_gridsize_two_trains_and_infers_merged_patches() -> None:
    config = small_config(model=ModelConfig(N=64, gridsize=2), n_groups=16, validation_split=0.0)
    data = default_dataset("train", n_positions=48, seed=4)
    model = BACKEND.train(prepare_training_data(data, config), config, hooks=hooks_for())
    groups = prepare_inference_data(data, model, InferenceConfig(n_groups=10))
    assert groups.channels == 4
    patches = BACKEND.infer(
        model, groups, InferenceConfig(batch_size=4, accelerator="cpu"), hooks=hooks_for()
    )
    assert patches.shape == (10, 64, 64, 1) and np.all(np.isfinite(patches.view(np.float32)))
    assert model.extra["parameters"] == 589_361  # gridsize 2, n_filters_scale 1, with the gain
