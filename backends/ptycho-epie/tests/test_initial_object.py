"""ePIE started from a given object (ptycho's initial-object capability) and without training.

``infer_from`` is what ``ptycho infer BUNDLE DATA --then epie`` runs after a network:
rPIE from the network's stitched object instead of the flat start. The object's scale
and global phase are arbitrary, so they must not matter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ptycho_epie.backend import DEFAULT_STEP, EpieBackend

from ptycho_core.backend_selector import select_backend
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.data import PtychoData, load_npz
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.physics import normalize_probe
from ptycho_core.protocol import SupportsInitialObject, SupportsWarmStart, TrainedModel
from ptycho_core.simulate import default_dataset
from ptycho_core.stitching import Stitched
from ptycho_core.workflows import prepare_inference_data, reconstruct

PTYCHO = shutil.which("ptycho", path=os.path.dirname(sys.executable)) or "ptycho"
QUIET = make_plugin_manager(load_entry_points=False).hook
EPIE = InferenceConfig(backend="epie")


@pytest.fixture(scope="module")
def scan() -> PtychoData:
    return default_dataset("test", n_positions=64)


def solver(data: PtychoData, iterations: int) -> TrainedModel:
    """An untrained ePIE model for the data's probe (as ``--then epie`` builds it)."""
    config = TrainingConfig(backend="epie", nepochs=iterations)
    return EpieBackend().model_from_probe(normalize_probe(data.probe, 4.0), config)


def start(image: np.ndarray, origin: tuple[int, int] = (0, 0)) -> Stitched:
    return Stitched(image=image, weight=np.ones(image.shape), origin=origin)


