"""The backend conformance kit: does a backend honour specs/backend-protocol.md?

Every backend, in-tree or third-party, can be checked with one call or one pytest
decorator (the design follows scikit-learn's ``check_estimator`` /
``parametrize_with_checks``)::

    from ptycho_core.testing import check_backend
    report = check_backend("epie")          # an entry point name, a class or an instance
    print(report)                           # one line per check
    report.raise_if_failed()                # ConformanceError listing every broken rule

    # in a test file: one test per (backend, check), selectable with pytest -k
    from ptycho_core.testing import parametrize_with_checks

    @parametrize_with_checks(["epie"])
    def test_conformance(backend, check):
        check(backend)

or from the shell: ``ptycho check-backend epie``.

The checks use the backend only through the public protocol, on a tiny simulated
dataset (``ptycho_core.simulate``): train, infer, save, load, the hooks, the bundle
manifest, the errors for wrong inputs, determinism, and what selecting it imports.
Each check is a named function taking a :class:`BackendHarness`; a broken rule raises
:class:`ConformanceError` (an ``AssertionError``) naming the rule, what was expected
and what was found. A backend may declare ``capabilities`` (see
:data:`KNOWN_CAPABILITIES`) so that checks of features it does not offer are skipped
with a reason instead of failing. The optional protocols (warm start, initial object)
are checked only for a backend that implements them (``isinstance`` against
:class:`~ptycho_core.protocol.SupportsWarmStart` and
:class:`~ptycho_core.protocol.SupportsInitialObject`).

numpy only: pytest is imported lazily, inside the pytest-facing helpers.

Everything public is importable from here; the modules, one per job:

- :mod:`.errors`: ConformanceError and CheckSkipped;
- :mod:`.data`: the simulated data, the configs of every run and the forged inputs;
- :mod:`.harness`: BackendHarness (a backend under test and its shared artefacts),
  HookRecorder and KNOWN_CAPABILITIES;
- :mod:`.checks`: the checks, one module per theme, and CHECKS;
- :mod:`.report`: CheckResult and ConformanceReport;
- :mod:`.runner`: run_check, check_backend and backend_checks;
- :mod:`.parametrize`: parametrize_with_checks, the pytest glue.
"""

from __future__ import annotations

from ptycho_core.testing.checks import (
    CHECKS,
    check_bundle_manifest,
    check_epoch_end_hook,
    check_forward,
    check_infer_deterministic,
    check_infer_from,
    check_infer_from_rejects_foreign_model,
    check_infer_output,
    check_infer_progress,
    check_infer_rejects_foreign_model,
    check_infer_rejects_wrong_gridsize,
    check_infer_rejects_wrong_n,
    check_inputs_unchanged,
    check_load_rejects_corrupt_bundle,
    check_load_rejects_foreign_bundle,
    check_protocol,
    check_save_load_round_trip,
    check_save_rejects_foreign_model,
    check_selection_imports,
    check_train_deterministic,
    check_train_end_hook,
    check_train_rejects_mismatch,
    check_train_start_hook,
    check_trained_model,
    check_unknown_option,
    check_warm_start,
    check_warm_start_rejects_mismatch,
)
from ptycho_core.testing.data import FOREIGN_BACKEND
from ptycho_core.testing.errors import SPEC, CheckSkipped, ConformanceError
from ptycho_core.testing.harness import KNOWN_CAPABILITIES, BackendHarness, HookRecorder
from ptycho_core.testing.parametrize import parametrize_with_checks
from ptycho_core.testing.report import CheckResult, ConformanceReport
from ptycho_core.testing.runner import backend_checks, check_backend, run_check

__all__ = [
    "CHECKS",
    "FOREIGN_BACKEND",
    "KNOWN_CAPABILITIES",
    "SPEC",
    "BackendHarness",
    "CheckResult",
    "CheckSkipped",
    "ConformanceError",
    "ConformanceReport",
    "HookRecorder",
    "backend_checks",
    "check_backend",
    "check_bundle_manifest",
    "check_epoch_end_hook",
    "check_forward",
    "check_infer_deterministic",
    "check_infer_from",
    "check_infer_from_rejects_foreign_model",
    "check_infer_output",
    "check_infer_progress",
    "check_infer_rejects_foreign_model",
    "check_infer_rejects_wrong_gridsize",
    "check_infer_rejects_wrong_n",
    "check_inputs_unchanged",
    "check_load_rejects_corrupt_bundle",
    "check_load_rejects_foreign_bundle",
    "check_protocol",
    "check_save_load_round_trip",
    "check_save_rejects_foreign_model",
    "check_selection_imports",
    "check_train_deterministic",
    "check_train_end_hook",
    "check_train_rejects_mismatch",
    "check_train_start_hook",
    "check_trained_model",
    "check_unknown_option",
    "check_warm_start",
    "check_warm_start_rejects_mismatch",
    "parametrize_with_checks",
    "run_check",
]
