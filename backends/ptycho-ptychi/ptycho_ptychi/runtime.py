"""Running pty-chi inside someone else's process without changing that process.

Two things stand between pty-chi and a well-behaved library call:

- **torchvision without its compiled operators.** pty-chi imports torchvision (for one
  Gaussian blur, which is plain torch). The torchvision build made for a given torch is
  often a CUDA build; next to a CPU-only torch its compiled operators cannot load, and
  torchvision 0.28 then fails at import while registering fake kernels for two of those
  operators (``nms``, ``qnms``). When — and only when — torchvision's compiled library
  does not load, :func:`import_ptychi` declares the schemas of exactly those operators,
  so torchvision imports with its operators reported unavailable (calling one raises
  torchvision's own "Couldn't load custom C++ ops" error). Nothing else is replaced.
- **Global torch state.** Building a pty-chi task sets torch's default device and dtype
  and seeds the global torch, numpy and ``random`` generators. :func:`isolated` runs a
  block with all of these saved and restored, so a caller's generators and defaults are
  the same after a reconstruction as before it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

__all__ = ["import_ptychi", "isolated", "torchvision_ops_available"]

_FAKED_BY_TORCHVISION = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
"""Operators whose fake kernels torchvision registers unconditionally at import."""
_schemas: list[Any] = []  # the library that holds declared schemas lives as long as we do
_ops_available: bool | None = None
_QUIET_WARNINGS = (
    # pty-chi reads a scalar from a tensor that requires grad in its step-size search
    "Converting a tensor with requires_grad=True to a scalar",
)


def _compiled_library() -> Path | None:
    """torchvision's compiled operator library, or None when torchvision has none."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for candidate in sorted(Path(folder).glob("_C.*")):
            if candidate.suffix in (".so", ".pyd", ".dylib"):
                return candidate
    return None


def _declare_missing_schemas() -> None:
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _FAKED_BY_TORCHVISION.items():
        try:
            getattr(torch.ops.torchvision, name)
        except (AttributeError, RuntimeError):
            library.define(schema)
    _schemas.append(library)


def torchvision_ops_available() -> bool:
    """Whether torchvision's compiled operators load next to the installed torch."""
    global _ops_available
    if _ops_available is None:
        library = _compiled_library()
        try:
            if library is None:
                raise OSError("torchvision has no compiled operator library")
            torch.ops.load_library(str(library))
            _ops_available = True
        except (OSError, ImportError, RuntimeError):
            _ops_available = False
    return _ops_available


def import_ptychi() -> tuple[ModuleType, Any]:
    """pty-chi's ``api`` module and its ``PtychographyTask`` class, imported once.

    ``ptychi.api`` must be imported before its reconstructors (a circular import
    otherwise), and torchvision must be importable (see the module docstring).
    """
    if "torchvision" not in sys.modules and not torchvision_ops_available():
        _declare_missing_schemas()
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
