"""The reconstructor's behaviour inside Ptychodus, with a fast numpy backend.

``numpy-gain`` (tests/plugins/ptycho-testbackends) is a real backend whose model is one
complex constant: training lowers its loss every epoch and inference returns that
constant everywhere. That makes the plumbing (streaming, files, errors, batch mode,
subprocess and in-process runs) checkable in seconds; test_ptychodus_end_to_end.py does the same
flow with PyTorch for the quality.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_ptychodus import (
    load_into,
    ptycho_reconstructor,
    set_settings,
    to_ptychodus,
    write_input_folder,
)
from ptychodus.api.io import load_product

from ptycho_core.bundle import read_bundle, read_manifest
from ptycho_core.data import load_npz
from ptycho_core.errors import (
    BackendMismatchError,
    BackendUnavailableError,
    CapabilityError,
    DataContractError,
)
from ptycho_core.workflows import load_bundle, refine_model, refinement_config
from ptycho_ptychodus.mapping import (
    map_reconstruct_input,
    mean_photons_per_pattern,
)

pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")

GAIN = "numpy-gain"


def _gain_of(bundle: Path) -> complex:
    with (
        read_bundle(bundle) as contents,
        np.load(contents.payload_dir / "weights.npz", allow_pickle=False) as weights,
    ):
        values = {k: weights[k] for k in weights.files}
    (value,) = (complex(np.asarray(v).ravel()[0]) for v in values.values() if np.size(v) == 1)
    return value


def _console_script(name: str) -> str:
    script = Path(sys.executable).parent / name
    found = str(script) if script.exists() else shutil.which(name)
    assert found, f"console script {name} is not installed (reinstall ptycho)"
    return found


@pytest.fixture
def gain_core(model_core, tmp_path, small_train):
    """A ModelCore with Backend numpy-gain and the small training set loaded as a product."""
    core = model_core()
    set_settings(core, Backend=GAIN, NumEpochs=3, Updates=4)
    product = load_into(
        core, tmp_path / "in", to_ptychodus(small_train, initial_object="truth"), "train"
    )
    return core, product


def _train(core, product, folder: Path) -> Path:
    product.export_training_data(folder / "train_data.npz", algorithm="ptycho_pinn")
    product.train_reconstructor_local(folder, folder, algorithm="ptycho_pinn", block=True)
    return folder / "model.ptycho"


def test_export_writes_the_data_contract(gain_core, tmp_path, small_train) -> None:
    _, product = gain_core
    path = tmp_path / "exported.npz"
    product.export_training_data(path, algorithm="ptycho_pinn")
    data = load_npz(path)
    counts = np.rint(small_train.diffraction.astype(np.float64) ** 2)
    np.testing.assert_allclose(data.diffraction, np.sqrt(counts), rtol=1e-6)
    np.testing.assert_allclose(data.xcoords, small_train.xcoords, atol=1e-9)
    np.testing.assert_allclose(data.ycoords, small_train.ycoords, atol=1e-9)
    np.testing.assert_array_equal(data.object, small_train.object)
    np.testing.assert_array_equal(data.probe, small_train.probe)


def test_train_streams_losses_writes_the_bundle_and_loads_it(gain_core, tmp_path) -> None:
    core, product = gain_core
    folder = tmp_path / "run"
    product.export_training_data(folder / "train_data.npz", algorithm="ptycho_pinn")
    reconstructor = ptycho_reconstructor(core)
    outputs = list(reconstructor.train(folder, folder))
    assert [o.progress for o in outputs] == [33, 66, 99, 100]
    losses = [v.value for v in outputs[-1].training_loss]
    assert [v.epoch for v in outputs[-1].training_loss] == [0, 1, 2]
    assert losses[0] > losses[1] > losses[2]
    bundle = folder / "model.ptycho"
    manifest = read_manifest(bundle)
    assert manifest["backend"] == GAIN
    assert manifest["history"]["loss"] == pytest.approx(losses)
    assert manifest["config"]["nphotons"] == pytest.approx(1e9, rel=1e-3)  # from the data
    assert manifest["config"]["model"]["model_type"] == "pinn"
    assert reconstructor.is_model_loaded()
    saved = tmp_path / "saved.ptycho"
    core.processing_core.processing_api.save_model_to_file(saved, algorithm="ptycho_pinn")
    assert saved.read_bytes() == bundle.read_bytes()


def test_training_through_ptychodus_task_and_a_missing_folder_file(
    gain_core, tmp_path, captured
) -> None:
    core, product = gain_core
    bundle = _train(core, product, tmp_path / "run")
    assert read_manifest(bundle)["backend"] == GAIN
    assert "epoch 3/3: loss" in captured.text()
    with pytest.raises(FileNotFoundError, match=r"holding train_data\.npz"):
        product.train_reconstructor_local(
            tmp_path / "empty", tmp_path / "out", algorithm="ptycho_pinn", block=True
        )


def test_reconstruct_streams_partial_objects_in_the_input_geometry(
    gain_core, tmp_path, small_test
) -> None:
    core, product = gain_core
    bundle = _train(core, product, tmp_path / "run")
    gain = _gain_of(bundle)
    test = to_ptychodus(small_test)
    test_product = load_into(core, tmp_path / "in", test, "test")
    api = core.processing_core.processing_api
    parameters = api.get_reconstruct_input(product_index=test_product.get_product_index())
    reconstructor = ptycho_reconstructor(core)
    outputs = list(reconstructor.reconstruct(parameters))
    assert [o.progress for o in outputs] == [25, 50, 75, 100]
    changed = [int(np.count_nonzero(o.product.object_.get_layer(0) != 1)) for o in outputs]
    assert changed == sorted(changed) and changed[0] < changed[-1]
    final = outputs[-1].product
    obj = final.object_
    source = test.product.object_
    assert obj.get_layer(0).shape == source.get_layer(0).shape
    assert obj.get_pixel_geometry() == source.get_pixel_geometry()
    assert obj.get_center() == source.get_center()
    layer = obj.get_layer(0)
    covered = layer != 1
    np.testing.assert_allclose(layer[covered], gain, rtol=1e-5)
    assert [v.value for v in final.losses] == pytest.approx(
        read_manifest(bundle)["history"]["loss"]
    )
    assert final.probe_positions is parameters.product.probe_positions
    # Through Ptychodus's own task: a new product holds the same object.
    result = test_product.reconstruct_local(algorithm="ptycho_pinn", block=True)
    np.testing.assert_array_equal(result.get_product().object_.get_layer(0), layer)


def test_in_process_and_subprocess_runs_agree(gain_core, tmp_path, small_test) -> None:
    core, product = gain_core
    _train(core, product, tmp_path / "run")
    test_product = load_into(core, tmp_path / "in", to_ptychodus(small_test), "test")
    results = {}
    for in_subprocess in (True, False):
        set_settings(core, RunInSubprocess=in_subprocess)
        output = test_product.reconstruct_local(algorithm="ptycho_pinn", block=True)
        results[in_subprocess] = output.get_product().object_.get_layer(0)
    np.testing.assert_array_equal(results[True], results[False])


def test_refine_epochs_refine_the_model_on_the_data_before_reconstructing(
    gain_core, tmp_path, small_test, captured
) -> None:
    core, product = gain_core
    bundle = _train(core, product, tmp_path / "run")
    gain = _gain_of(bundle)
    test_product = load_into(core, tmp_path / "in", to_ptychodus(small_test), "test")
    parameters = core.processing_core.processing_api.get_reconstruct_input(
        product_index=test_product.get_product_index()
    )
    set_settings(core, RefineEpochs=3)
    layer = test_product.reconstruct_local(algorithm="ptycho_pinn", block=True)
    layer = layer.get_product().object_.get_layer(0)
    # the same refinement through ptycho's workflow, on the data as the adapter maps them
    mapped = map_reconstruct_input(parameters).data
    config = refinement_config(load_bundle(bundle), 3).replace(
        nphotons=mean_photons_per_pattern(mapped.diffraction)
    )
    expected = refine_model(load_bundle(bundle), mapped, epochs=3, config=config)
    covered = layer != 1
    np.testing.assert_allclose(layer[covered], complex(expected.network), rtol=1e-5)
    assert abs(complex(expected.network) - gain) > 1e-3 * abs(gain)  # the test can fail
    assert "refinement epoch 3/3" in captured.text(logging.INFO)
    # the loaded model itself was not changed
    set_settings(core, RefineEpochs=0)
    again = test_product.reconstruct_local(algorithm="ptycho_pinn", block=True)
    np.testing.assert_allclose(again.get_product().object_.get_layer(0)[covered], gain, rtol=1e-5)


def test_refine_epochs_with_a_backend_without_warm_start_is_refused(
    model_core, tmp_path, small_train, captured
) -> None:
    core = model_core()
    set_settings(core, Backend="direct-zero", NumEpochs=1, RefineEpochs=2)
    product = load_into(core, tmp_path / "in", to_ptychodus(small_train), "train")
    _train(core, product, tmp_path / "run")
    message = "backend direct-zero cannot refine a trained model (it has no train_from)"
    with pytest.raises(CapabilityError, match=re.escape(message)):
        product.reconstruct_local(algorithm="ptycho_pinn", block=True)
    assert f"reconstruct: {message}" in captured.text(logging.ERROR)


def test_another_backends_bundle_is_refused_and_ptychodus_carries_on(
    gain_core, tmp_path, captured
) -> None:
    core, product = gain_core
    bundle = _train(core, product, tmp_path / "run")
    api = core.processing_core.processing_api
    set_settings(core, Backend="pytorch")
    message = (
        r"this model bundle was written by backend 'numpy-gain', but the \[Ptycho\] Backend "
        r"setting is 'pytorch'"
    )
    with pytest.raises(BackendMismatchError, match=message):
        api.load_model_from_file(bundle, algorithm="ptycho_pinn")
    assert "load model:" in captured.text(logging.ERROR)
    # The model trained earlier is still loaded, but no longer matches the setting.
    with pytest.raises(BackendMismatchError, match="written by backend 'numpy-gain'"):
        product.reconstruct_local(algorithm="ptycho_pinn", block=True)
    set_settings(core, Backend=GAIN)
    api.load_model_from_file(bundle, algorithm="ptycho_pinn")
    result = product.reconstruct_local(algorithm="ptycho_pinn", block=True)
    assert result.get_product().object_.get_layer(0).shape == (160, 160)


def test_non_square_patterns_are_refused_in_ptychodus(
    gain_core, tmp_path, small_test, captured
) -> None:
    core, product = gain_core
    _train(core, product, tmp_path / "run")
    test = to_ptychodus(small_test)
    from ptychodus.api.assemble import AssembledDiffractionData

    cropped = AssembledDiffractionData(
        test.assembled.get_indexes(),
        test.assembled.get_patterns()[:, :, 8:56],
        test.assembled.get_pixel_geometry(),
        test.assembled.get_bad_pixels()[:, 8:56],
    )
    test = test.__class__(assembled=cropped, product=test.product, truth=test.truth)
    test_product = load_into(core, tmp_path / "in", test, "narrow")
    with pytest.raises(DataContractError, match=r"expected square N×N patterns.*found 64×48"):
        test_product.reconstruct_local(algorithm="ptycho_pinn", block=True)
    assert "reconstruct: Ptychodus: diffraction patterns: expected square" in captured.text(
        logging.ERROR
    )


@pytest.mark.parametrize("backend", ["needs-missing", "tensorflow"])
def test_a_missing_framework_is_reported_and_ptychodus_keeps_running(
    gain_core, tmp_path, captured, backend
) -> None:
    if backend == "tensorflow":
        import importlib.util

        if importlib.util.find_spec("tensorflow") is not None:
            pytest.skip("TensorFlow is installed here; the 'ptychodus' tox env has torch only")
        expected = "TensorFlow backend selected but tensorflow module unavailable"
        hint = "Install it with: pip install 'ptycho[tf]'"
    else:
        expected = (
            "MissingFramework backend selected but ptycho_test_missing_framework module unavailable"
        )
        hint = "Install it with: pip install 'ptycho-test-missing-framework>=1'"
    core, product = gain_core
    folder = tmp_path / "run"
    product.export_training_data(folder / "train_data.npz", algorithm="ptycho_pinn")
    set_settings(core, Backend=backend)
    with pytest.raises(BackendUnavailableError, match=expected) as raised:
        product.train_reconstructor_local(folder, folder, algorithm="ptycho_pinn", block=True)
    assert hint in str(raised.value)
    assert f"train: {expected}" in captured.text(logging.ERROR)
    assert not (folder / "model.ptycho").exists()
    set_settings(core, Backend=GAIN)
    product.train_reconstructor_local(folder, folder, algorithm="ptycho_pinn", block=True)
    assert read_manifest(folder / "model.ptycho")["backend"] == GAIN


def test_batch_mode_through_the_launcher(tmp_path, small_train, small_test) -> None:
    """``ptycho-ptychodus -b train`` then ``-b reconstruct``, Ptychodus's own batch layout;
    the model of the reconstruct run is a bundle made by ``ptycho train``."""
    from ptycho_core.data import save_npz

    launcher = _console_script("ptycho-ptychodus")
    settings = {"Backend": GAIN, "NumEpochs": 2, "Updates": 2}
    train_in = write_input_folder(
        tmp_path / "train-in",
        to_ptychodus(small_train, initial_object="truth"),
        algorithm="ptycho_pinn",
        settings=settings,
    )
    save_npz(small_train, train_in / "train_data.npz")
    done = subprocess.run(
        [launcher, "-b", "train", "-i", str(train_in), "-o", str(tmp_path / "train-out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert read_manifest(tmp_path / "train-out" / "model.ptycho")["backend"] == GAIN

    cli = _console_script("ptycho")
    trained = subprocess.run(
        [
            cli,
            "-q",
            "train",
            str(train_in / "train_data.npz"),
            "--backend",
            GAIN,
            "--epochs",
            "2",
            "--output-dir",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    reconstruct_in = write_input_folder(
        tmp_path / "in", to_ptychodus(small_test), algorithm="ptycho_pinn", settings=settings
    )
    shutil.copyfile(tmp_path / "cli" / "model.ptycho", reconstruct_in / "model.ptycho")
    out = tmp_path / "out"
    done = subprocess.run(
        [launcher, "-b", "reconstruct", "-i", str(reconstruct_in), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.glob("product.*.h5")) == [
        "product.000050.h5",
        "product.000100.h5",
    ]
    product = load_product(out / "product.000100.h5")
    layer = product.object_.get_layer(0)
    assert layer.shape == small_test.object.shape
    covered = layer != 1
    np.testing.assert_allclose(
        layer[covered], _gain_of(tmp_path / "cli" / "model.ptycho"), rtol=1e-5
    )
    assert "reconstructed" in done.stdout


def test_batch_reconstruct_with_a_missing_framework_fails_cleanly(tmp_path, small_test) -> None:
    launcher = _console_script("ptycho-ptychodus")
    folder = write_input_folder(
        tmp_path / "in",
        to_ptychodus(small_test),
        algorithm="ptycho_pinn",
        settings={"Backend": "needs-missing"},
    )
    done = subprocess.run(
        [launcher, "-b", "reconstruct", "-i", str(folder), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert (
        "MissingFramework backend selected but ptycho_test_missing_framework module unavailable"
        in (done.stdout + done.stderr)
    )
    assert "Traceback" not in done.stderr
