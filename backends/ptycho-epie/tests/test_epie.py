"""The 'epie' backend, installed as its own distribution, used through ptycho.

Everything goes through ptycho's public surface: the entry point, the conformance kit,
the ``ptycho`` command line and the core workflows.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ptycho_epie.backend import PAYLOAD_FILE, EpieBackend, EpieState

from ptycho_core.backend_selector import select_backend
from ptycho_core.bundle import read_manifest, write_bundle
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.data import load_npz
from ptycho_core.errors import BundleError
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.physics import focused_probe, normalize_probe
from ptycho_core.protocol import TrainedModel
from ptycho_core.results import evaluate_stitched
from ptycho_core.simulate import default_dataset
from ptycho_core.stitching import stitch_patches
from ptycho_core.testing import BackendHarness, check_backend, parametrize_with_checks
from ptycho_core.workflows import prepare_inference_data, prepare_training_data, reconstruct

PTYCHO = shutil.which("ptycho", path=os.path.dirname(sys.executable)) or "ptycho"
QUIET = make_plugin_manager(load_entry_points=False).hook


def ptycho(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PTYCHO, *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False
    )
    assert result.returncode == 0, f"ptycho {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


# ----------------------------------------------------------------------- protocol


@parametrize_with_checks(["epie"])
def test_epie_conformance(backend: BackendHarness, check: Callable) -> None:
    check(backend)


def test_epie_conformance_at_gridsize_2() -> None:
    report = check_backend("epie", gridsize=2)
    assert report.passed, str(report)


def test_backends_lists_epie_with_its_distribution() -> None:
    listed = {entry["name"]: entry for entry in json.loads(ptycho("backends", "--json").stdout)}
    epie = listed["epie"]
    assert epie["usable"] is True and epie["reason"] is None
    assert epie["distribution"] == "ptycho-epie"
    assert epie["version"] == importlib.metadata.version("ptycho-epie")
    assert epie["entry_point"] == "ptycho_epie:BACKEND"
    assert epie["requires"] == ["numpy", "scipy"]
    assert "epie" in ptycho("backends").stdout


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"learning_rate": 1e-2}, "learning_rate"),
        ({"lr_schedule": "plateau"}, "lr_schedule"),
        ({"lr_warmup_steps": 0}, "lr_warmup_steps"),
        ({"precision": "bf16-mixed"}, "precision"),
        ({"accelerator": "gpu"}, "accelerator"),
        ({"devices": 2}, "devices"),
        ({"strategy": "ddp"}, "strategy"),
        ({"model": ModelConfig(n_filters_scale=4)}, "n_filters_scale"),
        ({"model": ModelConfig(model_type="supervised")}, "model_type"),
    ],
)
def test_settings_epie_cannot_honour_are_refused(changes: dict, field: str) -> None:
    config = TrainingConfig(backend="epie", nepochs=1, n_groups=8, **changes)
    data = prepare_training_data(default_dataset("train", n_positions=16), config)
    with pytest.raises(ValueError, match=field):
        select_backend("epie").train(data, config, hooks=QUIET)


# ----------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simulate → train (epie, 20 iterations) → infer the default test object."""
    folder = tmp_path_factory.mktemp("epie-cli")
    ptycho("simulate", "train.npz", "--n-positions", "128", cwd=folder)
    ptycho("simulate", "test.npz", "--split", "test", cwd=folder)
    ptycho(
        "--quiet",
        "train",
        "train.npz",
        "--backend",
        "epie",
        "--epochs",
        "20",
        "--all-groups",
        "--output-dir",
        "run",
        cwd=folder,
    )
    ptycho(
        "--quiet", "infer", "run/model.ptycho", "test.npz", "--output-dir", "run/test", cwd=folder
    )
    return folder


def test_cli_train_writes_an_epie_bundle(cli_run: Path) -> None:
    bundle = cli_run / "run" / "model.ptycho"
    manifest = read_manifest(bundle)
    assert manifest["backend"] == "epie"
    assert manifest["distribution"] == "ptycho-epie"
    assert set(manifest["payload"]) == {PAYLOAD_FILE}
    assert manifest["framework"]["ptycho-epie"] == importlib.metadata.version("ptycho-epie")
    extra = manifest["extra"]
    assert 1 <= extra["iterations"] <= 20 and extra["minibatch"] == 16
    assert extra["gain"] > 0 and extra["alpha"] in (0.02, 0.1, 0.5)
    history = json.loads((cli_run / "run" / "history.json").read_text())
    assert len(history["loss"]) == extra["iterations"]
    errors = history["fourier_error"]
    assert errors[-1] < 0.05 * errors[0]  # the training reconstruction converged
    with zipfile.ZipFile(bundle) as archive:  # the payload is plain npz (no pickle)
        archive.extract(f"payload/{PAYLOAD_FILE}", cli_run)
    with np.load(cli_run / "payload" / PAYLOAD_FILE, allow_pickle=False) as payload:
        assert payload["probe"].dtype == np.complex64 and payload["probe"].shape == (64, 64)


