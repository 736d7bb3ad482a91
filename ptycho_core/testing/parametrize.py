"""The pytest glue: one test per (backend, check), with ids ``NAME-check_x``.

pytest is imported only when these are used, so the rest of the kit needs numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ptycho_core.testing.checks import select_checks
from ptycho_core.testing.data import DEFAULT_GRIDSIZE, DEFAULT_N
from ptycho_core.testing.errors import CheckSkipped
from ptycho_core.testing.harness import BackendHarness, Check
from ptycho_core.testing.runner import backend_checks

__all__ = ["parametrize_with_checks"]


class _PytestCheck:
    """A check that turns CheckSkipped into pytest.skip (so a skip shows its reason)."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.__name__ = check.__name__
        self.rule = getattr(check, "rule", check.__name__)

    def __call__(self, harness: BackendHarness) -> None:
        import pytest

        try:
            self.check(harness)
        except CheckSkipped as skip:
            pytest.skip(str(skip))

    def __repr__(self) -> str:
        return self.__name__


def parametrize_with_checks(
    backends: Sequence[str | type | object],
    *,
    N: int = DEFAULT_N,
    gridsize: int = DEFAULT_GRIDSIZE,
    checks: Iterable[str | Check] | None = None,
) -> Any:
    """A ``pytest.mark.parametrize`` over (backend, check) with ids ``NAME-check_x``.

    ::

        @parametrize_with_checks(["epie"])
        def test_conformance(backend, check):
            check(backend)

    ``pytest -k infer_output`` then runs one check. Backends are selected lazily, when
    the first check runs.
    """
    import pytest

    selected = select_checks(checks)
    params = []
    for backend in backends:
        for harness, check in backend_checks(backend, N=N, gridsize=gridsize, checks=selected):
            params.append(
                pytest.param(harness, _PytestCheck(check), id=f"{harness.name}-{check.__name__}")
            )
    return pytest.mark.parametrize(("backend", "check"), params)
