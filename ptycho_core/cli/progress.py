"""Progress bars driven by the lifecycle hooks: backends report, the CLI draws."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from tqdm import tqdm

from ptycho_core.hooks import hookimpl


class ProgressBars:
    """A hook plugin that shows training epochs (with losses) and inference progress."""

    def __init__(self, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._enabled = enabled
        self._train: tqdm | None = None
        self._infer: tqdm | None = None

    def _bar(self, total: int, desc: str, unit: str) -> tqdm:
        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=self._stream,
            disable=not self._enabled,
            dynamic_ncols=True,
            leave=True,
        )

    @hookimpl
    def ptycho_train_start(self, backend: str, config: Any, n_groups: int) -> None:
        self._train = self._bar(config.nepochs, f"train {backend} ({n_groups} groups)", "epoch")

    @hookimpl
    def ptycho_epoch_end(self, epoch: int, nepochs: int, losses: Mapping[str, float]) -> None:
        if self._train is None:
            self._train = self._bar(nepochs, "train", "epoch")
        self._train.set_postfix({name: f"{value:.4g}" for name, value in losses.items()})
        self._train.update(1)

    @hookimpl
    def ptycho_train_end(self, history: Mapping[str, Sequence[float]]) -> None:
        if self._train is not None:
            self._train.close()
            self._train = None

    @hookimpl
    def ptycho_infer_progress(self, done: int, total: int) -> None:
        if self._infer is None:
            self._infer = self._bar(total, "infer", "group")
        self._infer.update(done - self._infer.n)
        if done >= total:
            self._infer.close()
            self._infer = None
