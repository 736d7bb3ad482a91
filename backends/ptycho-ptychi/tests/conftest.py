"""Fixtures of the ptycho-ptychi tests.

The tests use ptycho-ptychi as users do: installed as its own distribution and found
through its ``ptycho.backends`` entry points. An installation that is missing or older
than this source tree fails every test (never skips), naming the command that fixes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ptycho_core.testing.installed import installation_problems

SOURCE = Path(__file__).resolve().parents[1]
INSTALL = f"pip install --no-deps {SOURCE}"
ENTRY_POINTS = {
    "ptychi-lsqml": "ptycho_ptychi:LSQML",
    "ptychi-rpie": "ptycho_ptychi:RPIE",
    "ptychi-dm": "ptycho_ptychi:DM",
}


@pytest.fixture(scope="session", autouse=True)
def ptychi_installed() -> None:
    problems = installation_problems("ptycho-ptychi", SOURCE, "ptycho_ptychi", ENTRY_POINTS)
    if problems:
        pytest.fail(
            "ptycho-ptychi is missing or stale: " + "; ".join(problems) + f". Run: {INSTALL}",
            pytrace=False,
        )