def error(result, truth: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """Relative squared error on the fully covered pixels, one complex scale removed."""
    covered = result.stitched.covered_above(1 - 1e-6)
    found, expected = result.stitched.image[covered], truth[covered]
    scale = np.vdot(found, expected) / np.vdot(found, found)
    return float(np.sum(np.abs(scale * found - expected) ** 2) / np.sum(np.abs(expected) ** 2))


def test_epie_declares_the_initial_object_capability_only() -> None:
    backend = select_backend("epie")
    assert isinstance(backend, SupportsInitialObject)
    assert not isinstance(backend, SupportsWarmStart)


def test_starting_from_the_true_object_beats_the_flat_start(scan: PtychoData) -> None:
    model = solver(scan, 3)
    flat = reconstruct(model, scan, EPIE)
    from_truth = reconstruct(model, scan, EPIE, initial_object=start(scan.object))
    assert error(from_truth, scan.object) < 0.1 * error(flat, scan.object)
    assert error(from_truth, scan.object) < 1e-3


def test_scale_and_global_phase_of_the_initial_object_do_not_matter(scan: PtychoData) -> None:
    model = solver(scan, 2)
    plain = reconstruct(model, scan, EPIE, initial_object=start(scan.object))
    scaled = reconstruct(model, scan, EPIE, initial_object=start(40 * np.exp(2.1j) * scan.object))
    # the fitted scale and turn make both starts the same object: so are the results
    np.testing.assert_allclose(
        scaled.stitched.image, plain.stitched.image, atol=1e-4 * np.abs(plain.stitched.image).max()
    )
    # and the scale is the data's: the flat start converges to the same amplitude level
    converged = reconstruct(solver(scan, 30), scan, EPIE)
    covered = plain.stitched.covered_above(1 - 1e-6)
    level = np.median(np.abs(plain.stitched.image[covered]))
    assert level == pytest.approx(np.median(np.abs(converged.stitched.image[covered])), rel=0.03)


def test_origin_places_the_object_and_uncovered_pixels_are_ignored(scan: PtychoData) -> None:
    model = solver(scan, 2)
    crop = scan.object[6:, 9:]
    placed = reconstruct(model, scan, EPIE, initial_object=start(crop, (6, 9)))
    misplaced = reconstruct(model, scan, EPIE, initial_object=start(crop, (0, 0)))
    assert error(placed, scan.object) < 1e-3 < error(misplaced, scan.object)
    # pixels of weight 0 are not covered: whatever they hold, the flat start replaces them
    weight = np.ones(scan.object.shape)
    weight[:, 100:] = 0
    half = scan.object.copy()
    garbage = half.copy()
    garbage[:, 100:] = 1e6
    clean = reconstruct(
        model, scan, EPIE, initial_object=Stitched(image=half, weight=weight, origin=(0, 0))
    )
    dirty = reconstruct(
        model, scan, EPIE, initial_object=Stitched(image=garbage, weight=weight, origin=(0, 0))
    )
    np.testing.assert_array_equal(dirty.stitched.image, clean.stitched.image)


def test_an_initial_object_outside_the_scan_is_refused(scan: PtychoData) -> None:
    model = solver(scan, 1)
    far = start(np.ones((32, 32)), (10_000, 10_000))
    with pytest.raises(ValueError, match="covers the illumination of none"):
        reconstruct(model, scan, EPIE, initial_object=far)


def test_model_from_probe_and_the_iteration_setting(scan: PtychoData, tmp_path: Path) -> None:
    model = solver(scan, 4)
    state = model.network
    assert (state.alpha, state.momentum) == DEFAULT_STEP
    assert (state.gain, state.iterations, state.minibatch) == (1.0, 4, 16)
    np.testing.assert_array_equal(model.probe, normalize_probe(scan.probe, 4.0))
    backend = EpieBackend()
    backend.save(model, tmp_path / "solver.ptycho")
    assert backend.load(tmp_path / "solver.ptycho").network.iterations == 4
    # InferenceConfig.iterations overrides the model's count, exactly
    groups = prepare_inference_data(scan, model, EPIE)
    two = backend.infer(solver(scan, 2), groups, EPIE, hooks=QUIET)
    overridden = backend.infer(model, groups, EPIE.replace(iterations=2), hooks=QUIET)
    np.testing.assert_array_equal(overridden, two)
    assert not np.array_equal(backend.infer(model, groups, EPIE, hooks=QUIET), two)
    with pytest.raises(ValueError, match="n_filters_scale"):
        backend.model_from_probe(
            model.probe, TrainingConfig(backend="epie", model=ModelConfig(n_filters_scale=4))
        )
    with pytest.raises(ValueError, match=r"\(64, 64\) probe"):
        backend.model_from_probe(model.probe[:32, :32], TrainingConfig(backend="epie"))


def _ptycho(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PTYCHO, *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False
    )


def test_cli_then_epie_and_refusals(tmp_path: Path) -> None:
    assert _ptycho("simulate", "train.npz", "--n-positions", "64", cwd=tmp_path).returncode == 0
    assert (
        _ptycho(
            "simulate", "test.npz", "--split", "test", "--n-positions", "64", cwd=tmp_path
        ).returncode
        == 0
    )
    trained = _ptycho(
        "--quiet",
        "train",
        "train.npz",
        "--backend",
        "epie",
        "--epochs",
        "3",
        "--all-groups",
        "--output-dir",
        "run",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    for then in ("epie", "run/model.ptycho"):
        result = _ptycho(
            "--quiet",
            "infer",
            "run/model.ptycho",
            "test.npz",
            "--output-dir",
            "hybrid",
            "--then",
            then,
            "--iterations",
            "5",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "then epie from that object" in result.stdout
        assert (tmp_path / "hybrid" / "initial" / "reconstruction.npz").is_file()
        with np.load(tmp_path / "hybrid" / "reconstruction.npz", allow_pickle=False) as final:
            assert str(final["backend"]) == "epie"
            assert final["object"].shape == load_npz(tmp_path / "test.npz").object.shape
    refused = _ptycho(
        "infer",
        "run/model.ptycho",
        "test.npz",
        "--output-dir",
        "x",
        "--refine-epochs",
        "2",
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "ptycho infer: error: backend epie cannot refine a trained model (it has no train_from)"
    )
