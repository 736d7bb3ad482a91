"""pty-chi's engines, installed as their own distribution, used through ptycho.

Everything goes through ptycho's public surface: the entry points, the conformance kit,
the ``ptycho`` command line and the core workflows. pty-chi itself runs for real.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from ptycho_ptychi.backend import PAYLOAD_ARRAYS, PAYLOAD_SETTINGS, LsqmlBackend, PtychiState
from ptycho_ptychi.runtime import import_ptychi

from ptycho_core.backend_selector import select_backend
from ptycho_core.bundle import read_manifest, write_bundle
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.errors import BundleError
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.protocol import SupportsInitialObject, SupportsWarmStart, TrainedModel
from ptycho_core.results import evaluate_stitched
from ptycho_core.simulate import default_dataset
from ptycho_core.testing import BackendHarness, check_backend, parametrize_with_checks
from ptycho_core.workflows import prepare_inference_data, prepare_training_data, reconstruct
from ptycho_torch.torchvision_ops import torchvision_ops_available

PTYCHO = shutil.which("ptycho", path=os.path.dirname(sys.executable)) or "ptycho"
QUIET = make_plugin_manager(load_entry_points=False).hook
ENGINES = ("ptychi-lsqml", "ptychi-rpie", "ptychi-dm")


def ptycho(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PTYCHO, *args], capture_output=True, text=True, cwd=cwd, timeout=900, check=False
    )
    assert result.returncode == 0, f"ptycho {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _train(name: str, config: TrainingConfig, n_positions: int = 24) -> TrainedModel:
    data = default_dataset("train", n_positions=n_positions)
    return select_backend(name).train(prepare_training_data(data, config), config, hooks=QUIET)


# ----------------------------------------------------------------------- protocol


@parametrize_with_checks(list(ENGINES))
def test_ptychi_conformance(backend: BackendHarness, check: Callable) -> None:
    check(backend)


def test_lsqml_conformance_at_gridsize_2() -> None:
    report = check_backend("ptychi-lsqml", gridsize=2)
    assert report.passed, str(report)


def test_backends_lists_each_engine_from_its_distribution() -> None:
    listed = {entry["name"]: entry for entry in json.loads(ptycho("backends", "--json").stdout)}
    version = importlib.metadata.version("ptycho-ptychi")
    for name in ENGINES:
        entry = listed[name]
        assert entry["usable"] is True and entry["reason"] is None, entry
        assert entry["distribution"] == "ptycho-ptychi" and entry["version"] == version
        assert entry["requires"] == ["torch", "torchvision", "ptychi"]
    backend = select_backend("ptychi-lsqml")
    assert isinstance(backend, SupportsInitialObject)
    assert not isinstance(backend, SupportsWarmStart)


def test_torchvision_imports_with_or_without_its_compiled_operators() -> None:
    """pty-chi imports torchvision; the build matching a CPU torch may be a CUDA build whose
    operators cannot load. Either way torchvision imports, and reports its operators
    truthfully (never a fake implementation)."""
    import_ptychi()
    import torchvision
    import torchvision.extension

    assert torchvision.extension._has_ops() is torchvision_ops_available()
    if not torchvision_ops_available():
        boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        with pytest.raises(RuntimeError, match="Couldn't load custom C\\+\\+ ops"):
            torchvision.ops.nms(boxes, torch.ones(1), 0.5)


def test_a_reconstruction_leaves_torch_and_the_global_generators_as_it_found_them() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    dtype, device = torch.get_default_dtype(), torch.get_default_device()
    _train("ptychi-lsqml", TrainingConfig(backend="ptychi-lsqml", nepochs=2, n_groups=None))
    assert torch.get_default_dtype() == dtype and torch.get_default_device() == device
    found = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(found[0], expected[0])
    assert np.array_equal(found[1], expected[1]) and found[2] == expected[2]


# ----------------------------------------------------------------------- settings and options


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"learning_rate": 1e-2}, "learning_rate"),
        ({"precision": "bf16-mixed"}, "precision"),
        ({"devices": 2}, "devices"),
        ({"strategy": "ddp"}, "strategy"),
        ({"model": ModelConfig(n_filters_scale=4)}, "n_filters_scale"),
        ({"model": ModelConfig(model_type="supervised")}, "model_type"),
        ({"backend_options": {"probe_modes": 0}}, "probe_modes"),
        ({"backend_options": {"noise_model": "laplace"}}, "noise_model"),
        ({"backend_options": {"alpha": 0.5}}, "alpha"),  # an rPIE setting, not LSQML's
    ],
)
def test_settings_lsqml_cannot_honour_are_refused(changes: dict, field: str) -> None:
    config = TrainingConfig(backend="ptychi-lsqml", nepochs=1, n_groups=8, **changes)
    data = prepare_training_data(default_dataset("train", n_positions=16), config)
    with pytest.raises(ValueError, match=field):
        select_backend("ptychi-lsqml").train(data, config, hooks=QUIET)


def test_a_gpu_is_used_when_asked_for_and_never_faked() -> None:
    """accelerator='gpu' without a GPU is an error naming the setting, never a quiet CPU run."""
    config = TrainingConfig(backend="ptychi-lsqml", nepochs=1, n_groups=8, accelerator="gpu")
    data = prepare_training_data(default_dataset("train", n_positions=16), config)
    if torch.cuda.is_available():
        model = select_backend("ptychi-lsqml").train(data, config, hooks=QUIET)
        assert np.all(np.isfinite(model.network.probe))
    else:
        with pytest.raises(ValueError, match="accelerator='gpu' but torch sees no GPU"):
            select_backend("ptychi-lsqml").train(data, config, hooks=QUIET)


def test_each_engine_declares_its_own_settings() -> None:
    names = {
        name: {option.name for option in select_backend(name).training_options} for name in ENGINES
    }
    common = {"probe_modes", "position_correction", "double_precision"}
    assert names["ptychi-lsqml"] == common | {"noise_model"}
    assert names["ptychi-rpie"] == common | {"alpha"}
    assert names["ptychi-dm"] == common | {"exit_wave_relaxation"}
    defaults = {
        name: {o.name: o.default for o in select_backend(name).inference_options}
        for name in ENGINES
    }
    assert defaults["ptychi-lsqml"]["probe_correction"] is True
    assert defaults["ptychi-rpie"]["probe_correction"] is False


@pytest.fixture(scope="module")
def mixed_model() -> TrainedModel:
    config = TrainingConfig(
        backend="ptychi-lsqml",
        nepochs=3,
        n_groups=None,
        probe_trainable=True,
        backend_options={"probe_modes": 2, "noise_model": "poisson"},
    )
    return _train("ptychi-lsqml", config, n_positions=32)


def test_probe_modes_and_settings_are_trained_saved_and_loaded(
    mixed_model: TrainedModel, tmp_path: Path
) -> None:
    state = mixed_model.network
    assert isinstance(state, PtychiState)
    assert state.probe.shape == (2, 64, 64) and state.probe.dtype == np.complex64
    assert dict(state.settings) == {"noise_model": "poisson"}
    assert state.iterations == 3
    backend = LsqmlBackend()
    backend.save(mixed_model, tmp_path / "m.ptycho")
    manifest = read_manifest(tmp_path / "m.ptycho")
    assert manifest["extra"]["probe_modes"] == 2 and manifest["extra"]["probe_refined"] is True
    assert manifest["framework"]["ptycho-ptychi"] == importlib.metadata.version("ptycho-ptychi")
    loaded = backend.load(tmp_path / "m.ptycho")
    assert np.array_equal(loaded.network.probe, state.probe)
    assert dict(loaded.network.settings) == dict(state.settings)
    data = default_dataset("test", n_positions=16)
    config = InferenceConfig(backend="ptychi-lsqml", iterations=2)
    first = reconstruct(mixed_model, data, config, hooks=QUIET).stitched.image
    again = reconstruct(loaded, data, config, hooks=QUIET).stitched.image
    assert np.array_equal(first, again)


def test_inference_options_are_checked(mixed_model: TrainedModel) -> None:
    data = default_dataset("test", n_positions=8)
    groups = prepare_inference_data(data, mixed_model, InferenceConfig(backend="ptychi-lsqml"))
    backend = LsqmlBackend()
    for options, fragment in (
        ({"noise_model": "gaussian"}, "'noise_model'"),  # a training setting
        ({"probe_correction": "yes"}, "probe_correction"),
    ):
        config = InferenceConfig(backend="ptychi-lsqml", backend_options=options)
        with pytest.raises(ValueError, match=fragment):
            backend.infer(mixed_model, groups, config, hooks=QUIET)


# ----------------------------------------------------------------------- the bundle payload


def _bundle(path: Path, model: TrainedModel, arrays: dict, document: object) -> Path:
    def payload(folder: Path) -> None:
        np.savez(folder / PAYLOAD_ARRAYS, **arrays)
        (folder / PAYLOAD_SETTINGS).write_text(json.dumps(document))

    write_bundle(path, model, payload, framework={})
    return path


@pytest.mark.parametrize(
    ("arrays", "document", "fragment"),
    [
        ({"probe": None}, None, "key 'probe' is missing"),
        ({"probe": np.zeros((64, 64), np.complex64)}, None, "key 'probe': expected shape"),
        ({"probe": np.zeros((9, 64, 64), np.complex64)}, None, "key 'probe': expected shape"),
        ({"probe": np.zeros((1, 64, 64), np.float32)}, None, "expected finite complex64"),
        ({"iterations": np.int64(0)}, None, "key 'iterations'"),
        ({"iterations": np.int64(10**12)}, None, "key 'iterations'"),
        ({"version": np.int64(9)}, None, "key 'version'"),
        ({"probe": np.array([object()], dtype=object)}, None, "pickled object arrays"),
        ({}, {"engine": "dm", "settings": {}}, "key 'engine'"),
        ({}, {"engine": "lsqml", "settings": {}}, "key 'settings'"),
        ({}, {"engine": "lsqml", "settings": {"noise_model": "laplace"}}, "noise_model"),
        ({}, [1, 2], "expected an object"),
    ],
)
def test_broken_payloads_are_refused_naming_file_and_key(
    mixed_model: TrainedModel, tmp_path: Path, arrays: dict, document: object, fragment: str
) -> None:
    good = {
        "version": np.int64(1),
        "probe": np.ones((1, 64, 64), np.complex64),
        "iterations": np.int64(5),
        "batch_size": np.int64(16),
    }
    merged = {**good, **arrays}
    merged = {key: value for key, value in merged.items() if value is not None}
    if document is None:
        document = {"engine": "lsqml", "settings": {"noise_model": "gaussian"}}
    bundle = _bundle(tmp_path / "b.ptycho", mixed_model, merged, document)
    with pytest.raises(BundleError, match=fragment) as caught:
        LsqmlBackend().load(bundle)
    assert str(bundle) in str(caught.value)


def test_a_bundle_payload_is_arrays_and_json_only(
    mixed_model: TrainedModel, tmp_path: Path
) -> None:
    LsqmlBackend().save(mixed_model, tmp_path / "m.ptycho")
    with zipfile.ZipFile(tmp_path / "m.ptycho") as archive:
        payload = sorted(n for n in archive.namelist() if n.startswith("payload/"))
        assert payload == sorted([f"payload/{PAYLOAD_ARRAYS}", f"payload/{PAYLOAD_SETTINGS}"])
        json.loads(archive.read(f"payload/{PAYLOAD_SETTINGS}"))


# ----------------------------------------------------------------------- reconstruction


def test_lsqml_reconstructs_far_better_than_its_flat_start() -> None:
    """A short run on a small scan: the engine does the work (not the flat start)."""
    config = TrainingConfig(backend="ptychi-lsqml", nepochs=25, n_groups=None, batch_size=32)
    model = _train("ptychi-lsqml", config, n_positions=96)
    test = default_dataset("test", n_positions=96)
    run = reconstruct(model, test, InferenceConfig(backend="ptychi-lsqml"), hooks=QUIET)
    scores = evaluate_stitched(run.stitched, test)
    flat = reconstruct(
        model, test, InferenceConfig(backend="ptychi-lsqml", iterations=1), hooks=QUIET
    )
    baseline = evaluate_stitched(flat.stitched, test)
    assert scores["amplitude_ssim"] > 0.9, scores
    assert scores["amplitude_ssim"] > baseline["amplitude_ssim"] + 0.3, (scores, baseline)


@pytest.mark.slow
def test_lsqml_on_the_default_data_through_the_command_line(tmp_path: Path) -> None:
    """The default data (512 training, 256 held-out positions), `ptycho train` / `infer` /
    `evaluate` with the backend's defaults. Measured: amplitude / phase SSIM 0.987 / 0.905
    (README); the aim is amplitude SSIM ≥ 0.98."""
    ptycho("simulate", "train.npz", cwd=tmp_path)
    ptycho("simulate", "test.npz", "--split", "test", cwd=tmp_path)
    ptycho("-q", "train", "train.npz", "--backend", "ptychi-lsqml", "--all-groups",
           "--output-dir", "run", cwd=tmp_path)  # fmt: skip
    ptycho("-q", "infer", "run/model.ptycho", "test.npz", "--output-dir", "run/test", cwd=tmp_path)
    metrics = json.loads(
        ptycho("evaluate", "run/test/reconstruction.npz", "test.npz", "--json", cwd=tmp_path).stdout
    )
    assert metrics["amplitude_ssim"] >= 0.98 and metrics["phase_ssim"] >= 0.88, metrics


def test_cli_trains_infers_and_hands_a_network_over_to_lsqml(tmp_path: Path) -> None:
    """`ptycho train/infer/evaluate` with an engine, and the hybrid: a (barely trained)
    network's object refined by LSQML through `infer --then ptychi-lsqml`."""
    ptycho("simulate", "train.npz", "--n-positions", "64", cwd=tmp_path)
    ptycho("simulate", "test.npz", "--split", "test", "--n-positions", "64", cwd=tmp_path)
    ptycho("-q", "train", "train.npz", "--backend", "ptychi-rpie", "--epochs", "5",
           "--all-groups", "--option", "alpha=0.2", "--output-dir", "rpie", cwd=tmp_path)  # fmt: skip
    assert read_manifest(tmp_path / "rpie" / "model.ptycho")["extra"]["settings"] == {"alpha": 0.2}
    ptycho("-q", "infer", "rpie/model.ptycho", "test.npz", "--output-dir", "rpie/test",
           cwd=tmp_path)  # fmt: skip
    ptycho("-q", "infer", "rpie/model.ptycho", "test.npz", "--output-dir", "rpie/moved",
           "--option", "position_correction=true", cwd=tmp_path)  # fmt: skip
    ptycho("-q", "train", "train.npz", "--backend", "pytorch", "--epochs", "1",
           "--n-groups", "32", "--output-dir", "net", cwd=tmp_path)  # fmt: skip
    ptycho("-q", "infer", "net/model.ptycho", "test.npz", "--output-dir", "net/alone", cwd=tmp_path)
    ptycho("-q", "infer", "net/model.ptycho", "test.npz", "--then", "ptychi-lsqml",
           "--iterations", "20", "--output-dir", "net/hybrid", cwd=tmp_path)  # fmt: skip

    def score(folder: str) -> dict:
        out = ptycho("evaluate", f"{folder}/reconstruction.npz", "test.npz", "--json", cwd=tmp_path)
        return json.loads(out.stdout)

    alone, hybrid = score("net/alone"), score("net/hybrid")
    assert hybrid["amplitude_ssim"] > alone["amplitude_ssim"] + 0.2, (alone, hybrid)
    assert all(np.isfinite(value) for value in score("rpie/test").values())
    with (
        np.load(tmp_path / "rpie" / "test" / "reconstruction.npz") as fixed,
        np.load(tmp_path / "rpie" / "moved" / "reconstruction.npz") as moved,
    ):  # the option reached pty-chi: correcting positions changes the reconstruction
        assert not np.array_equal(fixed["object"], moved["object"])
