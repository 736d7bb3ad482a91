"""Tests of the Ptychodus adapter against the real, installed Ptychodus (no mocks of it).

Skipped as a whole where Ptychodus is not installed (every tox env but ``ptychodus``).
Ptychodus is run headless: ``ModelCore`` and the batch command line, no Qt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

# A submodule: a bare "ptychodus" would also find this folder (tests/ is on sys.path) as a
# namespace package where Ptychodus is not installed.
pytest.importorskip("ptychodus.api.reconstruct")

from helpers_ptychodus import Captured

from ptycho_core.data import PtychoData
from ptycho_core.simulate import default_dataset
from ptycho_ptychodus import LOGGER_NAME, launcher

HERE = Path(__file__).parent

# Warnings raised inside Ptychodus itself (not by ptycho), ignored for these tests only.
PTYCHODUS_WARNINGS = (
    # ptychodus/plugins/mda/mda_position_file.py imports xdrlib (Ptychodus 1.7.0).
    "ignore:'xdrlib' is deprecated:DeprecationWarning",
)


# Needs ptycho-ptychi, which only the `ptychi` tox env installs (with Ptychodus); that env
# names this file. A run of the folder (the `ptychodus` env) leaves it out; named, it runs
# and fails where ptycho-ptychi is missing.
ONLY_WHEN_NAMED = "test_ptychodus_ptychi.py"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name != ONLY_WHEN_NAMED:
        return None
    base = config.invocation_params.dir
    named = {(base / arg.split("::")[0]).resolve() for arg in config.args}
    return True if collection_path.resolve() not in named else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            for spec in PTYCHODUS_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture(scope="session")
def installed() -> Iterator[None]:
    """Ptychodus patched by the launcher for the whole session (as ptycho-ptychodus does)."""
    was_installed = launcher.installed()
    launcher.install()
    yield
    if not was_installed:
        launcher.uninstall()


@pytest.fixture(scope="session")
def small_train() -> PtychoData:
    """A small simulated training set (N = 64, 128 positions)."""
    return default_dataset("train", N=64, n_positions=128)


@pytest.fixture(scope="session")
def small_test() -> PtychoData:
    """A small simulated test set: another object than the training one."""
    return default_dataset("test", N=64, n_positions=96)


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Records logged by the adapter's library logger (what Ptychodus's log shows)."""
    handler = Captured()
    log = logging.getLogger(LOGGER_NAME)
    previous = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield handler
    log.removeHandler(handler)
    log.setLevel(previous)


@pytest.fixture
def model_core(installed):
    """Build and enter a real Ptychodus ``ModelCore`` (the launcher's patch applied)."""
    from contextlib import ExitStack

    from ptychodus.model import ModelCore

    with ExitStack() as stack:

        def make(settings_file=None):
            return stack.enter_context(ModelCore(settings_file, log_level=logging.INFO))

        yield make
