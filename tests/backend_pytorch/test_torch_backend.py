"""TorchBackend end to end: protocol, inference contract, integration, training helps."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_torch import Recorder, hooks_for, small_config

import ptycho_torch
from ptycho_core.config import InferenceConfig
from ptycho_core.errors import BackendMismatchError, DataContractError
from ptycho_core.grouping import GroupedData
from ptycho_core.protocol import ReconstructionBackend, TrainedModel, TrainingData
from ptycho_core.results import evaluate_stitched, load_reconstruction, save_reconstruction
from ptycho_core.workflows import prepare_inference_data, prepare_training_data, reconstruct
from ptycho_torch import physics
from ptycho_torch.backend import TorchBackend, select_device
from ptycho_torch.training import build_network

REPO = Path(__file__).resolve().parents[2]


def _groups_like(groups: GroupedData, N: int, channels: int) -> GroupedData:
    B = groups.n_groups
    return GroupedData(
        diffraction=np.ones((B, N, N, channels), dtype=np.float32),
        coords_relative=np.zeros((B, 1, 2, channels), dtype=np.float32),
        coords_offsets=np.zeros((B, 1, 2, 1)),
        nn_indices=np.zeros((B, channels), dtype=np.int64),
        normalisation=1.0,
    )


def test_backend_spec_and_protocol() -> None:
    spec = ptycho_torch.BACKEND
    assert spec.name == "pytorch" and spec.target == "ptycho_torch.backend:TorchBackend"
    assert spec.requires == ("torch", "lightning")
    assert spec.install_hint == "pip install 'ptycho[torch]'"
    backend = TorchBackend()
    assert isinstance(backend, ReconstructionBackend) and backend.name == "pytorch"


def test_device_selection() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="found 'gpu' but torch sees no CUDA device"):
            select_device("gpu")
    with pytest.raises(ValueError, match="expected 'auto', 'cpu' or 'gpu', found 'tpu'"):
        select_device("tpu")


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys, ptycho_torch, ptycho_core\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'tensorflow') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print(ptycho_torch.BACKEND.name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pytorch"


def test_infer_returns_complex_patches_in_batches_with_progress(
    small_model, small_training
) -> None:
    recorder = Recorder()
    groups = small_training.groups.select(np.arange(20))
    backend = TorchBackend()
    out = backend.infer(
        small_model,
        groups,
        InferenceConfig(backend="pytorch", batch_size=7, accelerator="cpu"),
        hooks=hooks_for(recorder),
    )
    assert out.shape == (20, 64, 64, 1) and out.dtype == np.complex64
    assert np.isfinite(out).all()
    assert [(p["done"], p["total"]) for p in recorder.named("infer_progress")] == [
        (7, 20),
        (14, 20),
        (20, 20),
    ]
    whole = backend.infer(
        small_model, groups, InferenceConfig(backend="pytorch", batch_size=64), hooks=hooks_for()
    )
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-5)
    bare = backend.forward(small_model, groups.diffraction, groups.coords_relative)
    np.testing.assert_array_equal(bare, whole)


def test_infer_refuses_data_of_another_size_or_gridsize(small_model, small_training) -> None:
    backend = TorchBackend()
    config = InferenceConfig(backend="pytorch")
    with pytest.raises(
        DataContractError,
        match=r"expected shape \(B, 64, 64, 1\) for the model's N=64.*found \(5, 128, 128, 1\)",
    ):
        backend.infer(
            small_model,
            _groups_like(small_training.groups.select(np.arange(5)), 128, 1),
            config,
            hooks=hooks_for(),
        )
    with pytest.raises(
        ValueError, match=r"expected 1 channels \(the model's gridsize 1\), found 4 \(gridsize 2\)"
    ):
        backend.infer(
            small_model,
            _groups_like(small_training.groups.select(np.arange(5)), 64, 4),
            config,
            hooks=hooks_for(),
        )
    foreign = dataclasses.replace(small_model, backend="tensorflow")
    with pytest.raises(BackendMismatchError, match="trained by backend 'tensorflow'"):
        backend.infer(foreign, small_training.groups, config, hooks=hooks_for())
    with pytest.raises(ValueError, match=r"the pytorch backend infers on one device.*found 2"):
        backend.infer(
            small_model,
            small_training.groups,
            config.replace(devices=2),
            hooks=hooks_for(),
        )


def test_bf16_inference_stays_close_to_float32(small_model, small_training) -> None:
    backend = TorchBackend()
    groups = small_training.groups
    full = backend.infer(small_model, groups, InferenceConfig(backend="pytorch"), hooks=hooks_for())
    half = backend.infer(
        small_model,
        groups,
        InferenceConfig(backend="pytorch", precision="bf16-mixed"),
        hooks=hooks_for(),
    )
    assert half.dtype == np.complex64 and np.isfinite(half).all()
    centre = (slice(None), slice(16, 48), slice(16, 48))
    error = np.abs(half[centre] - full[centre]).mean() / np.abs(full[centre]).mean()
    assert 0 < error < 0.05


@pytest.mark.slow
def test_train_save_load_infer_on_simulated_data(train_set, test_set, tmp_path) -> None:
    """End to end: train, save, load and infer within 90 s; reloaded predictions exactly equal."""
    start = time.perf_counter()
    backend = TorchBackend()
    config = small_config(n_groups=64, nepochs=2, early_stop_patience=5)
    data = prepare_training_data(train_set, config)
    model = backend.train(data, config, hooks=hooks_for())
    bundle = tmp_path / "model.ptycho"
    backend.save(model, bundle)
    loaded = backend.load(bundle)
    assert loaded.backend == "pytorch" and loaded.config == model.config
    assert loaded.intensity_scale == model.intensity_scale and loaded.history == model.history
    np.testing.assert_array_equal(loaded.probe, model.probe)
    assert loaded.extra["output_gain"] == model.extra["output_gain"]
    inference = InferenceConfig(backend="pytorch", accelerator="cpu")
    groups = prepare_inference_data(test_set, model, inference)
    before = backend.infer(model, groups, inference, hooks=hooks_for())
    after = backend.infer(loaded, groups, inference, hooks=hooks_for())
    np.testing.assert_array_equal(after, before)
    result = reconstruct(loaded, test_set, inference, hooks=hooks_for(), backend=backend)
    path = save_reconstruction(result.stitched, tmp_path / "reconstruction.npz", backend="pytorch")
    assert path.is_file() and bundle.is_file()
    stitched = load_reconstruction(path)
    covered = stitched.covered
    assert covered.sum() > 0.25 * covered.size  # the spiral scan covers a disk of the object
    assert np.isfinite(stitched.image).all() and np.abs(stitched.image[covered]).max() > 0
    elapsed = time.perf_counter() - start
    assert elapsed < 90, f"train → save → load → infer took {elapsed:.1f} s"


def _score(model: TrainedModel, data, backend: TorchBackend) -> dict[str, float]:
    result = reconstruct(
        model, data, InferenceConfig(backend="pytorch"), hooks=hooks_for(), backend=backend
    )
    return evaluate_stitched(result.stitched, data)


def _heldout_deviance(model: TrainedModel, data: TrainingData) -> float:
    """Mean Poisson deviance of the model's physics on groups it never saw (0 = perfect fit)."""
    groups = data.groups
    x = torch.from_numpy(groups.diffraction.copy()).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = model.network(x, torch.from_numpy(groups.coords_relative.copy()))
        return physics.poisson_deviance(out.amplitude, data.intensity_scale * x).item()


