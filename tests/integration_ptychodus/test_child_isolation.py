"""The worker process imports nothing from the folder Ptychodus was started in.

Ptychodus may be started in any folder (a downloads or data folder someone else can
write to). A ``numpy.py`` or ``torch.py`` lying there must not be imported by the worker
process, whether the folder reaches it as the working directory or through the parent's
``sys.path``. Each test plants such modules, which write a marker file when imported,
and runs a real training job (the fast ``numpy-gain`` backend) through the child process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ptycho_core.config import TrainingConfig
from ptycho_core.data import PtychoData, save_npz
from ptycho_ptychodus.runner import run_job
from ptycho_ptychodus.worker import TrainJob

pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")

PLANTED = ("numpy", "torch")


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_train: PtychoData) -> Path:
    """The working directory: planted modules, the training data; returns the marker path."""
    folder = tmp_path / "started-here"
    folder.mkdir()
    marker = tmp_path / "imported-a-planted-module"
    for name in PLANTED:
        (folder / f"{name}.py").write_text(
            "import pathlib\n"
            f"pathlib.Path({str(marker)!r}).write_text({name!r})\n"
            f"raise ImportError('planted {name}.py imported')\n"
        )
    save_npz(small_train, folder / "train.npz")
    monkeypatch.chdir(folder)
    return marker


def _train_in_child() -> dict:
    """Train numpy-gain in the child on ``train.npz``; relative paths, as batch mode may pass."""
    job = TrainJob(
        config=TrainingConfig(backend="numpy-gain", nepochs=1, batch_size=16, n_groups=32),
        data_path="train.npz",
        output_path="model.ptycho",
    )
    events = list(run_job(job, timeout=120))
    assert events[-1][0] == "done"
    return events[-1][1]


def test_the_worker_ignores_modules_in_the_working_directory(planted: Path) -> None:
    try:
        result = _train_in_child()
    finally:
        assert not planted.exists(), f"the worker imported a planted {planted.read_text()}.py"
    assert result["backend"] == "numpy-gain"
    assert Path("model.ptycho").is_file()  # relative to where Ptychodus was started


def test_the_working_directory_on_sys_path_is_not_passed_to_the_worker(
    planted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in a parent started with ``python -c`` or from a notebook ('' on sys.path)."""
    monkeypatch.setattr(sys, "path", ["", ".", str(Path.cwd()), *sys.path])
    try:
        _train_in_child()
    finally:
        assert not planted.exists(), f"the worker imported a planted {planted.read_text()}.py"
