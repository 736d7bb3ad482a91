"""The TensorFlow backend passes the conformance kit, selected by its entry point name.

One test per check (``pytest -k tensorflow-check_infer_output`` runs one); skipped with
the rest of tests/backend_tensorflow where TensorFlow or Keras is missing (conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable

from ptycho_core.testing import BackendHarness, parametrize_with_checks


@parametrize_with_checks(["tensorflow"])
def test_tensorflow_conformance(backend: BackendHarness, check: Callable) -> None:
    check(backend)
