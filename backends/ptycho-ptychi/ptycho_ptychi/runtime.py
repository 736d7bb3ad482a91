"""Running pty-chi inside someone else's process without changing that process.

- **torchvision.** pty-chi imports torchvision (for one Gaussian blur, plain torch). The
  torchvision build made for the installed torch may not load its compiled operators
  (a CUDA build next to a CPU torch); :func:`import_ptychi` first makes it importable
  with :func:`ptycho_torch.torchvision_ops.allow_torchvision_without_ops`, which declares
  no more than the schemas torchvision needs at import and only in that case.
- **Global torch state.** Building a pty-chi task sets torch's default device and dtype
  and seeds the global torch, numpy and ``random`` generators. :func:`isolated` runs a
  block with all of these saved and restored, so a caller's generators and defaults are
  the same after a reconstruction as before it.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ptycho_torch.torchvision_ops import allow_torchvision_without_ops

__all__ = ["import_ptychi", "isolated"]

_QUIET_WARNINGS = (
    # pty-chi reads a scalar from a tensor that requires grad in its step-size search
    "Converting a tensor with requires_grad=True to a scalar",
)


def import_ptychi() -> tuple[ModuleType, Any]:
    """pty-chi's ``api`` module and its ``PtychographyTask`` class.

    ``ptychi.api`` must be imported before its reconstructors (a circular import
    otherwise), and torchvision must be importable (see the module docstring).
    """
    allow_torchvision_without_ops()
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask

    return api, PtychographyTask


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Run a block with torch's defaults and every global generator restored after it."""
    dtype = torch.get_default_dtype()
    device = torch.get_default_device()
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda), warnings.catch_warnings():
            for message in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            yield
    finally:
        torch.set_default_dtype(dtype)
        # no explicit default device is the usual state, and the cheaper one
        torch.set_default_device(None if device.type == "cpu" else device)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
