"""Backend-agnostic workflows through a real entry-point backend (the test distribution's)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from ptycho_core import workflows
from ptycho_core.backend_selector import select_backend
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.errors import (
    BackendMismatchError,
    BackendUnavailableError,
    CapabilityError,
    ConfigError,
    DataContractError,
)
from ptycho_core.geometry import extract_patches
from ptycho_core.hooks import hookimpl, make_plugin_manager
from ptycho_core.physics import normalize_probe
from ptycho_core.simulate import default_dataset
from ptycho_core.stitching import Stitched, stitch_patches

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


# ----------------------------------------------------------------------- optional capabilities


@pytest.fixture(scope="module")
def gain_model(datasets):  # type: ignore[no-untyped-def]
    config = TrainingConfig(backend=TEST_BACKEND, nepochs=2, batch_size=8, n_groups=32)
    return workflows.train_cdi_model(datasets[0], None, config)["model"]


@pytest.mark.parametrize("config", [None, InferenceConfig(batch_size=32)])
def test_reconstruct_runs_any_backends_model_with_default_configs(  # type: ignore[no-untyped-def]
    gain_model, datasets, config
) -> None:
    """A model knows its backend: a default InferenceConfig names none and needs none."""
    result = workflows.reconstruct(gain_model, datasets[1], config)
    assert result.backend == TEST_BACKEND and result.stitched.covered.any()
    with pytest.raises(BackendMismatchError, match=r"InferenceConfig\.backend"):
        workflows.reconstruct(gain_model, datasets[1], InferenceConfig(backend="direct-zero"))


def test_reconstruct_in_chunks_shows_the_object_growing_and_ends_the_same(  # type: ignore[no-untyped-def]
    gain_model, datasets
) -> None:
    seen: list[tuple[int, int, int]] = []

    def on_partial(stitched: Stitched, done: int, total: int) -> None:
        seen.append((done, total, int(stitched.covered.sum())))

    whole = workflows.reconstruct(gain_model, datasets[1])
    chunked = workflows.reconstruct(gain_model, datasets[1], chunks=4, on_partial=on_partial)
    assert [done for done, _, _ in seen][-1] == whole.n_groups and len(seen) == 4
    assert all(a[2] <= b[2] for a, b in itertools.pairwise(seen))  # coverage grows
    np.testing.assert_allclose(chunked.stitched.image, whole.stitched.image, atol=1e-6)
    with pytest.raises(ConfigError, match="chunks"):
        workflows.reconstruct(gain_model, datasets[1], chunks=0)


def test_reconstruct_hands_the_initial_object_to_the_backend_unchanged(datasets) -> None:  # type: ignore[no-untyped-def]
    test = datasets[1]
    echo = select_backend("object-echo")
    model = echo.model_from_probe(
        normalize_probe(test.probe, 4.0), TrainingConfig(backend="object-echo")
    )
    rng = np.random.default_rng(5)
    shape = (test.object.shape[0] - 7, test.object.shape[1] - 4)
    image = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    initial = Stitched(image=image, weight=np.ones(shape), origin=(7, 4))
    result = workflows.reconstruct(
        model, test, InferenceConfig(backend="object-echo"), backend=echo, initial_object=initial
    )
    assert len(echo.received) == 1 and echo.received[0] is initial  # the very object, once
    # object-echo cuts the object it got into patches: the result is what cutting and
    # stitching the initial image, placed through its origin in the objectGuess frame, gives
    assert result.stitched.origin == (0, 0) and result.backend == "object-echo"
    placed = np.zeros(test.object.shape, dtype=np.complex128)
    placed[7:, 4:] = image
    groups = workflows.prepare_inference_data(test, model, InferenceConfig(backend="object-echo"))
    x, y = groups.coords_offsets[:, 0, 0, 0], groups.coords_offsets[:, 0, 1, 0]
    reference = stitch_patches(extract_patches(placed, x, y, 64), x, y, shape=placed.shape)
    assert result.stitched.covered.sum() > 1000
    np.testing.assert_allclose(result.stitched.image, reference.image, atol=1e-5)


def test_an_initial_object_for_a_backend_without_the_capability_is_refused(  # type: ignore[no-untyped-def]
    gain_model, tmp_path: Path
) -> None:
    initial = Stitched(image=np.ones((8, 8)), weight=np.ones((8, 8)), origin=(0, 0))
    # the data file does not exist: the refusal comes before any data is read
    with pytest.raises(CapabilityError, match=r"^backend numpy-gain cannot start from an initial"):
        workflows.reconstruct(gain_model, tmp_path / "absent.npz", initial_object=initial)


def test_refine_model_continues_training_on_the_target_data(gain_model, datasets) -> None:  # type: ignore[no-untyped-def]
    test = datasets[1]
    constant = complex(gain_model.network)
    recorder = Recorder()
    hooks = make_plugin_manager(recorder, load_entry_points=False).hook
    refined = workflows.refine_model(gain_model, test, epochs=3, hooks=hooks)
    assert refined.config == workflows.refinement_config(gain_model, 3)
    assert refined.config.n_groups is None and refined.config.validation_split == 0.0
    assert [kind for kind, _ in recorder.events].count("epoch") == 3
    assert len(refined.history["loss"]) == 3 and "val_loss" not in refined.history
    np.testing.assert_array_equal(refined.probe, gain_model.probe)  # the model's own probe
    assert refined.intensity_scale == gain_model.intensity_scale  # the model's nphotons
    assert complex(gain_model.network) == constant  # the input model is unchanged
    # refining continues from the model: it fits the target better than training from
    # scratch for as many epochs
    fresh = workflows.train_cdi_model(test, None, refined.config)["model"]
    assert refined.history["loss"][-1] < fresh.history["loss"][-1]
    # the photon count sets the intensity scale
    brighter = workflows.refine_model(
        gain_model,
        test,
        epochs=1,
        config=workflows.refinement_config(gain_model, 1).replace(nphotons=1e6),
    )
    assert brighter.intensity_scale == pytest.approx(1e3 / 32)


def test_refine_model_without_warm_start_is_refused(datasets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = TrainingConfig(backend="direct-zero", nepochs=1, n_groups=16)
    model = workflows.train_cdi_model(datasets[0], None, config)["model"]
    with pytest.raises(CapabilityError) as caught:
        workflows.refine_model(model, tmp_path / "absent.npz", epochs=2)
    assert str(caught.value) == (
        "backend direct-zero cannot refine a trained model (it has no train_from)"
    )


def test_reconstruct_hybrid_starts_the_solver_from_the_first_result(gain_model, datasets) -> None:  # type: ignore[no-untyped-def]
    test = datasets[1]
    first, final = workflows.reconstruct_hybrid(gain_model, test, "object-echo")
    assert (first.backend, final.backend) == (TEST_BACKEND, "object-echo")
    assert final.n_groups == first.n_groups == test.n_positions
    covered = first.stitched.covered_above(1 - 1e-6)
    np.testing.assert_allclose(
        final.stitched.image[covered], first.stitched.image[covered], rtol=1e-5
    )
    # a trained model of the solver's backend works as well
    echo_model = select_backend("object-echo").model_from_probe(
        gain_model.probe, TrainingConfig(backend="object-echo")
    )
    _, again = workflows.reconstruct_hybrid(gain_model, test, echo_model)
    np.testing.assert_array_equal(again.stitched.image, final.stitched.image)
    # a backend without infer_from is refused before the first pass runs
    recorder = Recorder()
    hooks = make_plugin_manager(recorder, load_entry_points=False).hook
    with pytest.raises(CapabilityError, match="backend numpy-gain cannot start from"):
        workflows.reconstruct_hybrid(gain_model, test, TEST_BACKEND, hooks=hooks)
    assert recorder.events == []


def test_reconstruct_hybrid_gives_then_options_to_the_solver_only(gain_model, datasets) -> None:  # type: ignore[no-untyped-def]
    test = datasets[1]
    first, final = workflows.reconstruct_hybrid(
        gain_model, test, "object-echo", then_options={"echo_gain": 3.0}
    )
    covered = first.stitched.covered_above(1 - 1e-6)
    np.testing.assert_allclose(
        final.stitched.image[covered], 3 * first.stitched.image[covered], rtol=1e-5
    )
    # an option the solver does not declare is refused before the first pass runs
    recorder = Recorder()
    hooks = make_plugin_manager(recorder, load_entry_points=False).hook
    with pytest.raises(ConfigError, match="object-echo backend has no option 'echo_gian'"):
        workflows.reconstruct_hybrid(
            gain_model, test, "object-echo", hooks=hooks, then_options={"echo_gian": 3.0}
        )
    assert recorder.events == []
    # the first pass takes its own options from its config: numpy-gain declares none
    with pytest.raises(ConfigError, match="numpy-gain backend accepts no backend options"):
        workflows.reconstruct_hybrid(
            gain_model,
            test,
            "object-echo",
            config=InferenceConfig(backend_options={"echo_gain": 3.0}),
        )


def test_check_backend_options_resolves_against_the_declarations() -> None:
    assert workflows.check_backend_options("object-echo", {}, "inference") == {"echo_gain": 1.0}
    assert workflows.check_backend_options(TEST_BACKEND, {"newton_fraction": 1}, "training") == {
        "newton_fraction": 1
    }
    with pytest.raises(ConfigError, match=r"TrainingConfig\.backend_options\['newton_fraction'\]"):
        workflows.check_backend_options(TEST_BACKEND, {"newton_fraction": 0}, "training")
    # a value no option may have is refused as the config would refuse it, whatever the check
    with pytest.raises(ConfigError, match=r"InferenceConfig\.backend_options\['echo_gain'\]"):
        workflows.check_backend_options("object-echo", {"echo_gain": [2.0]}, "inference")
