"""The library inside a real Ptychodus ModelCore: keys, settings, backend checks, the seam."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from helpers_ptychodus import ptycho_reconstructor, set_settings

from ptycho_core.config import DEFAULT_BACKEND, InferenceConfig, ModelConfig, TrainingConfig
from ptycho_ptychodus import LIBRARY_NAME, SETTINGS_GROUP, launcher
from ptycho_ptychodus.library import PtychoReconstructorLibrary
from ptycho_ptychodus.settings import (
    ADAPTER_SETTINGS,
    INFERENCE_SETTINGS,
    MODEL_SETTINGS,
    NOT_SETTINGS,
    TRAINING_SETTINGS,
)

KEYS = {"ptycho_pinn", "ptycho_supervised"}


def data_facts(**changes: object) -> dict[str, object]:
    """What the reconstructor passes ``training_config`` about the data (changed by ``changes``)."""
    facts = dict(
        N=64,
        model_type="pinn",
        n_positions=100,
        data_photons=1.0,
        train_data_file="t",
        output_dir="o",
    )
    return {**facts, **changes}


def _keys(core) -> set[str]:
    return set(core.processing_core.processing_api.available_reconstructors())


def test_reconstructor_keys_appear_in_a_real_model_core(model_core) -> None:
    core = model_core()
    assert _keys(core) >= KEYS
    parts = set(core.processing_core.processing_api.available_reconstructors_parts())
    assert {("ptycho", "pinn"), ("ptycho", "supervised")} <= parts
    assert "_" not in LIBRARY_NAME
    reconstructor = ptycho_reconstructor(core)
    assert core.processing_core.processing_api.is_reconstructor_trainable()
    assert reconstructor.get_model_file_extension() == ".ptycho"
    assert reconstructor.get_model_file_filter() == "ptycho model bundle (*.ptycho)"
    assert reconstructor.get_training_data_file_filter() == "NumPy Zipped Archive (*.npz)"
    assert reconstructor.get_progress_goal() == 100
    assert not reconstructor.is_model_loaded()


def test_the_launcher_seam_is_what_adds_the_library(installed) -> None:
    from ptychodus.model import ModelCore

    assert launcher.uninstall()
    try:
        assert not launcher.uninstall()
        with ModelCore(log_level=logging.WARNING) as core:
            assert not (KEYS & _keys(core))
        assert launcher.install()
        assert not launcher.install()  # idempotent
        with ModelCore(log_level=logging.WARNING) as core:
            assert _keys(core) >= KEYS
            assert sum(1 for k in _keys(core) if k.startswith("ptycho_")) == 2
    finally:
        launcher.install()


def test_the_entry_point_group_declares_the_library() -> None:
    found = {ep.name: ep for ep in entry_points(group=launcher.ENTRY_POINT_GROUP)}
    assert "ptycho" in found, "reinstall ptycho: its metadata lacks the entry point"
    assert found["ptycho"].load() is PtychoReconstructorLibrary
    factories = [f for _, f in launcher.library_factories()]
    assert factories.count(PtychoReconstructorLibrary) == 1


def test_a_failing_library_is_logged_and_ptychodus_still_starts(
    model_core, monkeypatch, captured
) -> None:
    def broken(settings_registry, developer_mode):
        raise RuntimeError("this library cannot start")

    factories = [("entry point broken = x:y", broken), ("ptycho", PtychoReconstructorLibrary)]
    monkeypatch.setattr(launcher, "library_factories", lambda: factories)
    core = model_core()
    assert _keys(core) >= KEYS
    assert (
        "entry point broken = x:y could not be created: RuntimeError: this library cannot start"
        in (captured.text(logging.ERROR))
    )


# ----------------------------------------------------------------------------- settings


def test_every_config_field_is_a_setting_or_deliberately_not() -> None:
    for cls, mapped in (
        (ModelConfig, set(MODEL_SETTINGS.values())),
        (TrainingConfig, set(TRAINING_SETTINGS.values())),
        (InferenceConfig, set(INFERENCE_SETTINGS.values())),
    ):
        fields = {f.name for f in dataclasses.fields(cls)}
        excluded = set(NOT_SETTINGS[cls.__name__])
        assert mapped | excluded == fields, cls.__name__
        assert not (mapped & excluded), cls.__name__


def test_setting_defaults_are_ptychos_defaults(model_core) -> None:
    core = model_core()
    group = core.settings_registry[SETTINGS_GROUP]
    values = {name: p.get_value() for name, p in group.parameters().items()}
    model, training, inference = ModelConfig(), TrainingConfig(), InferenceConfig()
    for name, field in MODEL_SETTINGS.items():
        assert values[name] == getattr(model, field), name
    for name, field in TRAINING_SETTINGS.items():
        assert values[name] == getattr(training, field), name
    for name, field in INFERENCE_SETTINGS.items():
        assert values[name] == getattr(inference, field), name
    assert values["Backend"] == DEFAULT_BACKEND
    assert set(values) == (
        set(MODEL_SETTINGS)
        | set(TRAINING_SETTINGS)
        | set(INFERENCE_SETTINGS)
        | set(ADAPTER_SETTINGS)
    )
    settings = ptycho_reconstructor(core).settings
    built = settings.training_config(
        **data_facts(
            n_positions=10_000, data_photons=1e9, train_data_file="t.npz", output_dir="out"
        )
    )
    expected = TrainingConfig(train_data_file="t.npz", output_dir="out")
    assert built == expected


def test_a_settings_file_sets_the_configs(model_core, tmp_path) -> None:
    settings_file = tmp_path / "settings.ini"
    settings_file.write_text(
        "[Ptycho]\nBackend = pytorch\nNumEpochs = 3\nGridSize = 2\nBatchSize = 8\n"
        "AmpActivation = swish\nPhotonsFromData = False\nNumPhotons = 1e6\nNumGroups = 0\n"
        "StitchSize = 16\nSeed = 7\n"
    )
    core = model_core(settings_file)
    settings = ptycho_reconstructor(core, "ptycho_supervised").settings
    config = settings.training_config(
        **data_facts(N=128, model_type="supervised", n_positions=500, data_photons=123.0)
    )
    assert (config.backend, config.nepochs, config.batch_size, config.nphotons) == (
        "pytorch",
        3,
        8,
        1e6,
    )
    assert (config.model.N, config.model.gridsize, config.model.amp_activation) == (128, 2, "swish")
    assert config.model.model_type == "supervised"
    assert config.n_groups is None and config.seed == 7
    inference = settings.inference_config(model_path="m.ptycho")
    assert (inference.backend, inference.stitch_size, inference.seed) == ("pytorch", 16, 7)
    saved = tmp_path / "saved.ini"
    core.workflow_api.save_settings(saved)
    text = saved.read_text()
    assert "[Ptycho]" in text and "NumEpochs = 3" in text and "Backend = pytorch" in text


def test_photons_come_from_the_data_unless_told_otherwise(model_core) -> None:
    core = model_core()
    settings = ptycho_reconstructor(core).settings
    arguments = data_facts(data_photons=4.5e6)
    assert settings.training_config(**arguments).nphotons == 4.5e6
    assert settings.training_config(**arguments).n_groups is None  # 512 > 100 positions
    set_settings(core, PhotonsFromData=False)
    assert settings.training_config(**arguments).nphotons == TrainingConfig().nphotons


def test_an_invalid_setting_is_reported_by_its_setting_name(model_core) -> None:
    core = model_core()
    set_settings(core, BatchSize=12)
    settings = ptycho_reconstructor(core).settings
    with pytest.raises(
        ValueError, match=r"\[Ptycho\] BatchSize: expected a power of two in \[1, 65536\], found 12"
    ):
        settings.training_config(**data_facts())
    set_settings(core, BatchSize=16, AmpActivation="tanh")
    with pytest.raises(ValueError, match=r"\[Ptycho\] AmpActivation: expected one of"):
        settings.model_config(N=64, model_type="pinn")


def test_an_unusable_backend_setting_logs_the_selectors_message(
    model_core, captured, ptycho_test_distributions
) -> None:
    core = model_core()
    set_settings(core, Backend="needs-missing")
    warnings = captured.text(logging.WARNING)
    assert (
        "[Ptycho] Backend = needs-missing: MissingFramework backend selected but "
        "ptycho_test_missing_framework module unavailable"
    ) in warnings
    assert "Install it with: pip install 'ptycho-test-missing-framework>=1'" in warnings
    assert "usable backends:" in warnings and "numpy-gain" in warnings
    set_settings(core, Backend="no-such-backend")
    assert "[Ptycho] Backend = no-such-backend: unknown backend 'no-such-backend'" in captured.text(
        logging.WARNING
    )


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None,
    reason="TensorFlow is installed here; the 'ptychodus' tox env has torch only",
)
def test_selecting_tensorflow_without_it_logs_the_documented_message(model_core, captured) -> None:
    core = model_core()
    set_settings(core, Backend="pytorch")
    set_settings(core, Backend="tensorflow")
    text = captured.text(logging.WARNING)
    assert "TensorFlow backend selected but tensorflow module unavailable" in text
    assert "Install it with: pip install 'ptycho[tf]'" in text
    assert _keys(core) >= KEYS  # Ptychodus carries on


# ----------------------------------------------------------------------------- import cost


def test_importing_ptycho_core_or_the_adapter_imports_no_ptychodus_or_framework() -> None:
    code = (
        "import sys, ptycho_core\n"
        "core = [m for m in ('ptycho_ptychodus', 'ptychodus') if m in sys.modules]\n"
        "import ptycho_ptychodus, ptycho_ptychodus.launcher, ptycho_ptychodus.worker, "
        "ptycho_ptychodus.mapping\n"
        "heavy = [m for m in ('ptychodus', 'torch', 'tensorflow', 'lightning', 'keras') if m in sys.modules]\n"
        "print(','.join(core) + ';' + ','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ";"
