"""``ptycho convert`` / ptycho_core.convert without any framework: the error paths.

The conversions between real backends are tested in tests/cross_backend (both frameworks) and
tests/backend_tensorflow; here the backend is the test distribution's numpy backend, which implements the
four protocol methods but not the optional framework-neutral weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.convert import (
    ConversionError,
    checked_import,
    checked_intensity_scale,
    convert_bundle,
)
from ptycho_core.errors import BundleError, UnknownBackendError
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data

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
    done = run_cli("convert", str(gain_bundle), "--to", "numpy-gain", "--output", str(out))
    assert done.returncode == 2, done
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ptycho convert: error: backend 'numpy-gain' cannot be the source")
    assert "export_arrays" in line and not out.exists()


SHAPES = {"encoder.kernel": (3, 3, 1, 2), "log_gain": ()}


def _arrays(**changes: object) -> dict[str, object]:
    arrays = {"encoder.kernel": np.ones((3, 3, 1, 2), np.float64), "log_gain": np.float32(0.5)}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def test_checked_import_gives_float32_copies_of_the_expected_arrays() -> None:
    arrays = _arrays()
    checked = checked_import(arrays, SHAPES)
    assert set(checked) == set(SHAPES)
    assert all(a.dtype == np.float32 for a in checked.values())
    checked["encoder.kernel"][0, 0, 0, 0] = 7.0
    assert arrays["encoder.kernel"][0, 0, 0, 0] == 1.0  # the caller's array is untouched


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ([1, 2], "expected a mapping of name to array, found list"),
        (_arrays(log_gain=None), r"array 'log_gain' is missing \(expected shape \(\)\)"),
        (_arrays(extra=np.zeros(2)), "array 'extra' does not belong to the architecture"),
        (
            _arrays(**{"encoder.kernel": np.ones((2, 1, 3, 3))}),
            r"array 'encoder.kernel': expected shape \(3, 3, 1, 2\), found \(2, 1, 3, 3\)",
        ),
        (
            _arrays(log_gain=np.array(1 + 1j)),
            "array .log_gain.: expected real numbers, found dtype complex128",
        ),
        (_arrays(log_gain=np.float32(np.inf)), "array 'log_gain' holds NaN or inf"),
    ],
)
def test_checked_import_names_the_array_that_does_not_fit(arrays, message: str) -> None:
    with pytest.raises(ValueError, match=f"import_arrays: {message}"):
        checked_import(arrays, SHAPES)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5) | st.booleans())
def test_intensity_scale_must_be_a_finite_positive_number(value) -> None:
    if isinstance(value, bool) or not (np.isfinite(value) and value > 0):
        with pytest.raises(ValueError, match="expected intensity_scale > 0"):
            checked_intensity_scale(value)
    else:
        assert checked_intensity_scale(value) == float(value)
