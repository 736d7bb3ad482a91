"""The work behind a Ptychodus reconstruct or train call, on the framework side.

A job is a small frozen dataclass of numpy arrays, configs and file paths, so it can be
pickled into a child process. :func:`execute` runs it and reports through ``emit``, a
callable that receives plain tuples (the *events*, specs/ptychodus.md §5):

- ``("log", levelno, logger_name, message)``
- ``("epoch", epoch, nepochs, {loss name: value})`` — after every training epoch
- ``("partial", done, total, image, covered)`` — the object stitched so far, on the
  input object's frame (complex64 (H, W) and a bool coverage mask)
- ``("done", {...})`` — the last event of a successful job
- ``("error", pickled exception or None, type name, message, traceback)``

This module imports numpy and ``ptycho_core`` only. The backend, and with it its
framework, is imported when the job selects it; Ptychodus is never imported here, so a
child process does not pay Ptychodus's import time.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.data import PtychoData
from ptycho_core.errors import DataContractError
from ptycho_core.hooks import hookimpl, make_plugin_manager
from ptycho_core.protocol import TrainedModel

__all__ = [
    "FRAME_HEADER",
    "Cancelled",
    "Emit",
    "FrameWriter",
    "ModelCache",
    "ReconstructJob",
    "TrainJob",
    "child_main",
    "error_event",
    "execute",
]

Emit = Callable[[tuple[Any, ...]], None]

logger = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside an in-process job when Ptychodus stopped consuming its results."""


@dataclass(frozen=True, kw_only=True)
class ReconstructJob:
    """Reconstruct ``data`` with the bundle at ``bundle`` and stitch onto ``object_shape``."""

    backend: str
    """The Backend setting; the bundle must have been written by this backend."""
    bundle: str
    """Path of the loaded bundle (the reconstructor's private copy)."""
    data: PtychoData
    """Amplitudes and object-pixel positions (no object)."""
    object_shape: tuple[int, int]
    """(H, W) of the input object: the result is stitched into this frame."""
    config: InferenceConfig
    """Batch size, stitch size, neighbours, seed, precision, accelerator."""
    updates: int
    """How many partial results to report (the last one is the whole object)."""
    refine_epochs: int = 0
    """Epochs to refine the model on ``data`` first (0: none; ``refine_model``)."""
    refine_photons: float | None = None
    """Photons per pattern of ``data`` for the refinement (None: the model's own nphotons)."""


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    """Train ``config.backend`` on the NPZ at ``data_path`` and save the bundle at ``output_path``."""

    config: TrainingConfig
    data_path: str
    output_path: str


class ModelCache:
    """The last loaded model of one reconstructor, for in-process runs only.

    Keyed by backend name and the bundle file's path, size and modification time, so a
    replaced file is read again. Owned by a reconstructor instance (no global state).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._model: TrainedModel | None = None

    @staticmethod
    def _key_of(backend: str, bundle: str) -> tuple[Any, ...]:
        info = os.stat(bundle)
        return (backend, os.path.abspath(bundle), info.st_size, info.st_mtime_ns)

    def get(self, backend: str, bundle: str) -> TrainedModel | None:
        with self._lock:
            return self._model if self._key == self._key_of(backend, bundle) else None

    def put(self, backend: str, bundle: str, model: TrainedModel) -> None:
        with self._lock:
            self._key, self._model = self._key_of(backend, bundle), model

    def clear(self) -> None:
        with self._lock:
            self._key, self._model = None, None


class _Relay:
    """ptycho hook implementations that forward progress as events (and honour a cancel)."""

    def __init__(self, emit: Emit, cancel: threading.Event | None) -> None:
        self._emit = emit
        self._cancel = cancel

    def check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled("cancelled by Ptychodus")

    @hookimpl
    def ptycho_epoch_end(self, epoch: int, nepochs: int, losses: Mapping[str, float]) -> None:
        self._emit(("epoch", int(epoch), int(nepochs), {k: float(v) for k, v in losses.items()}))
        self.check()

    @hookimpl
    def ptycho_infer_progress(self, done: int, total: int) -> None:
        self.check()


def _reconstruct(
    job: ReconstructJob, emit: Emit, relay: _Relay, cache: ModelCache | None
) -> dict[str, Any]:
    from ptycho_core.stitching import Stitched
    from ptycho_core.workflows import get_backend, reconstruct

    backend = get_backend(job.backend)
    model = cache.get(job.backend, job.bundle) if cache is not None else None
    if model is None:
        model = backend.load(job.bundle)
        if cache is not None:
            cache.put(job.backend, job.bundle, model)
    if job.data.N != model.N:
        raise DataContractError(
            f"Ptychodus: diffraction patterns: expected {model.N}×{model.N} patterns (the "
            f"loaded model was trained on N = {model.N}), found {job.data.N}×{job.data.N}; "
            "crop or bin the patterns in Ptychodus's Diffraction settings, or load a model "
            f"trained on N = {job.data.N}"
        )
    hooks = make_plugin_manager(relay).hook
    refined = 0
    if job.refine_epochs > 0:
        model = _refine(job, model, backend, hooks)
        refined = len(model.history.get("loss", []))

    def show(stitched: Stitched, done: int, total: int) -> None:
        relay.check()
        covered = stitched.covered
        emit(("partial", done, total, stitched.image.astype(np.complex64), covered))

    result = reconstruct(
        model,
        job.data,
        job.config,
        hooks=hooks,
        backend=backend,
        shape=job.object_shape,
        chunks=max(1, job.updates),
        on_partial=show,
    )
    return {
        "backend": backend.name,
        "n_groups": result.n_groups,
        "refined_epochs": refined,
        "history": {k: [float(v) for v in vs] for k, vs in model.history.items()},
    }


def _refine(job: ReconstructJob, model: TrainedModel, backend: Any, hooks: Any) -> TrainedModel:
    """The model refined on the job's data (the cached, loaded model is left unchanged)."""
    from ptycho_core.workflows import refine_model, refinement_config

    config = refinement_config(model, job.refine_epochs)
    if job.refine_photons is not None:
        config = config.replace(nphotons=float(job.refine_photons))
    refined = refine_model(
        model, job.data, epochs=job.refine_epochs, config=config, hooks=hooks, backend=backend
    )
    losses = refined.history.get("loss", [])
    logger.info(
        "refined the model on the data for %d epochs (final loss %s)",
        len(losses),
        f"{float(losses[-1]):.5g}" if len(losses) else "not reported",
    )
    return refined


