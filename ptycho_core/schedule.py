"""The learning-rate schedule of gradient training, defined once for every backend.

Both framework backends ask one :class:`LearningRateSchedule` for the rate of each
optimiser step, so their schedules are identical by construction. Pure Python: no
framework is imported.

Two schedules (``TrainingConfig.lr_schedule``), both after a linear warmup of
``W = min(lr_warmup_steps, total_steps)`` steps whose rate at step ``s`` is
``base · (s + 1) / W``. Full-rate Adam steps on a freshly initialised network can knock it
into a flat-object state it leaves only slowly; the warmup avoids that.

- ``'cosine'``: from step ``W`` on, a half cosine from ``learning_rate`` down to
  ``min_learning_rate`` at the last step of the run (``nepochs`` epochs). The schedule
  sets the run's length: there is no early stopping (:func:`stops_early`), which on a
  loss that improves by less than its batch-to-batch noise would cut off the low-rate
  end where the cosine does its finest work.
- ``'plateau'``: Keras' ReduceLROnPlateau, upstream PtychoPINN's schedule. After
  ``lr_plateau_patience`` epochs (at least one) in which the monitored loss did not fall
  more than 1e-4 below the best so far, the rate is multiplied by ``lr_plateau_factor``,
  never below ``min_learning_rate``, and the count restarts. The monitored loss is
  ``val_loss`` with a validation split, else ``loss`` (:func:`monitored_loss`). The warmup
  ramps up to the current plateau rate; with ``lr_warmup_steps=0`` this is Keras' rule alone.
  Training also stops early, after ``early_stop_patience`` epochs without a lower
  training loss.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from ptycho_core.config import LR_SCHEDULES, TrainingConfig

__all__ = ["PLATEAU_MIN_DELTA", "LearningRateSchedule", "monitored_loss", "stops_early"]

PLATEAU_MIN_DELTA = 1e-4
"""An epoch improves when the monitored loss falls more than this below the best (Keras)."""


def stops_early(config: TrainingConfig) -> bool:
    """Whether training stops after ``early_stop_patience`` epochs without improvement:
    only under the 'plateau' schedule ('cosine' runs its ``nepochs`` to the end)."""
    return config.lr_schedule == "plateau"


def monitored_loss(has_validation: bool) -> str:
    """The loss the 'plateau' schedule watches: ``val_loss`` with a validation split, else ``loss``."""
    return "val_loss" if has_validation else "loss"


def _count(name: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low``, or a ValueError naming ``name``."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < low:
        raise ValueError(
            f"LearningRateSchedule: {name} expected an integer >= {low}, found {value!r}"
        )
    return number


class LearningRateSchedule:
    """The rate of every optimiser step of one training run, and the plateau bookkeeping.

    ``total_steps`` is the number of optimiser steps of the whole run (``nepochs`` epochs).
    Make one per run: it keeps the plateau state of that run. Callers set the optimiser's
    rate to :meth:`rate` before each step and call :meth:`end_epoch` after each epoch.
    """

    def __init__(self, config: TrainingConfig, total_steps: int) -> None:
        if not isinstance(config, TrainingConfig):
            raise TypeError(
                f"LearningRateSchedule: expected a TrainingConfig, found {type(config).__name__}"
            )
        if config.lr_schedule not in LR_SCHEDULES:  # pragma: no cover - the config validates it
            raise ValueError(f"LearningRateSchedule: unknown schedule {config.lr_schedule!r}")
        self.kind = config.lr_schedule
        self.base_rate = float(config.learning_rate)
        self.min_rate = float(config.min_learning_rate)
        self.factor = float(config.lr_plateau_factor)
        self.patience = int(config.lr_plateau_patience)
        self.total_steps = _count("total_steps", total_steps, 1)
        self.warmup_steps = min(int(config.lr_warmup_steps), self.total_steps)
        self.level = self.base_rate
        """The rate after warmup: ``learning_rate``, cut by the 'plateau' schedule."""
        self.best = math.inf
        """Lowest monitored loss so far ('plateau')."""
        self.wait = 0
        """Epochs since the last improvement or cut ('plateau')."""

    def rate(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based, counted over the whole run).

        Steps past ``total_steps`` keep the rate of the last step.
        """
        s = min(_count("step", step, 0), self.total_steps - 1)
        if s < self.warmup_steps:
            return self.level * ((s + 1) / self.warmup_steps)
        if self.kind == "plateau":
            return self.level
        span = self.total_steps - 1 - self.warmup_steps
        t = 0.0 if span <= 0 else min(max((s - self.warmup_steps) / span, 0.0), 1.0)
        if t == 0.0:  # exactly the base rate (the formula may round it off by one unit)
            return self.base_rate
        weight = 0.5 * (1.0 + math.cos(math.pi * t))  # 0 exactly at t = 1: the floor
        rate = self.min_rate + (self.base_rate - self.min_rate) * weight
        return min(max(rate, self.min_rate), self.base_rate)

    def end_epoch(self, monitored: float | None) -> None:
        """Record the epoch's monitored loss ('plateau'; the 'cosine' schedule ignores it).

        A missing or non-finite loss is ignored, as Keras does.
        """
        if self.kind != "plateau" or monitored is None:
            return
        current = float(monitored)
        if not math.isfinite(current):
            return
        if current < self.best - PLATEAU_MIN_DELTA:
            self.best = current
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            if self.level > self.min_rate:
                self.level = max(self.level * self.factor, self.min_rate)
            self.wait = 0

    def __repr__(self) -> str:
        return (
            f"LearningRateSchedule({self.kind!r}, base_rate={self.base_rate}, "
            f"min_rate={self.min_rate}, total_steps={self.total_steps}, "
            f"warmup_steps={self.warmup_steps}, level={self.level})"
        )
