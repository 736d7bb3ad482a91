"""Bundles: round trip, and every bad bundle is a clear error that names what is wrong."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_torch import hooks_for, small_config

from ptycho_core.bundle import read_manifest, write_bundle
from ptycho_core.config import InferenceConfig
from ptycho_core.errors import BackendMismatchError, BundleError
from ptycho_core.protocol import TrainedModel
from ptycho_torch import persistence
from ptycho_torch.backend import TorchBackend
from ptycho_torch.persistence import WEIGHTS_NAME


def _write_with_state(model: TrainedModel, path: Path, state: dict) -> None:
    """A bundle whose manifest is the model's but whose weights are ``state``."""

    def payload(folder: Path) -> None:
        torch.save(state, folder / WEIGHTS_NAME)

    write_bundle(path, model, payload, framework={"torch": torch.__version__})


def _state(model: TrainedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.network.state_dict().items()}


def test_round_trip_restores_every_tensor_and_the_manifest(small_model, tmp_path) -> None:
    path = tmp_path / "model.ptycho"
    TorchBackend().save(small_model, path)
    manifest = read_manifest(path)
    assert manifest["backend"] == "pytorch" and manifest["N"] == 64 and manifest["gridsize"] == 1
    assert manifest["framework"] == {"torch": torch.__version__}
    assert set(manifest["payload"]) == {WEIGHTS_NAME}
    assert manifest["extra"]["output_gain"] == pytest.approx(small_model.network.output_gain)
    assert (
        manifest["extra"]["parameters"] == 585_245
    )  # N 64, gridsize 1, n_filters_scale 1: 585,244 + the gain
    loaded = TorchBackend().load(path)
    for name, tensor in small_model.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], tensor), name
    assert loaded.network.intensity_scale.item() == pytest.approx(small_model.intensity_scale)
    assert loaded.config == small_model.config and not loaded.network.training


def test_a_missing_weight_tensor_is_named(small_model, tmp_path) -> None:
    state = _state(small_model)
    del state["decoder_amp.head.bias"]
    path = tmp_path / "missing.ptycho"
    _write_with_state(small_model, path, state)
    with pytest.raises(
        BundleError, match=rf"bundle {path}: weight tensor 'decoder_amp.head.bias' is missing"
    ):
        TorchBackend().load(path)


def test_a_mismatched_weight_tensor_is_named(small_model, tmp_path) -> None:
    state = _state(small_model)
    state["encoder.blocks.1.conv0.weight"] = torch.zeros(
        128, 32, 3, 3
    )  # n_filters_scale 1: (64, 32)
    path = tmp_path / "mismatch.ptycho"
    _write_with_state(small_model, path, state)
    with pytest.raises(
        BundleError,
        match=r"weight tensor 'encoder.blocks.1.conv0.weight': expected shape \(64, 32, 3, 3\) .* found \(128, 32, 3, 3\)",
    ):
        TorchBackend().load(path)
    state = _state(small_model)
    state["decoder_phase.extra.weight"] = torch.zeros(3)
    _write_with_state(small_model, path, state)
    with pytest.raises(BundleError, match=r"'decoder_phase.extra.weight' .* does not belong"):
        TorchBackend().load(path)


def test_a_bundle_whose_manifest_describes_another_architecture(small_model, tmp_path) -> None:
    """gridsize 2 in the manifest, gridsize-1 weights in the payload."""
    other = dataclasses.replace(
        small_model,
        config=small_config(model=dataclasses.replace(small_model.config.model, gridsize=2)),
    )
    path = tmp_path / "other.ptycho"
    _write_with_state(other, path, _state(small_model))
    with pytest.raises(
        BundleError,
        match=r"weight tensor 'encoder.blocks.0.conv0.weight': expected shape \(32, 4, 3, 3\)",
    ):
        TorchBackend().load(path)


def test_an_inconsistent_gain_or_probe_is_refused(small_model, tmp_path) -> None:
    path = tmp_path / "gain.ptycho"
    _write_with_state(
        dataclasses.replace(small_model, extra={**small_model.extra, "output_gain": 3.0}),
        path,
        _state(small_model),
    )
    with pytest.raises(
        BundleError, match=r"extra 'output_gain' is 3.0 but the weight tensor 'log_gain'"
    ):
        TorchBackend().load(path)
    state = _state(small_model)
    state["probe"] = state["probe"] * 2
    _write_with_state(small_model, path, state)
    with pytest.raises(BundleError, match=r"'probe' differs from probe.npy"):
        TorchBackend().load(path)


