"""``ptycho convert`` / ptycho_core.convert without any framework: the error paths.

The conversions between real backends are tested in tests/cross_backend (both frameworks) and
tests/backend_tensorflow; here the backend is the test distribution's numpy backend, which implements the
four protocol methods but not the optional framework-neutral weights.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.convert import ConversionError, convert_bundle
from ptycho_core.errors import BundleError, UnknownBackendError
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data

PTYCHO = shutil.which("ptycho", path=os.path.dirname(sys.executable)) or "ptycho"
pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")


@pytest.fixture(scope="module")
def gain_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ptycho_testbackends.gain import NumpyGainBackend

    backend = NumpyGainBackend()
    config = TrainingConfig(
        model=ModelConfig(N=64), backend="numpy-gain", nepochs=1, n_groups=8, validation_split=0.0
    )
    data = prepare_training_data(default_dataset("train", n_positions=16, seed=3), config)
    path = tmp_path_factory.mktemp("convert") / "gain.ptycho"
    model = backend.train(data, config, hooks=make_plugin_manager(load_entry_points=False).hook)
    backend.save(model, path)
    return path


def test_a_backend_without_neutral_weights_cannot_be_converted(
    gain_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.ptycho"
    with pytest.raises(
        ConversionError,
        match=r"backend 'numpy-gain' cannot be the source of a conversion: it has no 'export_arrays' method",
    ):
        convert_bundle(gain_bundle, "numpy-gain", out)
    assert not out.exists()
    with pytest.raises(UnknownBackendError, match="unknown backend 'no-such-backend'"):
        convert_bundle(gain_bundle, "no-such-backend", out)
    with pytest.raises(BundleError, match="no such file"):
        convert_bundle(tmp_path / "missing.ptycho", "numpy-gain", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_reports_conversion_errors_on_one_line(gain_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.ptycho"
    done = subprocess.run(
        [PTYCHO, "convert", str(gain_bundle), "--to", "numpy-gain", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ptycho convert: error: backend 'numpy-gain' cannot be the source")
    assert "export_arrays" in line and not out.exists()
