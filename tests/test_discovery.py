"""Discovery edge cases as a user meets them: through the ``ptycho`` command.

tests/test_backend_selector.py proves the selector's errors in Python; here each broken
registration of the installed test distributions (tests/plugins/) is selected by a real
``ptycho`` process, which must stop before reading any data with one line that names
the backend, the distribution, the entry point, the cause and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli

DIST = "ptycho-testbackends"
pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")

CASES = {
    # a backend whose framework (its BackendSpec.requires) is not installed
    "needs-missing": [
        "MissingFramework backend selected but ptycho_test_missing_framework module unavailable",
        "entry point needs-missing = ptycho_testbackends.specs:NEEDS_MISSING",
        f"distribution {DIST} ",
        "Install it with: pip install 'ptycho-test-missing-framework>=1'",
    ],
    # a backend whose implementation raises when imported
    "broken-import": [
        "backend 'broken-import': importing ptycho_testbackends.broken:Backend failed",
        "RuntimeError: ptycho_testbackends.broken fails at import on purpose",
        "entry point broken-import = ptycho_testbackends.specs:BROKEN_IMPORT",
        f"distribution {DIST} ",
    ],
    # two distributions register the same name
    "clash": [
        "backend 'clash' is registered by more than one distribution",
        "'ptycho-testbackends' and 'ptycho-testclash'",
        "entry point clash = ptycho_testclash:CLASH (distribution ptycho-testclash 0.2.0)",
        "Uninstall all but one of them",
    ],
    # an entry point that resolves to something that is not a backend
    "not-a-backend": [
        "entry point not-a-backend = ptycho_testbackends.specs:not_a_backend",
        f"(distribution {DIST} ",
        "resolved to function ptycho_testbackends.specs.not_a_backend, which is not a ptycho "
        "backend: it has no 'name' attribute",
        "an entry point must resolve to a BackendSpec, a backend class or a backend instance",
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_selecting_a_broken_registration_is_one_clear_line(name: str, tmp_path: Path) -> None:
    missing_data = tmp_path / "never-read.npz"
    result = run_cli("train", str(missing_data), "--backend", name, "--output-dir", str(tmp_path))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("ptycho train: error: ")
    for fragment in CASES[name]:
        assert fragment in lines[0], (fragment, lines[0])
    assert "never-read.npz" not in lines[0]  # selection failed before any data was read
    assert not list(tmp_path.iterdir())  # and nothing was written


def test_listing_reports_every_broken_registration_without_importing_it() -> None:
    listed: dict[str, list[dict]] = {}
    for entry in json.loads(run_cli("backends", "--json").stdout):
        listed.setdefault(entry["name"], []).append(entry)
    assert listed["needs-missing"][0]["usable"] is False
    assert "Install it with" in listed["needs-missing"][0]["reason"]
    assert [e["distribution"] for e in listed["clash"]] == [DIST, "ptycho-testclash"]
    assert all(not e["usable"] and "name conflict" in e["reason"] for e in listed["clash"])
    assert "which is not a ptycho backend" in listed["not-a-backend"][0]["reason"]
    # listing never imports implementations, so an import error is not visible ...
    assert listed["broken-import"][0]["usable"] is True
    # ... until --verify selects every backend that looks usable
    verified = {e["name"]: e for e in json.loads(run_cli("backends", "--json", "--verify").stdout)}
    assert verified["broken-import"]["usable"] is False
    assert "fails at import on purpose" in verified["broken-import"]["reason"]
    assert verified["numpy-gain"]["usable"] is True