@pytest.mark.slow
def test_training_helps(train_set, test_set) -> None:
    """On an object it never saw, a trained network fits the data and the image far better.

    Budget: 16 epochs over 256 groups (256 steps, a 40-step warmup; about 35 s on 2 idle
    cores). The untrained network already starts at the calibrated output gain, so the
    comparison is with a network whose intensity level is right but whose weights are random:
    the held-out Poisson deviance falls several-fold (≈ 63k per pixel untrained).
    """
    backend = TorchBackend()
    config = small_config(
        n_groups=256, nepochs=16, lr_warmup_steps=40, early_stop_patience=5, validation_split=0.0
    )
    data = prepare_training_data(train_set, config)
    heldout = prepare_training_data(test_set, config.replace(n_groups=64))
    trained = backend.train(data, config, hooks=hooks_for())
    torch.manual_seed(config.seed)
    untrained = dataclasses.replace(
        trained, network=build_network(config.model, data.probe, data.intensity_scale)
    )
    fit_trained, fit_untrained = (
        _heldout_deviance(trained, heldout),
        _heldout_deviance(untrained, heldout),
    )
    assert fit_trained < fit_untrained / 3, (fit_trained, fit_untrained)
    good = _score(trained, test_set, backend)
    bad = _score(untrained, test_set, backend)
    assert all(math.isfinite(v) for v in good.values())
    assert good["amplitude_psnr"] > bad["amplitude_psnr"] + 0.3, (good, bad)
    assert good["amplitude_mae"] < 0.97 * bad["amplitude_mae"], (good, bad)
