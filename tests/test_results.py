"""Reconstructions against ground truth: ``ptycho_core.results`` and the demo figure."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho_core.errors import DataContractError
from ptycho_core.figures import save_truth_comparison
from ptycho_core.geometry import extract_patches
from ptycho_core.results import compare_with_truth, evaluate_stitched
from ptycho_core.simulate import SimulationConfig, simulate
from ptycho_core.stitching import stitch_patches

SMALL = SimulationConfig(N=32, n_positions=40, step=4.0, seed=3)
SCALE = 2.5  # the reconstruction's amplitude scale, undetermined in ptychography
OFFSET = 1.1  # and its global phase


@pytest.fixture(scope="module")
def data():
    return simulate(SMALL)


def _stitched_truth(data, *, in_object_frame: bool = True):
    """The true patches, scaled and phase-shifted, stitched as a reconstruction is.

    Positions are rounded to whole pixels, where extracting and stitching back is exact
    (at sub-pixel positions the bilinear round trip smooths the object).
    """
    x, y = np.round(data.xcoords), np.round(data.ycoords)
    patches = extract_patches(data.object, x, y, SMALL.N)
    shape = data.object.shape if in_object_frame else None
    return stitch_patches(SCALE * np.exp(1j * OFFSET) * patches, x, y, M=20, shape=shape)


def test_truth_and_reconstruction_share_field_of_view_and_mask(data):
    stitched = _stitched_truth(data)
    # The scale the demo passes: evaluate's least-squares fit.
    assert evaluate_stitched(stitched, data)["amplitude_scale"] == pytest.approx(
        1 / SCALE, rel=1e-3
    )
    c = compare_with_truth(stitched, data, amplitude_scale=1 / SCALE)

    images = (c.true_amplitude, c.reconstructed_amplitude, c.true_phase, c.reconstructed_phase)
    blank = np.isnan(c.true_amplitude)
    for image in images:
        assert image.shape == c.true_amplitude.shape
        np.testing.assert_array_equal(np.isnan(image), blank)
    # The field of view is the bounding box of the covered pixels, smaller than the object,
    # and the blank pixels are exactly the uncovered ones inside it.
    covered = stitched.covered[c.rows, c.cols]
    np.testing.assert_array_equal(blank, ~covered)
    assert covered[0].any() and covered[-1].any() and covered[:, 0].any() and covered[:, -1].any()
    assert not stitched.covered[: c.rows.start].any() and not stitched.covered[c.rows.stop :].any()
    assert not stitched.covered[:, : c.cols.start].any()
    assert not stitched.covered[:, c.cols.stop :].any()
    assert c.true_amplitude.size < data.object.size

    # Scale and global phase removed: the reconstruction of the true patches is the truth.
    assert c.phase_offset == pytest.approx(OFFSET, abs=1e-5)
    np.testing.assert_allclose(c.reconstructed_amplitude, c.true_amplitude, atol=1e-4)
    np.testing.assert_allclose(c.reconstructed_phase, c.true_phase, atol=1e-4)
    truth = data.object[c.rows, c.cols][covered]
    np.testing.assert_allclose(c.true_amplitude[covered], np.abs(truth), rtol=1e-6)
    assert c.amplitude_range == (np.nanmin(c.true_amplitude), np.nanmax(c.true_amplitude))
    assert c.phase_range == (np.nanmin(c.true_phase), np.nanmax(c.true_phase))


def test_a_canvas_with_an_origin_is_placed_in_the_object_frame(data):
    framed = compare_with_truth(_stitched_truth(data), data, amplitude_scale=1 / SCALE)
    stitched = _stitched_truth(data, in_object_frame=False)
    assert stitched.origin != (0, 0)
    placed = compare_with_truth(stitched, data, amplitude_scale=1 / SCALE)
    assert (placed.rows, placed.cols) == (framed.rows, framed.cols)
    for name in ("true_amplitude", "reconstructed_amplitude", "true_phase", "reconstructed_phase"):
        np.testing.assert_allclose(getattr(placed, name), getattr(framed, name), atol=1e-12)


def test_compare_with_truth_rejects_bad_input(data):
    stitched = _stitched_truth(data)
    with pytest.raises(ValueError, match="amplitude_scale"):
        compare_with_truth(stitched, data, amplitude_scale=0.0)
    with pytest.raises(DataContractError, match="objectGuess"):
        compare_with_truth(stitched, dataclasses.replace(data, object=None))


def test_the_comparison_figure_is_a_png(data, tmp_path: Path):
    c = compare_with_truth(_stitched_truth(data), data, amplitude_scale=1 / SCALE)
    path = tmp_path / "demo.png"
    save_truth_comparison(
        c, path, history={"loss": [3.0, 2.0, 1.5], "val_loss": []}, caption="caption"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_demo_does_not_import_the_command_line():
    code = (
        "import sys, ptycho_core.demo; "
        "print(sorted(m for m in sys.modules if m.startswith('ptycho_core.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
