"""Training: a thin LightningModule around :class:`~ptycho_torch.model.PtychoPINN`, and the Trainer.

The LightningModule only wires the loss, the optimiser and the schedule
(specs/backend-protocol.md §4.1): Adam, whose rate it sets before every optimiser step
from the shared :class:`~ptycho_core.schedule.LearningRateSchedule` (the same rates as
ptycho_tf), and early stopping on the training loss under the 'plateau' schedule only.
Lightning owns loops, devices, precision and DDP.
Progress goes to the core hooks through :class:`HookCallback`, on global rank 0 only.
A warm start (``fit(..., initial=network)``) trains a copy of a trained network through
the same path instead of a fresh one.

Batches are the core's NHWC arrays; ``permute(0, 3, 1, 2)`` turns them into NCHW-shaped,
channels-last tensors without a copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.errors import ConfigError
from ptycho_core.hooks import HookRelay
from ptycho_core.protocol import TrainingData
from ptycho_core.schedule import LearningRateSchedule, monitored_loss, stops_early
from ptycho_torch import physics
from ptycho_torch._lightning import Callback, EarlyStopping, pl, rank_zero_only
from ptycho_torch.model import PtychoPINN

__all__ = [
    "BACKEND_NAME",
    "LIGHTNING_PRECISION",
    "HookCallback",
    "PtychoLightningModule",
    "build_network",
    "early_stopping",
    "fit",
    "is_global_zero",
    "make_dataloader",
    "make_trainer",
    "warm_start_network",
]

BACKEND_NAME = "pytorch"

LIGHTNING_PRECISION: Mapping[str, str] = {"32": "32-true", "bf16-mixed": "bf16-mixed"}
"""ptycho precision names → Lightning's."""

_NOISY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
_SEED_VARIABLES = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


def build_network(
    model_config: ModelConfig, probe: np.ndarray, intensity_scale: float, **options: Any
) -> PtychoPINN:
    """A fresh :class:`PtychoPINN` in channels-last memory, the fast layout for CPU convolutions.

    ``options`` are the network's keywords: trainability and the starting ``output_gain``.
    """
    network = PtychoPINN(model_config, probe, intensity_scale, **options)
    return network.to(memory_format=torch.channels_last)


def warm_start_network(
    source: PtychoPINN, config: TrainingConfig, probe: np.ndarray, intensity_scale: float
) -> PtychoPINN:
    """A network built for ``config`` holding ``source``'s weights and output gain.

    Built anew, so ``config``'s trainability of the gain and the probe holds and ``source``
    is never touched. The probe is ``source``'s trained one when ``config`` trains the
    probe, else the given ``probe`` (an input, as in training); s₀ is the given one.
    """
    network = build_network(config.model, probe, intensity_scale, **config.trainability())
    state = dict(source.state_dict())
    if not config.probe_trainable:
        state["probe"] = network.probe
    network.load_state_dict(state, strict=True)
    return network


def is_global_zero() -> bool:
    """True in the process that owns outputs (rank 0 of a DDP run, or a plain process)."""
    return int(getattr(rank_zero_only, "rank", 0)) == 0


