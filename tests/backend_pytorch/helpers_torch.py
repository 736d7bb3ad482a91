"""Helpers shared by the torch backend tests (imported by name: tests/backend_pytorch is on sys.path)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.hooks import hookimpl, make_plugin_manager


@dataclass
class Recorder:
    """A hook plugin that records every call (a real plugin, registered with pluggy)."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @hookimpl
    def ptycho_train_start(self, backend: str, config: Any, n_groups: int) -> None:
        self.calls.append(
            ("train_start", {"backend": backend, "config": config, "n_groups": n_groups})
        )

    @hookimpl
    def ptycho_epoch_end(self, epoch: int, nepochs: int, losses: Mapping[str, float]) -> None:
        self.calls.append(
            ("epoch_end", {"epoch": epoch, "nepochs": nepochs, "losses": dict(losses)})
        )

    @hookimpl
    def ptycho_train_end(self, history: Mapping[str, Sequence[float]]) -> None:
        self.calls.append(("train_end", {"history": {k: list(v) for k, v in history.items()}}))

    @hookimpl
    def ptycho_infer_progress(self, done: int, total: int) -> None:
        self.calls.append(("infer_progress", {"done": done, "total": total}))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [args for call, args in self.calls if call == name]


def hooks_for(recorder: Recorder | None = None):
    """A hook relay with ``recorder`` (if any) and no installed plugins."""
    plugins = () if recorder is None else (recorder,)
    return make_plugin_manager(*plugins, load_entry_points=False).hook


def small_config(**changes: Any) -> TrainingConfig:
    """A fast N=64 training config (CPU, few groups, few epochs)."""
    model = changes.pop("model", ModelConfig(N=64, gridsize=1))
    values: dict[str, Any] = {
        "model": model,
        "backend": "pytorch",
        "nepochs": 1,
        "batch_size": 16,
        "n_groups": 32,
        "validation_split": 0.25,
        "accelerator": "cpu",
        "seed": 3,
    }
    values.update(changes)
    return TrainingConfig(**values)
