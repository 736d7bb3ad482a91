"""PNG figures, drawn with matplotlib's object API (no pyplot, no global figure state)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ptycho_core._atomic import atomic_path


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


def save_comparison(
    panels: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    history: Mapping[str, Sequence[float]] | None = None,
    caption: str = "",
) -> None:
    """A grid of named images (amplitude panels grey, phase panels twilight) and losses."""
    names = list(panels)
    columns = len(names) + (1 if history else 0)
    figure = _figure(3.6 * columns, 3.8)
    for index, name in enumerate(names):
        axes = figure.add_subplot(1, columns, index + 1)
        cmap = "twilight" if "phase" in name else "gray"
        shown = axes.imshow(panels[name], cmap=cmap)
        axes.set_title(name)
        axes.set_axis_off()
        figure.colorbar(shown, ax=axes, shrink=0.7)
    if history:
        axes = figure.add_subplot(1, columns, columns)
        for name, values in history.items():
            axes.plot(np.arange(1, len(values) + 1), values, label=name)
        axes.set_xlabel("epoch")
        axes.set_title("losses")
        axes.legend()
    if caption:
        figure.suptitle(caption, fontsize=9)
    _save(figure, path)
