"""PNG figures, drawn with matplotlib's object API (no pyplot, no global figure state).

matplotlib is imported only when a figure is drawn, so importing this module (and the
library modules that use it, such as :mod:`ptycho_core.demo`) stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ptycho_core._atomic import atomic_path
from ptycho_core.results import TruthComparison

__all__ = ["save_image", "save_truth_comparison"]


def _figure(width: float, height: float):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike[str]) -> None:  # type: ignore[no-untyped-def]
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def save_image(image: np.ndarray, path: str | os.PathLike[str], *, title: str, cmap: str) -> None:
    """One image with a colour bar."""
    figure = _figure(5, 4.5)
    axes = figure.add_subplot()
    shown = axes.imshow(image, cmap=cmap)
    axes.set_title(title)
    axes.set_axis_off()
    figure.colorbar(shown, ax=axes, shrink=0.8)
    _save(figure, path)


def save_truth_comparison(
    comparison: TruthComparison,
    path: str | os.PathLike[str],
    *,
    history: Mapping[str, Sequence[float]] | None = None,
    caption: str = "",
) -> None:
    """Truth beside reconstruction (amplitude row, phase row) and the training losses.

    Each row has one colour scale and one colour bar, so equal values look equal;
    uncovered (NaN) pixels show the figure background. Phase uses a sequential map
    (viridis): its range is the object's, not a whole cycle, so a cyclic map would
    draw its two ends alike. Each loss is drawn as its decrease since the first epoch:
    the Poisson loss carries a large data-dependent constant, beside which the late
    improvements of a run would look like a flat line.
    """
    rows = (
        ("amplitude", comparison.true_amplitude, comparison.reconstructed_amplitude, "gray"),
        ("phase", comparison.true_phase, comparison.reconstructed_phase, "viridis"),
    )
    ranges = {"amplitude": comparison.amplitude_range, "phase": comparison.phase_range}
    columns = 3 if history else 2
    figure = _figure(3.4 * 2 + (4.0 if history else 0.0) + 0.8, 6.6)
    grid = figure.add_gridspec(2, columns, width_ratios=[1, 1, 1.25][:columns])
    for row, (quantity, truth, reconstruction, cmap) in enumerate(rows):
        low, high = ranges[quantity]
        pair = []
        for column, (label, image) in enumerate(
            (("true", truth), ("reconstructed", reconstruction))
        ):
            axes = figure.add_subplot(grid[row, column])
            shown = axes.imshow(image, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
            axes.set_title(f"{label} {quantity}")
            axes.set_axis_off()
            pair.append(axes)
        bar = figure.colorbar(shown, ax=pair, shrink=0.8)
        if quantity == "phase":
            bar.set_label("rad")
    if history:
        from matplotlib.ticker import MaxNLocator

        axes = figure.add_subplot(grid[:, 2])
        for name, values in history.items():
            losses = np.asarray(values, dtype=np.float64)
            if losses.size:
                axes.plot(np.arange(1, losses.size + 1), losses[0] - losses, label=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_title("loss decrease since epoch 1")
        axes.legend()
    if caption:
        figure.suptitle(caption, fontsize=9)
    _save(figure, path)
