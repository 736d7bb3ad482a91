"""A framework backend end to end: protocol, lazy import, the inference contract, train → save →
load → infer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from backend_helpers import Recorder, hooks_for
from cli_helpers import run_python

from framework_suites.framework import Framework
from ptycho_core.bundle import read_manifest
from ptycho_core.config import InferenceConfig
from ptycho_core.data import PtychoData
from ptycho_core.errors import BackendMismatchError, DataContractError
from ptycho_core.grouping import GroupedData
from ptycho_core.protocol import ReconstructionBackend, TrainedModel, TrainingData
from ptycho_core.results import load_reconstruction, save_reconstruction
from ptycho_core.workflows import prepare_inference_data, prepare_training_data, reconstruct

REPO = Path(__file__).resolve().parents[2]
FRAMEWORK_MODULES = ("torch", "lightning", "tensorflow", "keras")


def groups_like(n_groups: int, N: int, channels: int) -> GroupedData:
    """Random diffraction of ``n_groups`` groups of ``channels`` N×N patterns."""
    rng = np.random.default_rng(0)
    return GroupedData(
        diffraction=rng.random((n_groups, N, N, channels), dtype=np.float32),
        coords_relative=np.zeros((n_groups, 1, 2, channels), dtype=np.float32),
        coords_offsets=np.zeros((n_groups, 1, 2, 1)),
        nn_indices=np.zeros((n_groups, channels), dtype=np.int64),
        normalisation=1.0,
    )


class BackendSuite:
    """The backend of ``fw`` through the protocol's operations."""

    def test_the_backend_satisfies_the_protocol(self, fw: Framework) -> None:
        backend = fw.backend()
        assert isinstance(backend, ReconstructionBackend) and backend.name == fw.name

    def test_importing_the_package_imports_no_framework(self, fw: Framework) -> None:
        """The entry point's package is cheap: its framework loads with the backend class."""
        package = type(fw.backend()).__module__.split(".")[0]
        code = (
            f"import sys, {package}, ptycho_core\n"
            f"heavy = sorted(m for m in {FRAMEWORK_MODULES!r} if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            f"print({package}.BACKEND.name, {package}.BACKEND.target)\n"
        )
        done = run_python("-c", code, cwd=REPO)
        assert done.returncode == 0, done.stderr
        backend_class = type(fw.backend())
        target = f"{backend_class.__module__}:{backend_class.__qualname__}"
        assert done.stdout.split() == [fw.name, target]

    def test_infer_returns_complex_patches_in_batches_with_progress(
        self, fw: Framework, small_model: TrainedModel, small_training: TrainingData
    ) -> None:
        recorder = Recorder()
        groups = small_training.groups.select(np.arange(20))
        backend = fw.backend()
        config = InferenceConfig(backend=fw.name, accelerator="cpu")
        out = backend.infer(
            small_model, groups, config.replace(batch_size=7), hooks=hooks_for(recorder)
        )
        assert out.shape == (20, 64, 64, 1) and out.dtype == np.complex64
        assert np.isfinite(out).all()
        assert recorder.named("infer_progress") == [
            {"done": 7, "total": 20},
            {"done": 14, "total": 20},
            {"done": 20, "total": 20},
        ]
        whole = backend.infer(small_model, groups, config.replace(batch_size=64), hooks=hooks_for())
        # other batch sizes may pick other kernels: equal to float32 round-off, which
        # accumulates through the ~20 layers to a few 1e-6 of the largest value
        np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-5 * float(np.abs(whole).max()))
        bare = backend.forward(
            small_model, groups.diffraction, groups.coords_relative, accelerator="cpu"
        )
        np.testing.assert_array_equal(bare, whole)  # one batch: the same computation

    def test_infer_refuses_data_of_another_size_gridsize_backend_or_device_count(
        self, fw: Framework, small_model: TrainedModel
    ) -> None:
        backend = fw.backend()
        config = InferenceConfig(backend=fw.name)
        with pytest.raises(
            DataContractError,
            match=r"expected shape \(B, 64, 64, 1\) for the model's N=64.*found \(5, 128, 128, 1\)",
        ):
            backend.infer(small_model, groups_like(5, 128, 1), config, hooks=hooks_for())
        with pytest.raises(
            DataContractError,
            match=r"expected 1 channels \(the model's gridsize 1\), found 4 \(gridsize 2\)",
        ):
            backend.infer(small_model, groups_like(5, 64, 4), config, hooks=hooks_for())
        foreign = dataclasses.replace(small_model, backend=fw.other)
        with pytest.raises(
            BackendMismatchError, match=f"trained by backend '{fw.other}'; backend '{fw.name}'"
        ):
            backend.infer(foreign, groups_like(5, 64, 1), config, hooks=hooks_for())
        with pytest.raises(
            ValueError, match=rf"the {fw.name} backend infers on one device.*found 2"
        ):
            backend.infer(
                small_model, groups_like(5, 64, 1), config.replace(devices=2), hooks=hooks_for()
            )

    def test_bf16_inference_stays_close_to_float32(
        self, fw: Framework, small_model: TrainedModel, small_training: TrainingData
    ) -> None:
        backend = fw.backend()
        groups = small_training.groups
        config = InferenceConfig(backend=fw.name, accelerator="cpu")
        exact = backend.infer(small_model, groups, config, hooks=hooks_for())
        fast = backend.infer(
            small_model, groups, config.replace(precision="bf16-mixed"), hooks=hooks_for()
        )
        assert fast.dtype == np.complex64 and np.isfinite(fast).all()
        centre = (slice(None), slice(16, 48), slice(16, 48))
        error = np.abs(fast[centre] - exact[centre]).mean() / np.abs(exact[centre]).mean()
        assert 0 < error < 0.05

    @pytest.mark.slow
    def test_train_save_load_infer_on_simulated_data(
        self, fw: Framework, train_set: PtychoData, test_set: PtychoData, tmp_path: Path
    ) -> None:
        """End to end: train, save, load, infer; reloaded predictions equal the trained ones
        exactly, and the reconstruction saves and loads."""
        backend = fw.backend()
        config = fw.small_config(n_groups=64, nepochs=2, early_stop_patience=5)
        model = backend.train(prepare_training_data(train_set, config), config, hooks=hooks_for())
        bundle = tmp_path / "model.ptycho"
        backend.save(model, bundle)
        loaded = backend.load(bundle)
        assert loaded.backend == fw.name and loaded.config == model.config
        assert loaded.intensity_scale == model.intensity_scale and loaded.history == model.history
        np.testing.assert_array_equal(loaded.probe, model.probe)
        assert loaded.extra["output_gain"] == model.extra["output_gain"]

        manifest = read_manifest(bundle)
        assert manifest["backend"] == fw.name
        assert set(manifest["payload"]) == {fw.persistence.WEIGHTS_NAME}
        assert set(manifest["framework"]) == set(fw.bundle_frameworks)
        assert manifest["extra"]["output_gain"] == pytest.approx(model.network.output_gain)
        # N 64, gridsize 1, n_filters_scale 1: 585,244 + the gain
        assert manifest["extra"]["parameters"] == 585_245
        assert manifest["history"] == json.loads(json.dumps(model.history))

        inference = InferenceConfig(backend=fw.name, accelerator="cpu")
        groups = prepare_inference_data(test_set, model, inference)
        before = backend.infer(model, groups, inference, hooks=hooks_for())
        after = backend.infer(loaded, groups, inference, hooks=hooks_for())
        np.testing.assert_array_equal(after, before)  # bit for bit
        result = reconstruct(loaded, test_set, inference, hooks=hooks_for(), backend=backend)
        assert result.backend == fw.name and result.n_groups == groups.n_groups
        path = save_reconstruction(
            result.stitched, tmp_path / "reconstruction.npz", backend=fw.name
        )
        stitched = load_reconstruction(path)
        covered = stitched.covered
        assert covered.sum() > 0.25 * covered.size  # the spiral scan covers a disk of the object
        assert np.isfinite(stitched.image).all() and np.abs(stitched.image[covered]).max() > 0
