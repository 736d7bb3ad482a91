"""The shared learning-rate schedule: warmup, cosine decay and Keras' plateau rule."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_core.config import LR_SCHEDULES, TrainingConfig
from ptycho_core.schedule import (
    PLATEAU_MIN_DELTA,
    LearningRateSchedule,
    monitored_loss,
    stops_early,
)


def _config(**changes) -> TrainingConfig:
    return TrainingConfig(**changes)


@st.composite
def schedules(draw: st.DrawFn, kind: str | None = None) -> LearningRateSchedule:
    lr = draw(st.floats(1e-5, 1e-1))
    config = _config(
        lr_schedule=draw(st.sampled_from(LR_SCHEDULES)) if kind is None else kind,
        learning_rate=lr,
        min_learning_rate=lr * draw(st.floats(1e-3, 1.0)),
        lr_warmup_steps=draw(st.integers(0, 60)),
        lr_plateau_factor=draw(st.floats(0.05, 0.95)),
        lr_plateau_patience=draw(st.integers(0, 4)),
    )
    return LearningRateSchedule(config, draw(st.integers(1, 120)))


@given(schedules(), st.integers(0, 60), st.integers(1, 120))
@settings(max_examples=80, deadline=None)
def test_warmup_rises_linearly_to_the_base_rate(
    schedule: LearningRateSchedule, warmup: int, total: int
) -> None:
    config = TrainingConfig(lr_warmup_steps=warmup)
    assert LearningRateSchedule(config, total).warmup_steps == min(warmup, total)
    W = schedule.warmup_steps
    rates = [schedule.rate(s) for s in range(W)]
    assert all(a < b for a, b in itertools.pairwise(rates))
    for s, rate in enumerate(rates):
        assert rate == pytest.approx(schedule.base_rate * (s + 1) / W, rel=1e-12)
    if W:
        assert rates[-1] == schedule.base_rate


@given(schedules(kind="cosine"))
@settings(max_examples=80, deadline=None)
def test_cosine_decays_from_the_base_rate_to_the_floor(schedule: LearningRateSchedule) -> None:
    W, total = schedule.warmup_steps, schedule.total_steps
    rates = [schedule.rate(s) for s in range(W, total + 3)]  # and a few steps past the end
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert all(schedule.min_rate <= r <= schedule.base_rate for r in rates)
    if total > W:
        assert rates[0] == schedule.base_rate
    if total - 1 - W >= 1:
        assert schedule.rate(total - 1) == schedule.min_rate
    assert schedule.rate(total + 7) == schedule.rate(total - 1)
    # the loss does not steer it
    before = [schedule.rate(s) for s in range(total)]
    for value in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        schedule.end_epoch(value)
    assert [schedule.rate(s) for s in range(total)] == before


def test_cosine_follows_the_half_cosine() -> None:
    schedule = LearningRateSchedule(
        _config(learning_rate=1e-3, min_learning_rate=1e-4, lr_warmup_steps=10), 31
    )
    assert schedule.rate(9) == 1e-3  # end of warmup
    assert schedule.rate(10) == 1e-3  # start of the decay
    assert schedule.rate(20) == pytest.approx(5.5e-4, rel=1e-12)  # halfway: the mean
    assert schedule.rate(15) == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule.rate(30) == 1e-4
    # a run shorter than the warmup is all warmup
    short = LearningRateSchedule(_config(learning_rate=1e-3, lr_warmup_steps=200), 4)
    assert [short.rate(s) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


@given(
    schedules(),
    st.lists(st.none() | st.floats(0.0, 2.0) | st.sampled_from([math.nan, math.inf]), max_size=30),
)
@settings(max_examples=80, deadline=None)
def test_the_rate_never_falls_below_the_floor_after_warmup(
    schedule: LearningRateSchedule, losses: list[float | None]
) -> None:
    steps = range(schedule.warmup_steps, schedule.total_steps + 2)
    for loss in losses:
        schedule.end_epoch(loss)
        assert all(schedule.rate(s) >= schedule.min_rate for s in steps)


def _plateau(**changes) -> LearningRateSchedule:
    values = {
        "lr_schedule": "plateau",
        "lr_warmup_steps": 0,
        "learning_rate": 1e-3,
        "lr_plateau_factor": 0.5,
        "lr_plateau_patience": 2,
        "min_learning_rate": 3e-4,
    }
    return LearningRateSchedule(_config(**{**values, **changes}), 100)


def _rates_after_each_epoch(schedule: LearningRateSchedule, losses: list[float | None]) -> list:
    rates = []
    for loss in losses:
        schedule.end_epoch(loss)
        rates.append(schedule.rate(99))
    return rates


def test_plateau_cuts_follow_the_keras_rule() -> None:
    rates = _rates_after_each_epoch(_plateau(), [1.0, 0.9, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    # improvement at epochs 0, 1; two bad epochs (2, 3) → halve; two more → floor at min_lr
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 3e-4, 3e-4, 3e-4, 3e-4])
    # a fall of less than min_delta is no improvement; missing or non-finite losses are ignored
    small = 0.5 * PLATEAU_MIN_DELTA
    rates = _rates_after_each_epoch(_plateau(), [1.0, 1.0 - small, None, math.nan, 1.0 - 2 * small])
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 5e-4])
    # patience 0 acts as 1 (Keras): every bad epoch cuts
    rates = _rates_after_each_epoch(
        _plateau(lr_plateau_patience=0, min_learning_rate=1e-5), [1.0, 2.0, 2.0, 0.5, 0.6]
    )
    assert rates == pytest.approx([1e-3, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4])
    # the count restarts after a cut
    rates = _rates_after_each_epoch(
        _plateau(lr_plateau_patience=3, min_learning_rate=1e-6), [1.0] + [1.0] * 7
    )
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4])


@given(
    st.lists(st.floats(2 * PLATEAU_MIN_DELTA, 1.0), min_size=1, max_size=40),
    st.integers(0, 5),
)
@settings(max_examples=60, deadline=None)
def test_plateau_without_warmup_keeps_the_rate_while_the_loss_improves(
    falls: list[float], patience: int
) -> None:
    schedule = _plateau(lr_plateau_patience=patience)
    loss = 100.0
    for fall in falls:
        loss -= fall
        schedule.end_epoch(loss)
        assert schedule.rate(0) == schedule.rate(57) == 1e-3
    schedule.end_epoch(loss)  # the first stall counts (and cuts when patience <= 1)
    assert schedule.wait == (0 if patience <= 1 else 1)


def test_plateau_warmup_ramps_to_the_current_rate() -> None:
    schedule = _plateau(lr_warmup_steps=4, lr_plateau_patience=1)
    assert [schedule.rate(s) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    schedule.end_epoch(1.0)
    schedule.end_epoch(1.0)  # a cut inside the warmup lowers its target
    assert [schedule.rate(s) for s in range(5)] == pytest.approx(
        [1.25e-4, 2.5e-4, 3.75e-4, 5e-4, 5e-4]
    )


def test_only_the_plateau_schedule_stops_early() -> None:
    assert stops_early(TrainingConfig(lr_schedule="plateau"))
    assert not stops_early(TrainingConfig(lr_schedule="cosine"))  # the cosine sets the length
    assert not stops_early(TrainingConfig())


def test_monitored_loss_is_the_validation_loss_when_there_is_one() -> None:
    assert monitored_loss(True) == "val_loss" and monitored_loss(False) == "loss"


@pytest.mark.parametrize("total", [0, -3, 2.5, True, "10", None])
def test_bad_total_steps_are_value_errors(total: object) -> None:
    with pytest.raises(ValueError, match=r"total_steps expected an integer >= 1, found"):
        LearningRateSchedule(TrainingConfig(), total)  # type: ignore[arg-type]


def test_bad_steps_and_configs_are_refused() -> None:
    schedule = LearningRateSchedule(TrainingConfig(), 10)
    with pytest.raises(ValueError, match=r"step expected an integer >= 0, found -1"):
        schedule.rate(-1)
    with pytest.raises(ValueError, match=r"step expected an integer >= 0, found 1.0"):
        schedule.rate(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a TrainingConfig, found dict"):
        LearningRateSchedule(TrainingConfig().to_dict(), 10)  # type: ignore[arg-type]


def test_config_fields_are_validated_and_round_trip() -> None:
    config = TrainingConfig()
    assert (config.lr_schedule, config.lr_warmup_steps) == ("cosine", 200)
    with pytest.raises(ValueError, match=r"TrainingConfig\.lr_schedule: expected one of 'cosine'"):
        TrainingConfig(lr_schedule="step")
    with pytest.raises(ValueError, match=r"TrainingConfig\.lr_warmup_steps: expected an integer"):
        TrainingConfig(lr_warmup_steps=-1)
    with pytest.raises(ValueError, match=r"TrainingConfig\.lr_warmup_steps: expected an integer"):
        TrainingConfig(lr_warmup_steps=2.0)
    plateau = TrainingConfig(lr_schedule="plateau", lr_warmup_steps=0)
    assert TrainingConfig.from_json(plateau.to_json()) == plateau
