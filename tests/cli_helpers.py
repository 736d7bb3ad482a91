"""Running the ``ptycho`` console script and Python in child processes, and the one-line
user-error check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PTYCHO = shutil.which("ptycho", path=os.path.dirname(sys.executable)) or "ptycho"
REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ptycho ARGS`` in a child process, its output captured (never raises on failure)."""
    return subprocess.run(
        [PTYCHO, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        timeout=300,
        check=False,
    )


def import_path_env() -> dict[str, str]:
    """Environment for a child Python that imports what this one does: the repository, then
    this interpreter's ``sys.path``; TensorFlow's C++ logs quiet unless a level is chosen."""
    return {
        "PYTHONPATH": os.pathsep.join([str(REPO), *[p for p in sys.path if p]]),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }


def run_python(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with this interpreter in a child process, its output captured (never
    raises on failure); ``env`` is added to this process's environment."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 2, exactly one stderr line, no traceback, holding every fragment."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def quick_train_args(data: Path, output: Path, *, epochs: int = 2) -> list[str]:
    """``ptycho -q train`` arguments for the numpy-only test backend: under a second."""
    return [
        "-q",
        "train",
        str(data),
        "--backend",
        "numpy-gain",
        "--output-dir",
        str(output),
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--n-groups",
        "32",
    ]
