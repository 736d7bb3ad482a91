"""Lifecycle hooks: the specs, registration validation and entry-point plugins."""

from __future__ import annotations

import pluggy
import pytest

from ptycho_core import hooks

pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")


class Collector:
    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    @hooks.hookimpl
    def ptycho_epoch_end(self, epoch, nepochs, losses):  # type: ignore[no-untyped-def]
        self.seen.append((epoch, losses["loss"]))


def test_registered_plugins_receive_keyword_calls() -> None:
    collector = Collector()
    manager = hooks.make_plugin_manager(collector, load_entry_points=False)
    manager.hook.ptycho_epoch_end(epoch=0, nepochs=2, losses={"loss": 1.5})
    manager.hook.ptycho_epoch_end(epoch=1, nepochs=2, losses={"loss": 0.5})
    assert collector.seen == [(0, 1.5), (1, 0.5)]
    with pytest.raises(TypeError):
        manager.hook.ptycho_epoch_end(0, 2, {"loss": 1.0})  # positional calls are refused


def test_entry_point_plugins_are_loaded_only_when_asked() -> None:
    loaded = hooks.make_plugin_manager()
    assert loaded.get_plugin("testbackends-echo") is not None
    answers = loaded.hook.ptycho_infer_progress(done=3, total=4)
    assert answers == ["testbackends-echo: 3/4"]
    bare = hooks.make_plugin_manager(load_entry_points=False)
    assert bare.get_plugin("testbackends-echo") is None
    assert bare.hook.ptycho_infer_progress(done=3, total=4) == []


def test_an_implementation_with_unknown_arguments_is_rejected() -> None:
    class Wrong:
        @hooks.hookimpl
        def ptycho_epoch_end(self, epoch, loss_values):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(pluggy.PluginValidationError, match="loss_values"):
        hooks.make_plugin_manager(Wrong(), load_entry_points=False)


def test_every_manager_is_independent() -> None:
    first, second = Collector(), Collector()
    a = hooks.make_plugin_manager(first, load_entry_points=False)
    hooks.make_plugin_manager(second, load_entry_points=False)
    a.hook.ptycho_epoch_end(epoch=0, nepochs=1, losses={"loss": 2.0})
    assert first.seen == [(0, 2.0)] and second.seen == []
