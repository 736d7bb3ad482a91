"""How a check ends when it does not pass: a broken rule or a check that does not apply."""

from __future__ import annotations

__all__ = ["SPEC", "CheckSkipped", "ConformanceError"]

SPEC = "specs/backend-protocol.md"
"""The specification whose sections the rules cite."""


class ConformanceError(AssertionError):
    """A backend broke a rule of the protocol: names the rule, what was expected and found."""

    def __init__(
        self, rule: str, expected: str, found: str, *, backend: str = "?", section: str = ""
    ) -> None:
        self.rule = rule
        self.expected = expected
        self.found = found
        self.backend = backend
        self.section = section
        where = f" ({SPEC} {section})" if section else ""
        super().__init__(
            f"backend {backend!r} breaks rule '{rule}'{where}: expected {expected}; found {found}"
        )


class CheckSkipped(Exception):
    """A check does not apply to this backend (a declared capability, a missing extra)."""