class PtychoLightningModule(pl.LightningModule):
    """Loss, optimiser and schedule around a :class:`PtychoPINN`.

    Constructor arguments are plain values (``config`` is ``TrainingConfig.to_dict()``),
    saved with ``save_hyperparameters`` so a checkpoint rebuilds the module on its own;
    the probe is a tensor of the network's state, not a hyperparameter. ``network``, when
    given, is trained instead of a fresh one (a warm start: pass a copy, it is updated).
    ``has_validation`` chooses the loss the 'plateau' schedule watches (``val_loss`` or
    ``loss``). Each ``trainer.fit`` starts a fresh :attr:`schedule`.
    """

    def __init__(
        self,
        config: dict[str, Any],
        intensity_scale: float,
        probe: np.ndarray | None = None,
        has_validation: bool = True,
        network: PtychoPINN | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["probe", "network"])
        self.config = TrainingConfig.from_dict(config)
        model_config = self.config.model
        output_gain = None
        if probe is None:  # rebuilt from a checkpoint: the state dict brings probe and gain
            probe = np.zeros((model_config.N, model_config.N), dtype=np.complex64)
            output_gain = 1.0
        if network is None:
            network = build_network(
                model_config,
                probe,
                intensity_scale,
                output_gain=output_gain,
                **self.config.trainability(),
            )
        self.network = network
        self.intensity_scale = float(intensity_scale)
        self.has_validation = has_validation
        self.schedule: LearningRateSchedule | None = None

    def _loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        diffraction, coords = batch[0], batch[1]
        x = diffraction.permute(0, 3, 1, 2)
        out = self.network(x, coords)
        config = self.config
        if config.model.model_type == "supervised":
            target = batch[2].permute(0, 3, 1, 2)
            return physics.supervised_loss(out.generated_amplitude, out.generated_phase, target)
        target = self.intensity_scale * x.float()
        loss = torch.zeros((), device=x.device)
        if config.nll_weight > 0:
            loss = loss + config.nll_weight * physics.poisson_nll(out.amplitude, target)
        if config.mae_weight > 0:
            loss = loss + config.mae_weight * physics.mae_loss(out.amplitude, target)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log(
            "loss", loss, on_step=False, on_epoch=True, batch_size=batch[0].shape[0], sync_dist=True
        )
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log(
            "val_loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=batch[0].shape[0],
            sync_dist=True,
        )
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the trainable parameters; its rate is set before each step (below)."""
        parameters = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(parameters, lr=self.config.learning_rate, betas=(0.9, 0.999))

    def on_train_start(self) -> None:
        """A fresh schedule over the run's optimiser steps (``nepochs`` epochs of batches)."""
        self.schedule = LearningRateSchedule(
            self.config, int(self.trainer.estimated_stepping_batches)
        )

    def _running_schedule(self) -> LearningRateSchedule:
        if self.schedule is None:
            raise RuntimeError("PtychoLightningModule: the schedule starts in on_train_start")
        return self.schedule

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Set every parameter group's rate for the coming optimiser step (``global_step``)."""
        rate = self._running_schedule().rate(self.trainer.global_step)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate

    def on_train_epoch_end(self) -> None:
        """Hand the epoch's monitored loss (synced across DDP processes) to the schedule."""
        value = self.trainer.callback_metrics.get(monitored_loss(self.has_validation))
        self._running_schedule().end_epoch(None if value is None else float(value))


class HookCallback(Callback):
    """Relays Lightning's epoch events to the ptycho hooks and keeps the loss history."""

    def __init__(self, hooks: HookRelay, config: TrainingConfig, n_groups: int) -> None:
        self.hooks = hooks
        self.config = config
        self.n_groups = n_groups
        self.history: dict[str, list[float]] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.hooks.ptycho_train_start(
                backend=BACKEND_NAME, config=self.config, n_groups=self.n_groups
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        losses = {
            name: float(trainer.callback_metrics[name])
            for name in ("loss", "val_loss")
            if name in trainer.callback_metrics
        }
        for name, value in losses.items():
            self.history.setdefault(name, []).append(value)
        if trainer.is_global_zero:
            self.hooks.ptycho_epoch_end(
                epoch=trainer.current_epoch, nepochs=self.config.nepochs, losses=losses
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.hooks.ptycho_train_end(history={k: list(v) for k, v in self.history.items()})


def _tensor(array: np.ndarray, dtype: type) -> torch.Tensor:
    """A CPU tensor of ``array``, copied when numpy's memory is read-only (torch needs writable)."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def make_dataloader(data: TrainingData, batch_size: int, *, shuffle: bool, seed: int) -> DataLoader:
    """A single-process loader over the groups' arrays (NHWC as the core gives them)."""
    groups = data.groups
    tensors = [
        _tensor(groups.diffraction, np.float32),
        _tensor(groups.coords_relative, np.float32),
    ]
    if groups.object_patches is not None:
        tensors.append(_tensor(groups.object_patches, np.complex64))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(*tensors),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
    )


def early_stopping(config: TrainingConfig) -> EarlyStopping:
    """Stop when the training loss has not improved for ``early_stop_patience`` epochs (TF rule)."""
    return EarlyStopping(
        monitor="loss",
        patience=config.early_stop_patience,
        mode="min",
        min_delta=0.0,
        check_on_train_epoch_end=True,
    )


def make_trainer(config: TrainingConfig, callbacks: list[Callback], root_dir: str) -> pl.Trainer:
    """The Trainer: deterministic, quiet, no logger or checkpoint files; devices from config.

    A device setting Lightning refuses (no GPU for 'gpu', an unknown strategy, too many
    devices) becomes a ``ValueError`` naming the config fields, before any epoch runs.
    """
    try:
        return _trainer(config, callbacks, root_dir)
    except Exception as error:  # Lightning's MisconfigurationException, ValueError, RuntimeError
        raise ConfigError(
            f"TrainingConfig accelerator={config.accelerator!r}, devices={config.devices!r}, "
            f"strategy={config.strategy!r}, num_nodes={config.num_nodes!r}: not usable here "
            f"({type(error).__name__}: {error})"
        ) from error


def _trainer(config: TrainingConfig, callbacks: list[Callback], root_dir: str) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=config.nepochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=LIGHTNING_PRECISION[config.precision],
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=root_dir,
        callbacks=callbacks,
    )


