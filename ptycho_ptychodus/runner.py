"""Run a worker job in a child process or in a thread of Ptychodus's process.

Both ways look the same to the caller: :func:`run_job` is a generator of the job's
events (see :mod:`~ptycho_ptychodus.worker`), it re-raises the job's exception, and
closing it early (Ptychodus stopped the task) stops the job: a child process is
terminated, an in-process job is cancelled at its next epoch or batch.
specs/ptychodus.md §5 gives the measured costs of each mode and why a child process is
the default.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import queue as queue_module
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ptycho_core
from ptycho_ptychodus import LOGGER_NAME
from ptycho_ptychodus.worker import (
    FRAME_HEADER,
    ModelCache,
    ReconstructJob,
    TrainJob,
    error_event,
    execute,
)

__all__ = ["CHILD_MODULE", "WorkerError", "run_job"]

CHILD_MODULE = "ptycho_ptychodus._child"
"""Module the worker process runs (``python -P -m CHILD_MODULE FD``)."""

_POLL_S = 0.2
_TERMINATE_GRACE_S = 10.0
_child_logger = logging.getLogger(f"{LOGGER_NAME}.child")


class WorkerError(RuntimeError):
    """The job failed in a way that could not be passed back as its own exception."""


def _raise_error(event: tuple[Any, ...]) -> None:
    _, payload, type_name, message, text = event
    error: BaseException | None = None
    if payload is not None:
        try:
            error = pickle.loads(payload)
        except Exception:
            error = None
    if not isinstance(error, BaseException):
        error = WorkerError(f"{type_name}: {message}")
    error.add_note(f"in the ptycho worker:\n{text.rstrip()}")
    raise error


def _relay_log(event: tuple[Any, ...]) -> None:
    _, level, name, message = event
    _child_logger.log(int(level), "[%s] %s", name, message)


def _events(
    source: Any, is_alive: Any, describe_exit: Any, *, timeout: float | None
) -> Iterator[tuple[Any, ...]]:
    """Events from ``source`` until ``"done"``; raise the job's error or a dead worker's."""
    waited = 0.0
    while True:
        try:
            event = source.get(timeout=_POLL_S)
        except queue_module.Empty:
            if not is_alive():
                try:  # the last events may arrive just after the worker ended
                    event = source.get(timeout=_POLL_S)
                except queue_module.Empty:
                    raise WorkerError(describe_exit()) from None
            else:
                waited += _POLL_S
                if timeout is not None and waited > timeout:
                    raise TimeoutError(
                        f"the ptycho worker sent nothing for {timeout:g} s"
                    ) from None
                continue
        waited = 0.0
        kind = event[0]
        if kind == "log":
            _relay_log(event)
        elif kind == "error":
            _raise_error(event)
        else:
            yield event
            if kind == "done":
                return


def _read_frames(stream: Any, sink: queue_module.Queue[tuple[Any, ...]]) -> None:
    """Reader thread: events from the child's pipe into ``sink`` until end of file."""
    with stream:
        while header := stream.read(FRAME_HEADER.size):
            if len(header) < FRAME_HEADER.size:
                return
            (size,) = FRAME_HEADER.unpack(header)
            payload = stream.read(size)
            if len(payload) < size:
                return
            sink.put(pickle.loads(payload))  # our own child, over a private pipe


def _child_path() -> list[str]:
    """The parent's ``sys.path`` for the child's ``PYTHONPATH``, minus the working directory.

    Ptychodus may be started in any folder, and a ``numpy.py`` lying there must not run in
    the child. So ``''``, ``'.'`` and every entry that resolves to the working directory
    are left out, except the folders this ``ptycho_ptychodus`` and its ``ptycho_core`` were
    imported from (a source checkout started from its own root: the child must run the
    same ptycho). Relative entries are made absolute, since the child runs in another
    directory.
    """
    try:
        cwd: str | None = os.path.realpath(os.getcwd())
    except OSError:  # the working directory was removed: relative entries name nothing
        cwd = None
    own = {
        os.path.realpath(Path(module_file).parents[1])
        for module_file in (__file__, ptycho_core.__file__)
    }
    paths = []
    for entry in sys.path:
        if not entry or (cwd is None and not os.path.isabs(entry)):
            continue
        resolved = os.path.realpath(entry)
        if (resolved != cwd or resolved in own) and os.path.isdir(resolved):
            paths.append(os.path.abspath(entry))
    return paths