def test_cli_reconstruction_beats_a_flat_guess(cli_run: Path) -> None:
    metrics = json.loads(
        ptycho("evaluate", "run/test/reconstruction.npz", "test.npz", "--json", cwd=cli_run).stdout
    )
    assert metrics["amplitude_ssim"] > 0.95, metrics
    assert metrics["phase_ssim"] > 0.95, metrics
    assert metrics["amplitude_psnr"] > 30, metrics
    # the untrained starting point: the flat object, stitched over the same positions
    test = load_npz(cli_run / "test.npz")
    with np.load(cli_run / "run" / "test" / "reconstruction.npz", allow_pickle=False) as rec:
        level = float(np.median(np.abs(rec["object"][rec["weight"] > 0.99])))
    flat = np.full((test.n_positions, 64, 64), level, dtype=np.complex64)
    flat_metrics = evaluate_stitched(
        stitch_patches(flat, test.xcoords, test.ycoords, shape=test.object.shape), test
    )
    assert flat_metrics["amplitude_ssim"] < 0.3, flat_metrics
    assert metrics["amplitude_ssim"] > flat_metrics["amplitude_ssim"] + 0.6
    assert metrics["amplitude_psnr"] > flat_metrics["amplitude_psnr"] + 15


def test_bench_runs_without_a_forward_method() -> None:
    report = json.loads(
        ptycho(
            "bench",
            "--backend",
            "epie",
            "--json",
            "--epochs",
            "2",
            "--train-groups",
            "64",
            "--n-patterns",
            "64",
            "--batch-size",
            "16",
        ).stdout
    )
    assert report["backend"] == "epie" and report["distribution"] == "ptycho-epie"
    assert report["forward_patterns_per_s"] is None and report["infer_over_forward"] is None
    assert report["infer_patterns_per_s"] > 0 and report["train_groups_per_s"] > 0


# ----------------------------------------------------------------------- what train fits


def _train(train, config: TrainingConfig) -> TrainedModel:
    return EpieBackend().train(prepare_training_data(train, config), config, hooks=QUIET)


def test_probe_refinement_recovers_the_probe_from_a_wrong_guess() -> None:
    """Training data whose probeGuess has the wrong defocus: with probe_trainable the
    fitted probe approaches the true one and the test reconstruction becomes good."""
    train = default_dataset("train", n_positions=128)
    test = default_dataset("test", n_positions=128)
    wrong = dataclasses.replace(train, probe=focused_probe(64, defocus=0.8 * np.pi))
    truth = normalize_probe(train.probe, 4.0)

    def similarity(probe: np.ndarray) -> float:
        return float(abs(np.vdot(probe, truth)) / (np.linalg.norm(probe) * np.linalg.norm(truth)))

    results = {}
    for trainable in (False, True):
        config = TrainingConfig(
            backend="epie",
            nepochs=30,
            early_stop_patience=30,
            n_groups=None,
            probe_trainable=trainable,
        )
        model = _train(wrong, config)
        ssim = evaluate_stitched(
            reconstruct(model, test, InferenceConfig(backend="epie"), hooks=QUIET).stitched,
            test,
        )["amplitude_ssim"]
        results[trainable] = (similarity(model.network.probe), ssim)
        assert model.extra["probe_refined"] is trainable
    assert results[False][0] < 0.8 and results[True][0] > 0.97, results
    assert results[True][1] > 0.95 and results[True][1] > results[False][1] + 0.2, results


def test_fitted_gain_puts_the_bright_training_object_at_amplitude_one() -> None:
    """The scale convention: reconstructing the training data with the fitted probe and
    gain gives an object whose brightest 0.1 % (well-covered pixels) is at amplitude 1."""
    train = default_dataset("train", n_positions=128)
    model = _train(train, TrainingConfig(backend="epie", nepochs=15, n_groups=None))
    stitched = reconstruct(model, train, InferenceConfig(backend="epie"), hooks=QUIET).stitched
    bright = np.percentile(np.abs(stitched.image[stitched.weight > 4]), 99.9)
    assert bright == pytest.approx(1.0, abs=0.05)
    unscaled = _train(
        train,
        TrainingConfig(backend="epie", nepochs=15, n_groups=None, intensity_scale_trainable=False),
    )
    assert unscaled.network.gain == 1.0 and model.network.gain != 1.0


