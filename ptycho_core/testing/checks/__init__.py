"""Every check of the conformance kit, in the order :func:`check_backend` runs them.

One module per theme: :mod:`.protocol` (what the backend is, what selecting it imports),
:mod:`.training` (hooks and the returned model), :mod:`.inference` (patches, progress,
untouched inputs), :mod:`.determinism`, :mod:`.refusals` (wrong inputs and their errors),
:mod:`.persistence` (save, load, the manifest) and :mod:`.optional` (``forward``, warm
start, initial object); :mod:`.support` holds what they are made of.
"""

from __future__ import annotations

from collections.abc import Iterable

from ptycho_core.errors import ConfigError
from ptycho_core.testing.checks.determinism import (
    check_infer_deterministic,
    check_train_deterministic,
)
from ptycho_core.testing.checks.inference import (
    check_infer_output,
    check_infer_progress,
    check_inputs_unchanged,
)
from ptycho_core.testing.checks.optional import (
    check_forward,
    check_infer_from,
    check_infer_from_rejects_foreign_model,
    check_warm_start,
    check_warm_start_rejects_mismatch,
)
from ptycho_core.testing.checks.persistence import (
    check_bundle_manifest,
    check_save_load_round_trip,
)
from ptycho_core.testing.checks.protocol import check_protocol, check_selection_imports
from ptycho_core.testing.checks.refusals import (
    check_infer_rejects_foreign_model,
    check_infer_rejects_wrong_gridsize,
    check_infer_rejects_wrong_n,
    check_load_rejects_corrupt_bundle,
    check_load_rejects_foreign_bundle,
    check_save_rejects_foreign_model,
    check_train_rejects_mismatch,
    check_unknown_option,
)
from ptycho_core.testing.checks.training import (
    check_epoch_end_hook,
    check_train_end_hook,
    check_train_start_hook,
    check_trained_model,
)
from ptycho_core.testing.harness import Check

__all__ = [
    "CHECKS",
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
    "select_checks",
]

CHECKS: tuple[Check, ...] = (
    check_protocol,
    check_selection_imports,
    check_train_start_hook,
    check_epoch_end_hook,
    check_train_end_hook,
    check_trained_model,
    check_train_rejects_mismatch,
    check_train_deterministic,
    check_infer_output,
    check_infer_progress,
    check_infer_deterministic,
    check_infer_rejects_wrong_n,
    check_infer_rejects_wrong_gridsize,
    check_infer_rejects_foreign_model,
    check_unknown_option,
    check_inputs_unchanged,
    check_save_load_round_trip,
    check_bundle_manifest,
    check_save_rejects_foreign_model,
    check_load_rejects_foreign_bundle,
    check_load_rejects_corrupt_bundle,
    check_forward,
    check_warm_start,
    check_warm_start_rejects_mismatch,
    check_infer_from,
    check_infer_from_rejects_foreign_model,
)
"""Every check, in the order :func:`check_backend` runs them."""


def select_checks(checks: Iterable[str | Check] | None) -> tuple[Check, ...]:
    """The checks to run: all of :data:`CHECKS` for None, else each item in order.

    An item is a check function (run as given) or the name of one of :data:`CHECKS`: its
    function name (``'check_infer_output'``), its rule (``'infer-output'``) or its function
    name without ``check_`` (``'infer_output'``). An unknown name raises ConfigError (a ValueError)
    listing the known checks.
    """
    if checks is None:
        return CHECKS
    by_name: dict[str, Check] = {}
    for check in CHECKS:
        by_name[check.__name__] = check
        by_name[check.rule] = check  # type: ignore[attr-defined]
        by_name[check.__name__.removeprefix("check_")] = check
    chosen = []
    for item in checks:
        if callable(item):
            chosen.append(item)
        elif item in by_name:
            chosen.append(by_name[item])
        else:
            raise ConfigError(
                f"check_backend: unknown check {item!r}; known checks: "
                f"{', '.join(c.__name__ for c in CHECKS)}"
            )
    return tuple(chosen)
