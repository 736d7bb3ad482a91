"""Running checks on a backend: one check (:func:`run_check`), all of them into a report
(:func:`check_backend`), or (harness, check) pairs for a test runner (:func:`backend_checks`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator

from ptycho_core.testing.checks import select_checks
from ptycho_core.testing.data import DEFAULT_GRIDSIZE, DEFAULT_N
from ptycho_core.testing.errors import CheckSkipped, ConformanceError
from ptycho_core.testing.harness import BackendHarness, Check
from ptycho_core.testing.report import CheckResult, ConformanceReport

__all__ = ["backend_checks", "check_backend", "run_check"]


def run_check(harness: BackendHarness, check: Check) -> CheckResult:
    """Run one check and return its result (never raises for a backend's fault)."""
    rule = getattr(check, "rule", check.__name__)
    start = time.perf_counter()
    try:
        check(harness)
    except CheckSkipped as skip:
        status, message = "skipped", str(skip)
    except ConformanceError as error:
        status, message = "failed", str(error)
    except Exception as error:
        status = "failed"
        message = (
            f"backend {harness.name!r}: check {check.__name__} raised "
            f"{type(error).__name__}: {error}"
        )
    else:
        status, message = "passed", ""
    return CheckResult(
        check=check.__name__,
        rule=rule,
        status=status,
        message=message,
        seconds=time.perf_counter() - start,
    )


def check_backend(
    name_or_class: str | type | object,
    *,
    N: int = DEFAULT_N,
    gridsize: int = DEFAULT_GRIDSIZE,
    tmp_dir: str | os.PathLike[str] | None = None,
    checks: Iterable[str | Check] | None = None,
) -> ConformanceReport:
    """Run the conformance checks on a backend and return the report.

    ``name_or_class``: an entry point name (selected as users select it), a backend
    class or an instance. ``checks``: names (``'check_infer_output'``, the rule
    ``'infer-output'`` or ``'infer_output'``) or functions; all by default. Bundles go
    to ``tmp_dir`` (kept) or to a temporary folder (deleted). Call
    :meth:`ConformanceReport.raise_if_failed` to turn failures into an error.
    """
    selected = select_checks(checks)
    harness = BackendHarness(name_or_class, N=N, gridsize=gridsize, tmp_dir=tmp_dir)
    try:
        results = tuple(run_check(harness, check) for check in selected)
    finally:
        harness.close()
    return ConformanceReport(backend=harness.name, results=results)


def backend_checks(
    backend: str | type | object,
    *,
    N: int = DEFAULT_N,
    gridsize: int = DEFAULT_GRIDSIZE,
    checks: Iterable[str | Check] | None = None,
) -> Iterator[tuple[BackendHarness, Check]]:
    """(harness, check) pairs for one backend; the harness is shared, so the artefacts
    (training, inference, bundle) are computed once, by the first check that needs them.
    Call ``check(harness)``: it raises ConformanceError or CheckSkipped."""
    harness = BackendHarness(backend, N=N, gridsize=gridsize)
    for check in select_checks(checks):
        yield harness, check
