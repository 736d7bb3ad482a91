"""Backend-agnostic workflows through a real entry-point backend (the test distribution's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptycho_core import workflows
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.errors import BackendMismatchError, BackendUnavailableError, DataContractError
from ptycho_core.hooks import hookimpl, make_plugin_manager
from ptycho_core.simulate import default_dataset

TEST_BACKEND = "numpy-gain"
pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")


@pytest.fixture(scope="module")
def datasets():  # type: ignore[no-untyped-def]
    return default_dataset("train", n_positions=96), default_dataset("test", n_positions=64)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    @hookimpl
    def ptycho_train_start(self, backend, config, n_groups):  # type: ignore[no-untyped-def]
        self.events.append(("start", backend))

    @hookimpl
    def ptycho_epoch_end(self, epoch, nepochs, losses):  # type: ignore[no-untyped-def]
        self.events.append(("epoch", epoch))

    @hookimpl
    def ptycho_train_end(self, history):  # type: ignore[no-untyped-def]
        self.events.append(("end", len(history["loss"])))

    @hookimpl
    def ptycho_infer_progress(self, done, total):  # type: ignore[no-untyped-def]
        self.events.append(("infer", (done, total)))


def test_run_cdi_example_reports_backend_and_reconstruction(datasets) -> None:  # type: ignore[no-untyped-def]
    train, test = datasets
    recorder = Recorder()
    hooks = make_plugin_manager(recorder, load_entry_points=False).hook
    config = TrainingConfig(backend=TEST_BACKEND, nepochs=3, batch_size=8, n_groups=64)
    amplitude, phase, results = workflows.run_cdi_example(train, test, config, M=16, hooks=hooks)
    assert results["backend"] == TEST_BACKEND
    assert amplitude.shape == phase.shape == test.object.shape
    assert np.isfinite(amplitude).all() and np.isfinite(phase).all()
    assert results["model"].backend == TEST_BACKEND
    kinds = [kind for kind, _ in recorder.events]
    assert kinds[0] == "start" and kinds.count("epoch") == 3
    assert ("end", 3) in recorder.events
    done, total = recorder.events[-1][1]  # type: ignore[misc]
    assert kinds[-1] == "infer" and done == total == results["n_groups"]


def test_run_cdi_example_without_stitching(datasets) -> None:  # type: ignore[no-untyped-def]
    config = TrainingConfig(backend=TEST_BACKEND, nepochs=1, batch_size=8, n_groups=32)
    amplitude, phase, results = workflows.run_cdi_example(datasets[0], None, config)
    assert amplitude is None and phase is None and results["backend"] == TEST_BACKEND


def test_prepared_training_data_follows_the_convention(datasets) -> None:  # type: ignore[no-untyped-def]
    train = datasets[0]
    config = TrainingConfig(model=ModelConfig(gridsize=2), nphotons=1e6, n_groups=50)
    prepared = workflows.prepare_training_data(train, config)
    assert prepared.groups.diffraction.shape == (50, 64, 64, 4)
    assert prepared.intensity_scale == pytest.approx(31.25)  # sqrt(1e6) / (64 / 2)
    mean_power = np.mean(np.sum(prepared.groups.diffraction.astype(np.float64) ** 2, axis=(1, 2)))
    assert mean_power == pytest.approx(32**2, rel=0.05)
    mask_mean = np.mean(np.abs(prepared.probe) * workflows_mask(64))
    assert mask_mean == pytest.approx(1 / config.model.probe_scale, rel=1e-4)


def workflows_mask(n: int) -> np.ndarray:
    from ptycho_core.physics import probe_disk_mask

    return probe_disk_mask(n)


def test_selection_happens_before_any_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="module unavailable"):
        workflows.train_cdi_model(
            tmp_path / "missing.npz", None, TrainingConfig(backend="needs-missing")
        )


def test_wrong_pattern_size_is_a_data_contract_error(datasets) -> None:  # type: ignore[no-untyped-def]
    config = TrainingConfig(backend=TEST_BACKEND, model=ModelConfig(N=128))
    with pytest.raises(DataContractError, match=r"'diffraction'.*128.*64"):
        workflows.train_cdi_model(datasets[0], None, config)


def test_bundle_round_trip_and_backend_check(datasets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = datasets
    config = TrainingConfig(backend=TEST_BACKEND, nepochs=2, batch_size=8, n_groups=32)
    model = workflows.train_cdi_model(train, None, config)["model"]
    path = workflows.save_model(model, tmp_path / "m.ptycho")
    loaded, loaded_config = workflows.load_inference_bundle(path)
    assert loaded_config == config
    a1, p1, _ = workflows.reassemble_cdi_image(test, model)
    a2, p2, _ = workflows.reassemble_cdi_image(test, loaded)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(p1, p2)
    with pytest.raises(BackendMismatchError, match="numpy-gain"):
        workflows.reassemble_cdi_image(test, model, InferenceConfig(backend="tensorflow"))
