"""Atomic file replacement and private temporaries that a killed process cannot leak.

A reader sees the old file or the new one, never half of one. Every temporary file or
folder is held under an exclusive ``flock`` for as long as its writer lives; the kernel
drops the lock when the process dies, however it dies. The next writer in the same
place removes every temporary of our naming whose lock it can take: those are the
leftovers of killed writers, while a live writer's lock keeps its own safe.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, so no sweeping
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_path", "held_lock", "private_dir", "sweep"]

_DEFAULT_MODE = 0o644
LOCK_NAME = ".lock"
"""The lock file inside a private folder."""
_INIT_PREFIX = ".ptycho-new-"
_INIT_GRACE_S = 60.0


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when someone holds it."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a file or folder that exists), waiting for it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_abandoned(item: Path) -> bool:
    """True when ``item`` (a temporary file, or a folder with its lock file) has no live owner."""
    target = item / LOCK_NAME if item.is_dir() and not item.is_symlink() else item
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return item.is_dir()  # a folder killed before its lock file existed
    except OSError:
        return False  # not ours to judge (another user's, a link, ...)
    try:
        return _try_lock(fd)
    finally:
        os.close(fd)


def sweep(folder: Path, prefix: str, suffix: str = "", *, remove: bool = True) -> list[Path]:
    """The abandoned temporaries ``prefix*suffix`` in ``folder``, removed unless ``remove``
    is False (the caller then finishes them while it holds their locks' release)."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for item in sorted(folder.iterdir()):
            name = item.name
            if not (name.startswith(prefix) and name.endswith(suffix)) or item.is_symlink():
                continue
            if _is_abandoned(item):
                if remove:
                    _remove(item)
                found.append(item)
        for item in folder.glob(f"{_INIT_PREFIX}*"):  # killed between creation and lock
            with contextlib.suppress(OSError):
                if time.time() - item.lstat().st_mtime > _INIT_GRACE_S:
                    _remove(item)
    return found


def _remove(item: Path) -> None:
    if item.is_dir() and not item.is_symlink():
        shutil.rmtree(item, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            item.unlink()


def _locked_temporary(where: Path, prefix: str, suffix: str, *, folder: bool) -> tuple[Path, int]:
    """Create a temporary named ``prefix…suffix`` in ``where`` that is locked before it
    carries that name (so a sweeper never sees it unlocked); return it and the lock's fd."""
    if folder:
        made = Path(tempfile.mkdtemp(prefix=_INIT_PREFIX, dir=where))
        fd = os.open(made / LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o600)
    else:
        fd, name = tempfile.mkstemp(prefix=_INIT_PREFIX, dir=where)
        made = Path(name)
    _try_lock(fd)
    final = where / f"{prefix}{made.name[len(_INIT_PREFIX) :]}{suffix}"
    os.rename(made, final)
    return final, fd


@contextlib.contextmanager
def private_dir(
    prefix: str, parent: Path | None = None, *, sweep_abandoned: bool = True
) -> Iterator[Path]:
    """A fresh folder (mode 0700) locked for the block's lifetime, then deleted.

    Abandoned folders with the same prefix in ``parent`` (the system temporary folder
    by default) are removed first, unless ``sweep_abandoned`` is False (the caller then
    recovers them itself, e.g. rolls a decided output set forward).
    """
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    if sweep_abandoned:
        sweep(where, prefix)
    folder, fd = _locked_temporary(where, prefix, "", folder=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The temporary file lives in the destination folder so the final ``os.replace`` is a
    same-filesystem rename (which replaces a link at ``path`` rather than following
    it). On any exception the temporary file is removed and the previous content of
    ``path`` is untouched; a killed writer's temporary is removed by the next write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    sweep(target.parent, prefix, ".tmp")
    tmp, fd = _locked_temporary(target.parent, prefix, ".tmp", folder=False)
    try:
        # mkstemp creates 0600 files; keep the permissions a plain open() would have given.
        mode = target.stat().st_mode & 0o777 if target.exists() else _DEFAULT_MODE
        os.chmod(tmp, mode)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)
