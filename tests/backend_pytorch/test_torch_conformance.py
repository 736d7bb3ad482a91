"""The PyTorch backend passes the conformance kit, selected by its entry point name.

One test per check (``pytest -k pytorch-check_infer_output`` runs one); skipped with the
rest of tests/backend_pytorch where torch or Lightning is missing (conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable

from ptycho_core.testing import BackendHarness, parametrize_with_checks


@parametrize_with_checks(["pytorch"])
def test_pytorch_conformance(backend: BackendHarness, check: Callable) -> None:
    check(backend)