def _child_environment() -> dict[str, str]:
    """The parent's environment, with its module search path (as multiprocessing does)."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(_child_path())
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return environment


def _absolute_paths(job: ReconstructJob | TrainJob) -> ReconstructJob | TrainJob:
    """``job`` with its file paths absolute, as the child runs in another directory."""
    if isinstance(job, TrainJob):
        return dataclasses.replace(
            job,
            data_path=os.path.abspath(job.data_path),
            output_path=os.path.abspath(job.output_path),
        )
    return dataclasses.replace(job, bundle=os.path.abspath(job.bundle))


def _in_subprocess(
    job: ReconstructJob | TrainJob, timeout: float | None
) -> Iterator[tuple[Any, ...]]:
    """Run ``job`` in ``python -P -m CHILD_MODULE`` started in a private, empty directory.

    ``-P`` keeps the working directory (where Ptychodus was started) off the child's
    ``sys.path``; with :func:`_child_path` and the private directory, the child imports
    only from where the parent imports (installed packages), never a planted module.
    """
    job = _absolute_paths(job)
    with tempfile.TemporaryDirectory(
        prefix="ptycho-worker-", ignore_cleanup_errors=True
    ) as workdir:
        yield from _run_child(job, workdir, timeout)


def _run_child(
    job: ReconstructJob | TrainJob, workdir: str, timeout: float | None
) -> Iterator[tuple[Any, ...]]:
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", CHILD_MODULE, str(write_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=_child_environment(),
            cwd=workdir,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child holds its own copy; EOF comes when it exits
    events: queue_module.Queue[tuple[Any, ...]] = queue_module.Queue()
    reader = threading.Thread(
        target=_read_frames,
        args=(os.fdopen(read_fd, "rb"), events),
        name="ptycho-worker-events",
        daemon=True,
    )
    reader.start()
    try:
        assert process.stdin is not None
        try:
            with process.stdin:
                pickle.dump(job, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        except BrokenPipeError:
            pass  # the child ended at start-up; the event loop reports how
        yield from _events(
            events,
            reader.is_alive,
            lambda: (
                "the ptycho worker process ended with exit code "
                f"{process.wait(_TERMINATE_GRACE_S)} before finishing (killed, or out of memory?)"
            ),
            timeout=timeout,
        )
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()
        reader.join(_TERMINATE_GRACE_S)


def _in_thread(
    job: ReconstructJob | TrainJob, cache: ModelCache | None, timeout: float | None
) -> Iterator[tuple[Any, ...]]:
    events: queue_module.Queue[tuple[Any, ...]] = queue_module.Queue()
    cancel = threading.Event()

    def target() -> None:
        try:
            execute(job, events.put, cancel=cancel, cache=cache)
        except BaseException as error:
            events.put(error_event(error))

    thread = threading.Thread(target=target, name="ptycho-worker", daemon=True)
    thread.start()
    try:
        yield from _events(
            events,
            thread.is_alive,
            lambda: "the ptycho worker thread ended without a result",
            timeout=timeout,
        )
    finally:
        cancel.set()


def run_job(
    job: ReconstructJob | TrainJob,
    *,
    in_process: bool = False,
    cache: ModelCache | None = None,
    timeout: float | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The events of ``job`` (logs are relayed to the library's logger, not yielded).

    ``in_process`` runs it in a thread of this process (``cache`` then keeps the loaded
    model between calls); otherwise in a child process (``python -P -m CHILD_MODULE``) that
    imports only the worker, ``ptycho_core`` and the selected backend. ``timeout`` bounds the
    silence between two events (None: no bound).
    """
    if in_process:
        return _in_thread(job, cache, timeout)
    return _in_subprocess(job, timeout)
