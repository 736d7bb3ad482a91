"""Selecting one backend never imports the other framework (fresh interpreters)."""

from __future__ import annotations

import importlib.metadata
import subprocess

import pytest
from cli_helpers import import_path_env, run_python

CODE = """
import sys
{load}
present = sorted(m for m in {forbidden!r} if m in sys.modules)
assert not present, f"{{present}} imported"
assert {needed!r} in sys.modules
print("ok")
"""


def _run(load: str, forbidden: tuple[str, ...], needed: str) -> subprocess.CompletedProcess:
    code = CODE.format(load=load, forbidden=forbidden, needed=needed)
    return run_python("-c", code, env=import_path_env(), timeout=180)


@pytest.mark.parametrize(
    ("load", "forbidden", "needed"),
    [
        (
            "from ptycho_tf.backend import TensorFlowBackend; TensorFlowBackend()",
            ("torch", "lightning"),
            "tensorflow",
        ),
        (
            "from ptycho_torch.backend import TorchBackend; TorchBackend()",
            ("tensorflow", "keras"),
            "torch",
        ),
        ("import ptycho_core.convert, ptycho_tf.convert", ("torch", "lightning"), "keras"),
        ("import ptycho_core.convert, ptycho_torch.convert", ("tensorflow", "keras"), "lightning"),
    ],
    ids=["tf-module", "torch-module", "tf-convert", "torch-convert"],
)
def test_backend_modules_import_only_their_framework(
    load: str, forbidden: tuple[str, ...], needed: str
) -> None:
    done = _run(load, forbidden, needed)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _registered() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="ptycho.backends")}


@pytest.mark.parametrize(
    ("name", "forbidden", "needed"),
    [
        ("tensorflow", ("torch", "lightning"), "tensorflow"),
        ("pytorch", ("tensorflow", "keras"), "torch"),
    ],
)
def test_selecting_a_backend_by_name_imports_only_its_framework(
    name: str, forbidden: tuple[str, ...], needed: str
) -> None:
    assert name in _registered(), (
        f"backend {name!r} is not registered: add it to [project.entry-points.'ptycho.backends'] in "
        "pyproject.toml and reinstall (pip install -e .)"
    )
    load = f"from ptycho_core.backend_selector import select_backend; assert select_backend({name!r}).name == {name!r}"
    done = _run(load, forbidden, needed)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