@contextlib.contextmanager
def _quiet_and_restored() -> Iterator[None]:
    """Silence Lightning's info lines; restore the process-global state fit touches.

    ``seed_everything`` seeds Python's, numpy's and torch's global generators and sets
    ``PL_GLOBAL_SEED``; ``deterministic=True`` flips torch's algorithm flags. All of it is
    put back afterwards, so training is seeded by ``config.seed`` alone and leaves the
    caller's process as it found it (specs/backend-protocol.md §4.1).
    """
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    environment = {name: os.environ.get(name) for name in _SEED_VARIABLES}
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_deterministic = torch.backends.cudnn.deterministic
    cudnn_benchmark = torch.backends.cudnn.benchmark
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        with torch.random.fork_rng(devices=cuda_devices), warnings.catch_warnings():
            # num_workers=0 is the fastest loader for in-memory arrays; the hint does not apply.
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            # validation_split 0 is a legitimate choice: no validation loop then.
            warnings.filterwarnings(
                "ignore", message=r".*`validation_step` but have no `val_dataloader`.*"
            )
            # Lightning 2.6 with torch 2.13 trips its own deprecation inside fit; nothing to act on.
            warnings.filterwarnings(
                "ignore",
                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                category=FutureWarning,
            )
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.backends.cudnn.benchmark = cudnn_benchmark


def fit(
    data: TrainingData,
    config: TrainingConfig,
    hooks: HookRelay,
    *,
    initial: PtychoPINN | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[PtychoPINN, dict[str, list[float]]]:
    """Train a network on ``data``; returns it (on the CPU, eval mode) and its loss history.

    A new network, or with ``initial`` (a warm start) a copy of that trained network
    (:func:`warm_start_network`; ``initial`` itself is left unchanged). ``callbacks`` are
    extra Lightning callbacks run after the built-in ones (e.g. to watch every step).
    """
    data.check_fits(config, BACKEND_NAME)
    train_part, val_part = data.split(config.validation_split)
    with _quiet_and_restored(), tempfile.TemporaryDirectory(prefix="ptycho-torch-") as root:
        pl.seed_everything(config.seed, workers=True, verbose=False)
        module = PtychoLightningModule(
            config.to_dict(),
            data.intensity_scale,
            probe=data.probe,
            has_validation=val_part is not None,
            network=(
                None
                if initial is None
                else warm_start_network(initial, config, data.probe, data.intensity_scale)
            ),
        )
        callback = HookCallback(hooks, config, train_part.n_groups)
        stopping = [early_stopping(config)] if stops_early(config) else []
        trainer = make_trainer(config, [callback, *stopping, *callbacks], root)
        train_loader = make_dataloader(
            train_part, config.batch_size, shuffle=True, seed=config.seed
        )
        val_loader = (
            None
            if val_part is None
            else make_dataloader(val_part, config.batch_size, shuffle=False, seed=config.seed)
        )
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    network = module.network.cpu().eval()
    return network, callback.history