def test_a_truncated_bundle_is_a_bundle_error(small_model, tmp_path) -> None:
    path = tmp_path / "model.ptycho"
    TorchBackend().save(small_model, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        truncated = tmp_path / f"cut{cut}.ptycho"
        truncated.write_bytes(data[:cut])
        with pytest.raises(BundleError, match=rf"bundle {truncated}"):
            TorchBackend().load(truncated)


def test_weights_that_are_not_a_safe_state_dict_are_refused(small_model, tmp_path) -> None:
    """torch.load(weights_only=True): a pickle that would run code is rejected, not executed."""

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.ptycho"

    def evil(folder: Path) -> None:
        with open(folder / WEIGHTS_NAME, "wb") as handle:
            pickle.dump({"encoder.blocks.0.conv0.weight": Payload()}, handle)

    write_bundle(path, small_model, evil, framework={"torch": torch.__version__})
    with pytest.raises(BundleError, match=rf"'{WEIGHTS_NAME}' is not a torch weights archive"):
        TorchBackend().load(path)
    assert not (tmp_path / "pwned").exists()

    def evil_inside_an_archive(folder: Path) -> None:
        """A real torch archive whose pickle would run code: torch.load must refuse it."""
        torch.save({"x": torch.zeros(1)}, folder / "plain.pt")
        with (
            zipfile.ZipFile(folder / "plain.pt") as source,
            zipfile.ZipFile(folder / WEIGHTS_NAME, "w") as sink,
        ):
            for info in source.infolist():
                data = source.read(info)
                if info.filename.endswith("data.pkl"):
                    data = pickle.dumps({"encoder.blocks.0.conv0.weight": Payload()})
                sink.writestr(info, data)
        (folder / "plain.pt").unlink()

    write_bundle(path, small_model, evil_inside_an_archive, framework={"torch": torch.__version__})
    with pytest.raises(
        BundleError, match=rf"payload file '{WEIGHTS_NAME}' is not a readable torch state dict"
    ):
        TorchBackend().load(path)
    assert not (tmp_path / "pwned").exists()

    def garbage(folder: Path) -> None:
        (folder / WEIGHTS_NAME).write_bytes(b"not a torch file")

    write_bundle(path, small_model, garbage, framework={"torch": torch.__version__})
    with pytest.raises(BundleError, match="not a torch weights archive"):
        TorchBackend().load(path)

    def lying_sizes(folder: Path) -> None:
        """A record declaring 4 GiB: refused before torch.load allocates it."""
        torch.save({"x": torch.zeros(1)}, folder / WEIGHTS_NAME)
        raw = bytearray((folder / WEIGHTS_NAME).read_bytes())
        start = raw.find(b"PK\x01\x02")  # the first central-directory record
        assert start >= 0
        raw[start + 24 : start + 28] = (0xFFFFFFF0).to_bytes(4, "little")  # uncompressed size
        (folder / WEIGHTS_NAME).write_bytes(bytes(raw))

    write_bundle(path, small_model, lying_sizes, framework={"torch": torch.__version__})
    with pytest.raises(
        BundleError, match=r"declares \d+ bytes, more than the \d+ the architecture"
    ):
        TorchBackend().load(path)

    def no_weights(folder: Path) -> None:
        (folder / "other.bin").write_bytes(b"x")

    write_bundle(path, small_model, no_weights, framework={"torch": torch.__version__})
    with pytest.raises(BundleError, match=f"payload file '{WEIGHTS_NAME}' is missing"):
        TorchBackend().load(path)

    def a_list(folder: Path) -> None:
        torch.save([torch.zeros(1)], folder / WEIGHTS_NAME)

    write_bundle(path, small_model, a_list, framework={"torch": torch.__version__})
    with pytest.raises(
        BundleError, match="expected a mapping of tensor name to tensor, found list"
    ):
        TorchBackend().load(path)


def test_a_bundle_of_another_backend_names_both(
    small_training, tmp_path, ptycho_test_distributions
) -> None:
    from ptycho_core.backend_selector import select_backend

    numpy_gain = select_backend("numpy-gain")
    model = numpy_gain.train(small_training, small_config(backend="numpy-gain"), hooks=hooks_for())
    path = tmp_path / "gain.ptycho"
    numpy_gain.save(model, path)
    with pytest.raises(
        BackendMismatchError,
        match=r"written by backend 'numpy-gain'; backend 'pytorch' cannot load it",
    ):
        TorchBackend().load(path)


def test_a_tensorflow_manifest_is_refused_before_reading_weights(small_model, tmp_path) -> None:
    """A bundle whose manifest says 'tensorflow' (crafted: same payload, other backend)."""
    path = tmp_path / "model.ptycho"
    TorchBackend().save(small_model, path)
    crafted = tmp_path / "tf.ptycho"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(crafted, "w") as sink:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["backend"] = "tensorflow"
                manifest["config"]["backend"] = "tensorflow"
                data = json.dumps(manifest).encode()
            sink.writestr(info, data)
    with pytest.raises(BackendMismatchError, match="written by backend 'tensorflow'"):
        TorchBackend().load(crafted)


def test_a_failed_save_leaves_the_previous_bundle_intact(
    small_model, tmp_path, monkeypatch
) -> None:
    path = tmp_path / "model.ptycho"
    TorchBackend().save(small_model, path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        TorchBackend().save(small_model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ptycho"]


def test_save_refuses_a_foreign_model_and_writes_nothing(small_model, tmp_path) -> None:
    path = tmp_path / "model.ptycho"
    foreign = dataclasses.replace(small_model, backend="numpy-gain")
    with pytest.raises(BackendMismatchError, match="trained by backend 'numpy-gain'"):
        TorchBackend().save(foreign, path)
    not_torch = dataclasses.replace(small_model, network={"c": 1.0})
    with pytest.raises(TypeError, match=r"expected a ptycho_torch\.model\.PtychoPINN .*found dict"):
        TorchBackend().save(not_torch, path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_only_rank_zero_writes(small_model, tmp_path, monkeypatch) -> None:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    TorchBackend().save(small_model, tmp_path / "rank1.ptycho")
    assert not (tmp_path / "rank1.ptycho").exists()


def test_loaded_model_infers_without_any_config_from_the_caller(
    small_model, small_training, tmp_path
) -> None:
    path = tmp_path / "model.ptycho"
    TorchBackend().save(small_model, path)
    buffer = io.BytesIO(path.read_bytes())  # the file alone carries everything
    copy = tmp_path / "copy.ptycho"
    copy.write_bytes(buffer.getvalue())
    loaded = TorchBackend().load(copy)
    out = TorchBackend().infer(
        loaded, small_training.groups, InferenceConfig(backend="pytorch"), hooks=hooks_for()
    )
    expected = TorchBackend().infer(
        small_model, small_training.groups, InferenceConfig(backend="pytorch"), hooks=hooks_for()
    )
    np.testing.assert_array_equal(out, expected)
