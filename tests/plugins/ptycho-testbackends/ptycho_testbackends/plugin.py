"""A lifecycle-hook plugin registered through the ``ptycho.plugins`` entry points.

It keeps no state: each hook returns a string, which pluggy hands back to the caller,
so a test can see that the installed plugin was loaded and called.
"""

from __future__ import annotations

from collections.abc import Mapping

from ptycho_core.hooks import hookimpl


@hookimpl
def ptycho_epoch_end(epoch: int, nepochs: int, losses: Mapping[str, float]) -> str:
    return f"testbackends-echo: epoch {epoch + 1}/{nepochs} loss {losses['loss']:.3g}"


@hookimpl
def ptycho_infer_progress(done: int, total: int) -> str:
    return f"testbackends-echo: {done}/{total}"
