"""Output sets: the files one command writes appear together or not at all.

A command (``ptycho train``, ``infer``, ``demo``) writes its files into a private
staging folder inside the output folder. When every file is written, the set is
*committed*: a ``.commit`` list is written into the staging folder (from then on the
set is decided), then each file is renamed over its namesake and the staging folder is
removed. Commits into one folder are serialised by a lock on the folder, so two
concurrent runs cannot interleave their files; the last to commit wins, whole.

A process killed before its commit leaves a staging folder without ``.commit``: the
next writer to the folder deletes it (the old set stays). One killed during its commit
leaves a ``.commit`` list: the next writer finishes the renames (roll forward). Either
way, after the next run the folder holds a complete old or new set and nothing else.
Renames replace links instead of following them, so no output escapes the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from ptycho_core._atomic import LOCK_NAME, held_lock, private_dir, sweep
from ptycho_core.errors import PtychoError

__all__ = ["STAGING_PREFIX", "OutputError", "output_set", "prepare_output_dir"]

STAGING_PREFIX = ".ptycho-staging-"
_COMMIT_NAME = ".commit"


class OutputError(PtychoError, OSError):
    """The output folder cannot take the command's outputs (not writable, a name taken)."""


def _staged_files(staging: Path) -> list[str]:
    """Relative names of the regular files staged, excluding our bookkeeping files."""
    names = []
    for folder, _, files in os.walk(staging):
        for name in files:
            relative = (Path(folder) / name).relative_to(staging).as_posix()
            if relative not in (LOCK_NAME, _COMMIT_NAME):
                names.append(relative)
    return sorted(names)


def _finish(staging: Path, directory: Path) -> None:
    """Roll a decided set forward: move each file still staged over its namesake."""
    try:
        names = json.loads((staging / _COMMIT_NAME).read_text())
    except (OSError, ValueError):
        names = []  # no decided set: the staging folder is only removed
    names = [str(name) for name in names] if isinstance(names, list) else []
    names = [name for name in names if _is_inside(name)]  # a planted list cannot escape
    _check_targets(directory, names)
    for name in names:
        source = staging / name
        if source.is_file() and not source.is_symlink():
            destination = directory / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
    shutil.rmtree(staging, ignore_errors=True)


def _is_inside(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _recover(directory: Path) -> None:
    """Finish or discard the staging folders of killed writers (caller holds the lock)."""
    for staging in sweep(directory, STAGING_PREFIX, remove=False):
        _finish(staging, directory)


def prepare_output_dir(directory: str | os.PathLike[str]) -> Path:
    """Prove ``directory`` writable and clean up after killed runs; return it as a Path.

    Called before any computation, so a run is not lost to an output folder it could
    never have written. A folder that does not exist yet is not created here (a run
    refused later leaves nothing behind); its nearest existing parent must be writable.
    """
    folder = Path(directory)
    try:
        if not folder.exists():
            parent = next(p for p in folder.absolute().parents if p.exists())
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot create folders in {parent}")
            return folder
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a folder")
        with private_dir(STAGING_PREFIX, folder, sweep_abandoned=False):
            pass
        with held_lock(folder):
            _recover(folder)
    except OSError as error:
        raise OutputError(f"output folder {folder}: cannot write there ({error})") from error
    return folder


def _check_targets(directory: Path, names: list[str]) -> None:
    """Refuse names taken by a folder, or reached through a link, before any rename."""
    for name in names:
        target = directory / name
        with contextlib.suppress(FileNotFoundError):
            mode = target.lstat().st_mode
            if stat.S_ISDIR(mode):
                raise OutputError(
                    f"output folder {directory}: {name!r} is a folder; cannot replace it by a file"
                )
        parent = target.parent
        while parent != directory:
            if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                raise OutputError(
                    f"output folder {directory}: {parent.relative_to(directory)} is a link or "
                    "not a folder; outputs are never written through a link"
                )
            parent = parent.parent


@contextlib.contextmanager
def output_set(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging folder; on success its files replace theirs in ``directory`` as a set.

    On an exception nothing in ``directory`` changes and the staging folder is removed.
    """
    folder = prepare_output_dir(directory)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with private_dir(STAGING_PREFIX, folder, sweep_abandoned=False) as staging:
            yield staging
            names = _staged_files(staging)
            with held_lock(folder):
                _check_targets(folder, names)
                commit = staging / f"{_COMMIT_NAME}.tmp"
                commit.write_text(json.dumps(names))
                os.replace(commit, staging / _COMMIT_NAME)
                _finish(staging, folder)
    except BaseException:
        for path in created:  # a failed run leaves no empty folder behind
            try:
                path.rmdir()
            except OSError:
                break
        raise
