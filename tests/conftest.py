"""Shared pytest fixtures (the lead extends this file).

Test distributions: the selector and bundle tests use real installed distributions
that register real ``ptycho.backends`` entry points (tests/plugins/). They are
installed non-editable, so an edited plugin must be reinstalled; the fixture below
fails (never skips) when they are missing or older than their source.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"
TEST_DISTRIBUTIONS = {
    "ptycho-testbackends": PLUGINS / "ptycho-testbackends",
    "ptycho-testclash": PLUGINS / "ptycho-testclash",
}
INSTALL_COMMAND = (
    ".venv/bin/pip install --no-deps --no-build-isolation "
    "tests/plugins/ptycho-testbackends tests/plugins/ptycho-testclash"
)


def _test_distribution_problems() -> list[str]:
    """Why the installed test distributions do not match tests/plugins/ (empty when fine)."""
    problems = []
    for name, source in TEST_DISTRIBUTIONS.items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"distribution {name!r} is not installed")
            continue
        project = tomllib.loads((source / "pyproject.toml").read_text())
        declared = project["project"]["entry-points"]["ptycho.backends"]
        installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "ptycho.backends"}
        if declared != installed:
            problems.append(f"{name}: installed entry points differ from {source}/pyproject.toml")
        for package in project["tool"]["setuptools"]["packages"]:
            for file in sorted((source / package).rglob("*.py")):
                relative = file.relative_to(source)
                copy = Path(str(dist.locate_file(relative)))
                if not copy.is_file() or copy.read_bytes() != file.read_bytes():
                    problems.append(f"{name}: installed {relative} differs from the source")
    return problems


@pytest.fixture(scope="session")
def ptycho_test_distributions() -> None:
    """Fail every test that needs the test backends when they are absent or stale."""
    problems = _test_distribution_problems()
    if problems:
        pytest.fail(
            "the test backend distributions are missing or stale: "
            + "; ".join(problems)
            + f". Install them (from the repository root) with: {INSTALL_COMMAND}",
            pytrace=False,
        )
