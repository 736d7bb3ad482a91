"""The documents that describe the tox matrix list exactly the environments of tox.ini."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def env_list() -> list[str]:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    return [name.strip() for name in tox["tox"]["env_list"].split(",")]


def test_the_readme_table_lists_every_tox_environment() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| environment |") :].split("\n\n", 1)[0]
    assert re.findall(r"^\| `([\w-]+)` \|", table, flags=re.MULTILINE) == env_list()


@pytest.mark.parametrize("document", ["ci/run-tests.sh", "ci/README.md"])
def test_the_ci_documents_name_every_tox_environment_in_order(document: str) -> None:
    text = (REPO / document).read_text()
    assert ", ".join(env_list()) in re.sub(r"[`#\s]+", " ", text).replace(" ,", ","), document


def test_ruff_is_pinned_once_and_the_lint_env_installs_that_pin() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (pin,) = extras["lint"]
    assert re.fullmatch(r"ruff==[\d.]+", pin)
    others = [r for name, deps in extras.items() if name != "lint" for r in deps]
    assert not [r for r in others if r.startswith("ruff")]
    assert "ptycho[lint]" in extras["dev"]
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    lint = tox["testenv:lint"]
    assert lint.get("extras", "").split() == ["lint"] and "ruff" not in lint.get("deps", "")


def test_ci_runs_the_readme_test_command() -> None:
    entry = (REPO / ".ci" / "run").read_text()
    assert entry.rstrip().splitlines()[-1] == "exec ci/run-tests.sh"
    assert "\nci/run-tests.sh\n" in (REPO / "README.md").read_text()
