"""Core helpers for iterative backends: their patterns, refusals, start and patch reading."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.errors import ConfigError
from ptycho_core.geometry import extract_patches, extract_patches_spline
from ptycho_core.iterative import (
    GRADIENT_TRAINING_FIELDS,
    NETWORK_MODEL_FIELDS,
    place_on_canvas,
    refuse_network_settings,
    unique_patterns,
)
from ptycho_core.simulate import default_dataset
from ptycho_core.stitching import Stitched
from ptycho_core.workflows import prepare_training_data

# ----------------------------------------------------------------------- spline patches


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.integers(8, 40), min_size=1, max_size=4),
    cols=st.lists(st.integers(8, 40), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_spline_patches_at_integer_positions_are_exact_copies(
    rows: list[int], cols: list[int], seed: int
) -> None:
    n = min(len(rows), len(cols))
    image = np.random.default_rng(seed).normal(size=(48, 48)) + 1j
    y, x = np.array(rows[:n], float), np.array(cols[:n], float)
    spline = extract_patches_spline(image, x, y, 8)
    assert spline.shape == (n, 8, 8) and spline.dtype == np.complex64
    for k in range(n):
        r0, c0 = int(y[k]) - 4, int(x[k]) - 4
        expected = np.zeros((8, 8), complex)
        rs, cs = slice(max(r0, 0), r0 + 8), slice(max(c0, 0), c0 + 8)
        expected[rs.start - r0 : rs.stop - r0, cs.start - c0 : cs.stop - c0] = image[rs, cs]
        np.testing.assert_allclose(spline[k], expected, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    dy=st.floats(-0.5, 0.5),
    dx=st.floats(-0.5, 0.5),
    freq=st.floats(0.02, 0.12),
    phase=st.floats(0, 6),
)
def test_spline_patches_of_a_smooth_image_beat_bilinear_ones(
    dy: float, dx: float, freq: float, phase: float
) -> None:
    """Sub-pixel reads of a band-limited image: the spline is at least as accurate as the
    bilinear reading (which blurs), both against the image's exact values."""
    grid = np.arange(96, dtype=float)

    def wave(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.exp(2j * np.pi * freq * (r + 0.7 * c) + 1j * phase)

    image = wave(grid[:, None], grid[None, :])
    y, x = np.array([48.0 + dy]), np.array([48.0 + dx])
    offsets = np.arange(16) - 8
    exact = wave((y[0] + offsets)[:, None], (x[0] + offsets)[None, :])
    spline_error = np.abs(extract_patches_spline(image, x, y, 16)[0] - exact).max()
    bilinear_error = np.abs(extract_patches(image, x, y, 16)[0] - exact).max()
    assert spline_error <= bilinear_error + 1e-6
    assert spline_error < 0.02


def test_spline_patches_are_zero_outside_the_image() -> None:
    image = np.ones((10, 10), complex)
    patch = extract_patches_spline(image, np.array([0.0]), np.array([0.0]), 8)[0]
    assert np.all(patch[:3, :] == 0) and np.all(patch[:, :3] == 0)
    assert np.allclose(patch[4:, 4:], 1)


# ----------------------------------------------------------------------- patterns


@pytest.mark.parametrize("gridsize", [1, 2])
def test_unique_patterns_are_each_pattern_once_at_its_own_position(gridsize: int) -> None:
    data = default_dataset("test", n_positions=40)
    config = TrainingConfig(
        model=ModelConfig(gridsize=gridsize), n_groups=None if gridsize == 1 else 30
    )
    groups = prepare_training_data(data, config).groups
    patterns = unique_patterns(groups)
    assert np.array_equal(patterns.index, np.unique(groups.nn_indices))
    np.testing.assert_allclose(patterns.x, data.xcoords[patterns.index], atol=1e-9)
    np.testing.assert_allclose(patterns.y, data.ycoords[patterns.index], atol=1e-9)
    assert patterns.amplitude.shape == (patterns.n, data.N, data.N)


# ----------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", GRADIENT_TRAINING_FIELDS)
def test_gradient_training_settings_are_refused(name: str) -> None:
    value = {
        "learning_rate": 5e-4,
        "lr_schedule": "plateau",
        "lr_warmup_steps": 0,
        "lr_plateau_factor": 0.25,
        "lr_plateau_patience": 5,
        "min_learning_rate": 5e-5,
    }[name]
    config = TrainingConfig(**{name: value})
    with pytest.raises(ConfigError, match=f"TrainingConfig.{name}=.*Solver does not use"):
        refuse_network_settings("b", config, "Solver")


@pytest.mark.parametrize("name", NETWORK_MODEL_FIELDS)
def test_network_architecture_settings_are_refused(name: str) -> None:
    default = ModelConfig().to_dict()[name]
    if isinstance(default, bool):
        changed = not default
    elif isinstance(default, str):
        changed = "relu"
    else:
        changed = default + 2
    config = TrainingConfig(model=ModelConfig(**{name: changed}))
    with pytest.raises(ConfigError, match=f"ModelConfig.{name}=.*Solver does not have"):
        refuse_network_settings("b", config, "Solver")
    refuse_network_settings("b", TrainingConfig(), "Solver")  # defaults pass


# ----------------------------------------------------------------------- the start


@settings(max_examples=100, deadline=None)
@given(
    row=st.integers(-30, 30),
    col=st.integers(-30, 30),
    height=st.integers(1, 20),
    width=st.integers(1, 20),
)
def test_place_on_canvas_copies_the_overlap_and_marks_it(
    row: int, col: int, height: int, width: int
) -> None:
    image = (np.arange(height * width).reshape(height, width) + 1).astype(complex)
    weight = np.ones((height, width))
    weight[0, 0] = 0  # one uncovered pixel
    canvas, covered = place_on_canvas(
        Stitched(image=image, weight=weight, origin=(row, col)), (-5, -5), (16, 16), "b"
    )
    for r in range(16):
        for c in range(16):
            i, j = r - 5 - row, c - 5 - col
            inside = 0 <= i < height and 0 <= j < width and (i, j) != (0, 0)
            assert covered[r, c] == inside
            assert canvas[r, c] == (image[i, j] if inside else 0)


def test_place_on_canvas_refuses_non_finite_covered_pixels() -> None:
    image = np.array([[np.nan, 1]], complex)
    with pytest.raises(ValueError, match="b: initial_object: the covered pixels hold NaN"):
        place_on_canvas(
            Stitched(image=image, weight=np.ones((1, 2)), origin=(0, 0)), (0, 0), (4, 4), "b"
        )