# ----------------------------------------------------------------------- the bundle payload


@pytest.fixture(scope="module")
def small_model() -> TrainedModel:
    config = TrainingConfig(backend="epie", nepochs=2, n_groups=None, batch_size=8)
    return _train(default_dataset("train", n_positions=24), config)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"precision": "bf16-mixed"}, "precision"), ({"accelerator": "gpu"}, "accelerator")],
)
def test_inference_settings_epie_cannot_honour_are_refused(
    small_model: TrainedModel, changes: dict, field: str
) -> None:
    data = default_dataset("test", n_positions=8)
    groups = prepare_inference_data(data, small_model, InferenceConfig(backend="epie"))
    with pytest.raises(ValueError, match=f"InferenceConfig.{field}"):
        EpieBackend().infer(
            small_model, groups, InferenceConfig(backend="epie", **changes), hooks=QUIET
        )
    with pytest.raises(ValueError, match=r"infers on one device.*found 2"):
        EpieBackend().infer(
            small_model, groups, InferenceConfig(backend="epie", devices=2), hooks=QUIET
        )


def test_backend_options_are_refused_by_every_method_that_takes_a_config(
    small_model: TrainedModel,
) -> None:
    """epie declares no backend options, so it refuses any rather than ignore it."""
    epie = select_backend("epie")  # the installed distribution, through its entry point
    assert epie.training_options == () and epie.inference_options == ()
    options = {"probe_modes": 2}
    data = default_dataset("test", n_positions=8)
    groups = prepare_inference_data(data, small_model, InferenceConfig(backend="epie"))
    start = stitch_patches(np.ones((8, 64, 64)), data.xcoords, data.ycoords)
    training = TrainingConfig(backend="epie", nepochs=1, n_groups=8, backend_options=options)
    inference = InferenceConfig(backend="epie", backend_options=options)
    calls = {
        "train": lambda: epie.train(prepare_training_data(data, training), training, hooks=QUIET),
        "model_from_probe": lambda: epie.model_from_probe(small_model.probe, training),
        "infer": lambda: epie.infer(small_model, groups, inference, hooks=QUIET),
        "infer_from": lambda: epie.infer_from(small_model, groups, inference, start, hooks=QUIET),
    }
    for method, call in calls.items():
        kind = "Inference" if method.startswith("infer") else "Training"
        with pytest.raises(ValueError, match=f"{kind}Config.backend_options") as caught:
            call()
        message = str(caught.value)
        assert "the epie backend accepts no backend options" in message, (method, message)
        assert "'probe_modes'" in message, (method, message)


def _bundle_with_payload(path: Path, model: TrainedModel, arrays: dict) -> Path:
    write_bundle(
        path, model, lambda folder: np.savez(folder / PAYLOAD_FILE, **arrays), framework={}
    )
    return path


def _arrays(state: EpieState) -> dict:
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return {"version": np.int64(1), **fields}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"gain": None}, "key 'gain' is missing"),
        ({"probe": np.zeros((32, 32), np.complex64)}, "key 'probe'"),
        ({"iterations": np.int64(0)}, "key 'iterations'"),
        ({"alpha": np.float64(np.nan)}, "key 'alpha'"),
        ({"version": np.int64(7)}, "key 'version'"),
        ({"probe": np.array([object()], dtype=object)}, "pickled object arrays are refused"),
        ({"iterations": np.int64(10**12)}, "PTYCHO_MAX_ITERATIONS"),
        ({"probe": np.zeros((64, 64, 1000), np.complex64)}, r"expected shape \(64, 64\)"),
    ],
)
def test_bad_payloads_are_refused(
    tmp_path: Path, small_model: TrainedModel, change: dict, fragment: str
) -> None:
    arrays = _arrays(small_model.network)
    for key, value in change.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    path = _bundle_with_payload(tmp_path / "bad.ptycho", small_model, arrays)
    with pytest.raises(BundleError, match=fragment) as caught:
        EpieBackend().load(path)
    assert str(path) in str(caught.value) and PAYLOAD_FILE in str(caught.value)


def test_payload_round_trip_keeps_every_fitted_value(
    tmp_path: Path, small_model: TrainedModel
) -> None:
    path = tmp_path / "model.ptycho"
    EpieBackend().save(small_model, path)
    loaded = EpieBackend().load(path)
    for field in dataclasses.fields(EpieState):
        a, b = getattr(loaded.network, field.name), getattr(small_model.network, field.name)
        assert np.array_equal(a, b), field.name
    assert loaded.extra == small_model.extra
