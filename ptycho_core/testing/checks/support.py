"""What the checks are made of: the rule decorator, failures, expected refusals, histories."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ptycho_core.testing.errors import ConformanceError
from ptycho_core.testing.harness import BackendHarness, Check

__all__ = [
    "expect_raises",
    "fail",
    "history_lists",
    "rule_check",
    "same_history",
    "short",
]


def rule_check(rule: str, section: str) -> Callable[[Check], Check]:
    """Mark a function as the check of ``rule`` (spec section ``section``).

    The function gets the attributes ``rule`` and ``section``, which :func:`fail` puts in
    the ConformanceError and the report shows.
    """

    def mark(function: Check) -> Check:
        function.rule = rule  # type: ignore[attr-defined]
        function.section = section  # type: ignore[attr-defined]
        return function

    return mark


def fail(h: BackendHarness, check: Any, expected: str, found: str) -> ConformanceError:
    """The ConformanceError of ``check`` (marked with :func:`rule_check`) for ``h``'s backend."""
    return h.error(check.rule, expected, found, check.section)


def require_patches(h: BackendHarness, check: Any, out: Any, shape: tuple[int, ...]) -> None:
    """Fail ``check`` unless ``out`` is a finite complex64 numpy array of ``shape``."""
    if type(out) is not np.ndarray or out.dtype != np.complex64 or out.shape != shape:
        raise fail(
            h,
            check,
            f"a complex64 numpy array of shape {shape}",
            f"{type(out).__name__} {getattr(out, 'dtype', '?')} {getattr(out, 'shape', '?')}",
        )
    if not np.all(np.isfinite(out)):
        raise fail(h, check, "finite values", "NaN or inf")


def short(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters with ``...`` for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def expect_raises(
    h: BackendHarness,
    check: Any,
    action: Callable[[], Any],
    kind: type[BaseException],
    what: str,
    must_name: Sequence[str] = (),
) -> BaseException:
    """Run ``action``; it must raise ``kind`` whose message contains every ``must_name``.

    Returns the exception. Another exception, a message without a ``must_name`` or a
    return fails ``check``, the message describing the call as ``what``.
    """
    try:
        result = action()
    except kind as error:
        message = str(error)
        missing = [text for text in must_name if text not in message]
        if missing:
            raise fail(
                h,
                check,
                f"{what} to raise {kind.__name__} naming {', '.join(map(repr, must_name))}",
                f"{type(error).__name__} without {', '.join(map(repr, missing))}: {message!r}",
            ) from error
        return error
    except Exception as error:
        raise fail(
            h, check, f"{what} to raise {kind.__name__}", f"{type(error).__name__}: {error}"
        ) from error
    raise fail(h, check, f"{what} to raise {kind.__name__}", f"it returned {short(result, 60)}")


def history_lists(history: Any) -> dict[str, list[float]] | None:
    """A training history as ``{name: [float, ...]}``, or None when it is not one."""
    if not isinstance(history, Mapping):
        return None
    try:
        return {str(k): [float(x) for x in v] for k, v in history.items()}
    except (TypeError, ValueError):
        return None


def same_history(a: Any, b: Any) -> bool:
    """Whether two histories hold the same names and values (NaN equal to NaN)."""
    la, lb = history_lists(a), history_lists(b)
    if la is None or lb is None or la.keys() != lb.keys():
        return False
    return all(
        len(la[k]) == len(lb[k])
        and all(
            x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(la[k], lb[k], strict=True)
        )
        for k in la
    )
