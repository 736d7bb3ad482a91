"""Exports of networks trained with a framework, run where no framework is installed.

The folder comes from ``handover.py`` (see conftest.py): in tox's `onnx` env it was made by
the `both` env's Python, so these tests prove that what ``ptycho export`` writes from either
framework backend infers and evaluates with ONNX Runtime alone, and gives the same patches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from handover import BATCH, SOURCES

from ptycho_core.workflows import get_backend

TOLERANCE = 1e-4
"""Largest relative difference (max |Δ| / max |reference|) of an export from its source."""


def relative_error(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(found - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def reference(handover: Path) -> dict[str, np.ndarray]:
    with np.load(handover / "reference.npz") as stored:
        return {name: stored[name] for name in stored.files}


@pytest.mark.parametrize("source", SOURCES)
def test_an_export_gives_the_source_backends_patches(handover, reference, source) -> None:
    backend = get_backend("onnx")
    model = backend.load(handover / f"{source}-onnx.ptycho")
    found = backend.forward(model, reference["diffraction"], reference["coords_relative"])
    assert found.shape == (BATCH, 64, 64, 1)
    assert relative_error(found, reference[f"{source}.forward"]) <= TOLERANCE


def test_the_exports_of_converted_weights_agree(handover, reference) -> None:
    backend = get_backend("onnx")
    outputs = [
        backend.forward(
            backend.load(handover / f"{source}-onnx.ptycho"),
            reference["diffraction"],
            reference["coords_relative"],
        )
        for source in SOURCES
    ]
    assert relative_error(outputs[0], outputs[1]) <= 1e-5


@pytest.mark.parametrize("source", SOURCES)
def test_export_infer_evaluate_from_the_command_line(handover, reference, source, tmp_path) -> None:
    """``ptycho infer`` + ``ptycho evaluate`` on an export score as the source backend did."""
    out = tmp_path / source
    command = [sys.executable, "-m", "ptycho_core.cli", "-q"]
    bundle, data = handover / f"{source}-onnx.ptycho", handover / "test.npz"
    done = subprocess.run(
        [*command, "infer", str(bundle), str(data), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    scored = subprocess.run(
        [*command, "evaluate", str(out / "reconstruction.npz"), str(data), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    metrics = json.loads(scored.stdout)
    expected = json.loads((handover / "reference.json").read_text())[source]
    for key in ("amplitude_ssim", "phase_ssim", "amplitude_psnr", "frc_half_bit"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-3, abs=1e-3), key
    with np.load(out / "reconstruction.npz") as stored:
        assert relative_error(stored["object"], reference[f"{source}.object"]) <= TOLERANCE


def test_the_int8_export_stays_close_to_its_source(handover, reference) -> None:
    backend = get_backend("onnx")
    model = backend.load(handover / "pytorch-onnx-int8.ptycho")
    assert model.network.quantization == "int8" and model.extra["quantization"] == "int8"
    found = backend.forward(model, reference["diffraction"], reference["coords_relative"])
    box = np.s_[:, 16:48, 16:48]  # the object's central N/2 box, what stitching uses
    error = relative_error(found[box], reference["pytorch.forward"][box])
    assert TOLERANCE < error < 0.05  # quantised (not float), and still the same network
