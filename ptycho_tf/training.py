"""Training: Keras ``fit`` around :class:`~ptycho_tf.model.PtychoPINN`, with the shared schedule.

The TensorFlow twin of :mod:`ptycho_torch.training` (specs/backend-protocol.md §4.1):
Adam, whose rate :class:`ScheduleCallback` sets before every optimiser step from the shared
:class:`~ptycho_core.schedule.LearningRateSchedule` (the same rates as ptycho_torch), early
stopping on the training loss under the 'plateau' schedule only, validation = the last ``config.validation_split`` of the
groups (:meth:`TrainingData.split`). Progress goes to the core hooks through
:class:`HookCallback`.

Determinism: each convolution's initial weights come from a seed derived from
``config.seed`` and its place in the network, the training set is shuffled by a seeded
``tf.data`` shuffle, and training runs with ``keras.utils.set_random_seed(config.seed)``
and TensorFlow's op determinism; the Python and numpy global generators and the
op-determinism switch are restored afterwards. Several devices (``config.devices > 1``)
train under ``tf.distribute.MirroredStrategy``. The returned network is always a fresh
float32, single-device copy of the trained weights, so nothing of the training run
(optimizer, strategy, bfloat16 policy, compiled step) outlives ``fit``. A warm start
(``fit(..., initial=network)``) runs the same path with the new network's weights set
from a trained one first.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ptycho_core.config import ACCELERATORS, ModelConfig, TrainingConfig
from ptycho_core.errors import ConfigError
from ptycho_core.hooks import HookRelay
from ptycho_core.protocol import TrainingData
from ptycho_core.schedule import LearningRateSchedule, monitored_loss, stops_early
from ptycho_tf import physics
from ptycho_tf._keras import keras, tf
from ptycho_tf.model import PtychoPINN

__all__ = [
    "ADAM_EPSILON",
    "BACKEND_NAME",
    "HookCallback",
    "PtychoLoss",
    "ScheduleCallback",
    "SupervisedLoss",
    "build_network",
    "copy_network",
    "copy_weights",
    "fit",
    "make_callbacks",
    "make_dataset",
    "make_loss",
    "resolve_devices",
    "seeded_and_deterministic",
]

BACKEND_NAME = "tensorflow"

ADAM_EPSILON = 1e-8
"""Adam's ε, torch's default, so both backends run the same optimiser (Keras' is 1e-7)."""

_STRATEGIES = ("auto", "mirrored")


def build_network(
    model_config: ModelConfig, probe: np.ndarray, intensity_scale: float, **options: Any
) -> PtychoPINN:
    """A fresh :class:`PtychoPINN` with every variable created.

    ``options`` are the network's keywords: trainability, ``seed`` (which fixes the initial
    weights), ``precision`` and the starting ``output_gain``.
    """
    network = PtychoPINN(model_config, probe, intensity_scale, **options)
    network.build()
    return network


def copy_network(source: PtychoPINN, *, precision: str = "32") -> PtychoPINN:
    """A new single-device network with ``source``'s architecture and current weights."""
    copy = source.sibling(precision)
    for target, value in zip(copy.weights, source.weights, strict=True):
        target.assign(np.asarray(value.numpy()))
    return copy


def copy_weights(target: PtychoPINN, source: PtychoPINN, *, probe: bool = True) -> None:
    """Set ``target``'s variables to ``source``'s, matched by neutral weight name.

    By name, not by order: the two may differ in which variables are trainable. With
    ``probe=False`` the probe keeps ``target``'s value (an input, when it is not trained).
    """
    values = source.named_weights()
    for name, variable in target.named_weights().items():
        if probe or not name.startswith("probe."):
            variable.assign(np.asarray(values[name].numpy()))


@keras.saving.register_keras_serializable(package="ptycho")
class PtychoLoss(keras.losses.Loss):
    """``nll_weight · PoissonNLL + mae_weight · MAE`` of predicted vs target amplitudes.

    Per-element values reduced by Keras' ``sum_over_batch_size``: the mean over
    (B, N, N, C), as ``ptycho_torch`` computes it.
    """

    def __init__(self, nll_weight: float = 1.0, mae_weight: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("name", "ptycho_loss")
        super().__init__(**kwargs)
        self.nll_weight = float(nll_weight)
        self.mae_weight = float(mae_weight)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        loss = tf.zeros_like(y_pred)
        if self.nll_weight > 0:
            loss = loss + self.nll_weight * physics.poisson_nll(y_pred, y_true)
        if self.mae_weight > 0:
            loss = loss + self.mae_weight * physics.mae_loss(y_pred, y_true)
        return loss

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "nll_weight": self.nll_weight,
            "mae_weight": self.mae_weight,
        }


@keras.saving.register_keras_serializable(package="ptycho")
class SupervisedLoss(keras.losses.Loss):
    """``2·L1(amplitude, |target|) + 4·L1(phase, arg target)``.

    ``y_true`` and ``y_pred`` hold amplitudes then phases on the channel axis; the
    per-element values (amplitude half ×4, phase half ×8) average to the formula.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("name", "supervised_loss")
        super().__init__(**kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        half = y_pred.shape[-1] // 2
        amp = 4.0 * tf.abs(y_pred[..., :half] - y_true[..., :half])
        phase = 8.0 * tf.abs(y_pred[..., half:] - y_true[..., half:])
        return tf.concat([amp, phase], axis=-1)


def make_loss(config: TrainingConfig) -> keras.losses.Loss:
    """The training objective for ``config.model.model_type``."""
    if config.model.model_type == "supervised":
        return SupervisedLoss()
    return PtychoLoss(nll_weight=config.nll_weight, mae_weight=config.mae_weight)


def _targets(data: TrainingData, config: TrainingConfig) -> np.ndarray:
    groups = data.groups
    if config.model.model_type == "supervised":
        patches = np.asarray(groups.object_patches)
        return np.concatenate([np.abs(patches), np.angle(patches)], axis=-1).astype(np.float32)
    return np.float32(data.intensity_scale) * np.asarray(groups.diffraction, dtype=np.float32)


def make_dataset(
    data: TrainingData, config: TrainingConfig, *, shuffle: bool, seed: int
) -> tf.data.Dataset:
    """Batches of ``((diffraction, coords_relative), target)`` from the core's NHWC arrays."""
    groups = data.groups
    inputs = (
        np.ascontiguousarray(groups.diffraction, dtype=np.float32),
        np.ascontiguousarray(groups.coords_relative, dtype=np.float32),
    )
    dataset = tf.data.Dataset.from_tensor_slices((inputs, _targets(data, config)))
    if shuffle:
        dataset = dataset.shuffle(groups.n_groups, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(config.batch_size).prefetch(2)
    options = tf.data.Options()
    # (auto_shard_policy stays AUTO: OFF makes TF 2.21's MirroredStrategy rebatch wrongly.)
    options.deterministic = True
    return dataset.with_options(options)


class ScheduleCallback(keras.callbacks.Callback):
    """Sets the optimiser's rate before every step from the shared learning-rate schedule.

    The step is the optimiser's own count (``optimizer.iterations``, read with ``.numpy()``:
    numpy 2 flags ``np.array(variable)``); a fresh schedule starts with every ``fit``.
    After each epoch the monitored loss (``val_loss``, or ``loss`` without a validation
    split) goes to :meth:`LearningRateSchedule.end_epoch`.
    """

    def __init__(self, config: TrainingConfig, total_steps: int, *, has_validation: bool) -> None:
        super().__init__()
        self.config = config
        self.total_steps = total_steps
        self.monitor = monitored_loss(has_validation)
        self.schedule = LearningRateSchedule(config, total_steps)

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.schedule = LearningRateSchedule(self.config, self.total_steps)

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        step = int(np.asarray(optimizer.iterations.numpy()))
        optimizer.learning_rate = self.schedule.rate(step)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        self.schedule.end_epoch(None if value is None else float(value))


class HookCallback(keras.callbacks.Callback):
    """Relays Keras' epoch events to the ptycho hooks and keeps the loss history."""

    def __init__(self, hooks: HookRelay, config: TrainingConfig, n_groups: int) -> None:
        super().__init__()
        self.hooks = hooks
        self.config = config
        self.n_groups = n_groups
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.hooks.ptycho_train_start(
            backend=BACKEND_NAME, config=self.config, n_groups=self.n_groups
        )

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = logs or {}
        losses = {name: float(logs[name]) for name in ("loss", "val_loss") if name in logs}
        for name, value in losses.items():
            self.history.setdefault(name, []).append(value)
        self.hooks.ptycho_epoch_end(epoch=epoch, nepochs=self.config.nepochs, losses=losses)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.hooks.ptycho_train_end(history={k: list(v) for k, v in self.history.items()})


def resolve_devices(accelerator: str, devices: int | str) -> list[str]:
    """Logical TensorFlow device names to run on: ``devices`` of the ``accelerator`` kind.

    'cpu' → CPU devices; 'gpu' → GPUs (an error without one); 'auto' → GPUs if TensorFlow
    sees any, else CPUs. ``devices='auto'`` takes every device of that kind.
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator: expected 'auto', 'cpu' or 'gpu', found {accelerator!r}")
    gpus = tf.config.list_logical_devices("GPU")
    if accelerator == "gpu" and not gpus:
        raise ConfigError("accelerator 'gpu' was requested, but TensorFlow sees no GPU")
    kind = "GPU" if accelerator == "gpu" or (accelerator == "auto" and gpus) else "CPU"
    available = gpus if kind == "GPU" else tf.config.list_logical_devices("CPU")
    count = len(available) if devices == "auto" else devices
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"devices: expected 'auto' or an integer >= 1, found {devices!r}")
    if count > len(available):
        names = ", ".join(d.name for d in available) or "none"
        raise ConfigError(
            f"devices: expected at most {len(available)} (the {kind} devices TensorFlow sees: "
            f"{names}), found {count}; on one CPU, tf.config.set_logical_device_configuration "
            "splits it into several logical devices"
        )
    return [d.name for d in available[:count]]


def _strategy(config: TrainingConfig) -> tuple[tf.distribute.Strategy, str | None]:
    """The distribution strategy and, for one device, the device to place everything on."""
    if config.num_nodes != 1:
        raise ConfigError(
            f"TrainingConfig.num_nodes: the tensorflow backend trains on one machine "
            f"(MirroredStrategy over its devices); expected 1, found {config.num_nodes}"
        )
    if config.strategy not in _STRATEGIES:
        raise ConfigError(
            f"TrainingConfig.strategy: expected one of {', '.join(map(repr, _STRATEGIES))} for the "
            f"tensorflow backend ('auto' uses MirroredStrategy when devices > 1), found "
            f"{config.strategy!r}"
        )
    names = resolve_devices(config.accelerator, config.devices)
    if len(names) > 1 or config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(devices=names), None
    return tf.distribute.get_strategy(), names[0]


def _op_determinism_switch() -> tuple[Any, Any]:
    """TensorFlow's (is_enabled, disable) pair; public TF only exposes ``enable``."""
    try:
        from tensorflow.python.framework import config as tf_config
    except ImportError:  # pragma: no cover - layout of a future TF
        return None, None
    return (
        getattr(tf_config, "is_op_determinism_enabled", None),
        getattr(tf_config, "disable_op_determinism", None),
    )


@contextlib.contextmanager
def seeded_and_deterministic(seed: int) -> Iterator[None]:
    """``keras.utils.set_random_seed(seed)`` and op determinism, undone on exit where possible.

    The Python and numpy global generators get their previous states back, and op
    determinism is switched off again if it was off before.
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    is_enabled, disable = _op_determinism_switch()
    was_enabled = bool(is_enabled()) if is_enabled is not None else True
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if not was_enabled and disable is not None:
            disable()


def make_callbacks(
    config: TrainingConfig, hooks: HookRelay, n_groups: int, *, has_validation: bool
) -> list[keras.callbacks.Callback]:
    """Schedule, early stopping (under the 'plateau' schedule only) and the hook relay
    (last, so it sees the final epoch state).

    ``n_groups`` training groups make ``nepochs × ⌈n_groups / batch_size⌉`` optimiser steps
    (the dataset's batches are global batches, also under MirroredStrategy).
    """
    total_steps = config.nepochs * math.ceil(n_groups / config.batch_size)
    stopping = keras.callbacks.EarlyStopping(
        monitor="loss", patience=config.early_stop_patience, min_delta=0.0, mode="min", verbose=0
    )
    return [
        ScheduleCallback(config, total_steps, has_validation=has_validation),
        *([stopping] if stops_early(config) else []),
        HookCallback(hooks, config, n_groups),
    ]


def fit(
    data: TrainingData,
    config: TrainingConfig,
    hooks: HookRelay,
    *,
    initial: PtychoPINN | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[PtychoPINN, dict[str, list[float]]]:
    """Train a network on ``data``; returns a float32 single-device copy and the loss history.

    A new network, or with ``initial`` (a warm start) one whose weights, output gain and
    (when ``config`` trains it) probe start as ``initial``'s, which is left unchanged.
    ``callbacks`` are extra Keras callbacks run after the built-in ones (e.g. to watch
    every step).
    """
    data.check_fits(config, BACKEND_NAME)
    train_part, val_part = data.split(config.validation_split)
    strategy, device = _strategy(config)
    placement = tf.device(device) if device is not None else contextlib.nullcontext()
    with seeded_and_deterministic(config.seed), placement:
        with strategy.scope():
            network = build_network(
                config.model,
                data.probe,
                data.intensity_scale,
                **config.trainability(),
                seed=config.seed,
                precision=config.precision,
            )
            if initial is not None:
                copy_weights(network, initial, probe=config.probe_trainable)
            network.compile(
                optimizer=keras.optimizers.Adam(
                    learning_rate=config.learning_rate,
                    beta_1=0.9,
                    beta_2=0.999,
                    epsilon=ADAM_EPSILON,
                ),
                loss=make_loss(config),
                jit_compile=False,
            )
        train_set = make_dataset(train_part, config, shuffle=True, seed=config.seed)
        val_set = (
            None
            if val_part is None
            else make_dataset(val_part, config, shuffle=False, seed=config.seed)
        )
        built_in = make_callbacks(
            config, hooks, train_part.n_groups, has_validation=val_part is not None
        )
        network.fit(
            train_set,
            validation_data=val_set,
            epochs=config.nepochs,
            callbacks=[*built_in, *callbacks],
            shuffle=False,  # the dataset shuffles itself, seeded
            verbose=0,
        )
    return copy_network(network), built_in[-1].history