def _train(job: TrainJob, emit: Emit, relay: _Relay) -> dict[str, Any]:
    from ptycho_core.data import load_npz
    from ptycho_core.workflows import save_model, train_cdi_model

    data = load_npz(job.data_path)
    results = train_cdi_model(data, None, job.config, hooks=make_plugin_manager(relay).hook)
    model: TrainedModel = results["model"]
    relay.check()
    save_model(model, job.output_path)
    return {
        "backend": model.backend,
        "n_groups": results["train_data"].n_groups,
        "path": str(Path(job.output_path)),
        "history": {k: [float(v) for v in vs] for k, vs in model.history.items()},
    }


def execute(
    job: ReconstructJob | TrainJob,
    emit: Emit,
    *,
    cancel: threading.Event | None = None,
    cache: ModelCache | None = None,
) -> None:
    """Run ``job``, reporting through ``emit``; the last event is ``("done", {...})``.

    Exceptions propagate to the caller (:func:`child_main` turns them into an
    ``"error"`` event). ``cancel`` (in-process runs) stops the job at the next epoch or
    batch with :class:`Cancelled`.
    """
    relay = _Relay(emit, cancel)
    if isinstance(job, ReconstructJob):
        result = _reconstruct(job, emit, relay, cache)
    elif isinstance(job, TrainJob):
        result = _train(job, emit, relay)
    else:
        raise TypeError(
            f"execute: expected a ReconstructJob or TrainJob, found {type(job).__name__}"
        )
    emit(("done", result))


def error_event(error: BaseException) -> tuple[Any, ...]:
    """An ``"error"`` event carrying the exception itself when it can be pickled."""
    try:
        payload: bytes | None = pickle.dumps(error)
        pickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
    except Exception:
        payload = None
    text = "".join(traceback.format_exception(error))
    return ("error", payload, type(error).__name__, str(error), text)


class _LogForwarder(logging.Handler):
    """Forward the child's log records to the parent as ``"log"`` events."""

    def __init__(self, emit: Emit) -> None:
        super().__init__(level=logging.INFO)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        self._emit(("log", record.levelno, record.name, message))


FRAME_HEADER = struct.Struct("!Q")
"""Each event on the child's event pipe is this 8-byte length, then the pickled tuple."""


class FrameWriter:
    """Write events to a pipe as length-prefixed pickles (thread-safe)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: tuple[Any, ...]) -> None:
        payload = pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._stream.write(FRAME_HEADER.pack(len(payload)))
            self._stream.write(payload)
            self._stream.flush()


def child_main(job: ReconstructJob | TrainJob, emit: Emit) -> None:
    """Run ``job`` in the child process, every event (logs and the error too) to ``emit``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(_LogForwarder(emit))
    logging.captureWarnings(True)  # warnings become log lines in Ptychodus's log
    try:
        execute(job, emit)
    except BaseException as error:
        emit(error_event(error))
