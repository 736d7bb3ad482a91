"""Lifecycle hooks: how backends report progress without knowing any user interface.

The hook specifications live in this one module. Backends call them through the
``hooks`` relay they receive in ``train``/``infer``; the CLI's progress bars, the
Ptychodus adapter's log lines and any third-party plugin implement them. Plugins
registered under the ``ptycho.plugins`` entry-point group are loaded by
:func:`make_plugin_manager`. There is no global manager: each run builds its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

__all__ = [
    "PLUGIN_ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "HookRelay",
    "hookimpl",
    "hookspec",
    "make_plugin_manager",
]

PROJECT_NAME = "ptycho"
PLUGIN_ENTRY_POINT_GROUP = "ptycho.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

HookRelay = pluggy.HookRelay


@hookspec
def ptycho_train_start(backend: str, config: Any, n_groups: int) -> None:
    """Training is about to start: ``n_groups`` groups, at most ``config.nepochs`` epochs."""


@hookspec
def ptycho_epoch_end(epoch: int, nepochs: int, losses: Mapping[str, float]) -> None:
    """Epoch ``epoch`` (0-based) of ``nepochs`` finished with these loss values.

    ``losses`` always holds ``'loss'`` (training objective) and, when a validation split
    exists, ``'val_loss'``; backends may add more named values.
    """


@hookspec
def ptycho_train_end(history: Mapping[str, Sequence[float]]) -> None:
    """Training finished; ``history`` maps each loss name to its per-epoch values."""


@hookspec
def ptycho_infer_progress(done: int, total: int) -> None:
    """``done`` of ``total`` groups have been predicted."""


def make_plugin_manager(*plugins: object, load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with ptycho's hookspecs and the given plugins registered.

    With ``load_entry_points`` the plugins installed under ``ptycho.plugins`` are
    registered too. Pass ``manager.hook`` to a backend as its ``hooks`` argument.
    """
    import sys

    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(sys.modules[__name__])
    for plugin in plugins:
        manager.register(plugin)
    if load_entry_points:
        manager.load_setuptools_entrypoints(PLUGIN_ENTRY_POINT_GROUP)
    manager.check_pending()
    return manager
