"""Tests of the ONNX deployment backend; skipped as a whole where ONNX Runtime is missing.

The exports these tests run are made where both frameworks are installed
(``handover.py``): tox's `onnx` env, which has neither, is handed a folder made by the
`both` env's Python (``PTYCHO_ONNX_HANDOVER``); elsewhere the fixture makes it, and fails
(never skips) when it can do neither.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

HANDOVER_VARIABLE = "PTYCHO_ONNX_HANDOVER"


@pytest.fixture(scope="session")
def handover(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of exports and the source backends' reference outputs (handover.py)."""
    from handover import FILES, make_handover

    given = os.environ.get(HANDOVER_VARIABLE)
    if given:
        folder = Path(given)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            pytest.fail(
                f"{HANDOVER_VARIABLE}={given}: {', '.join(missing)} missing; make the folder with "
                "`python tests/backend_onnx/handover.py FOLDER` where torch and tensorflow are "
                "installed",
                pytrace=False,
            )
        return folder
    frameworks = ("torch", "lightning", "tensorflow", "keras", "onnx")
    absent = [name for name in frameworks if importlib.util.find_spec(name) is None]
    if absent:
        pytest.fail(
            f"the exports these tests run need {', '.join(absent)} to be made here, or a folder "
            f"made elsewhere in {HANDOVER_VARIABLE} (tox's `onnx` env makes one with the "
            "`both` env's Python)",
            pytrace=False,
        )
    return make_handover(tmp_path_factory.mktemp("onnx-handover"))
