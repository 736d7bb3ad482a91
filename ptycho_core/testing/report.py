"""What a run of the kit found: one CheckResult per check and the ConformanceReport of a
backend, as text (``ptycho check-backend``), as JSON (``--json``) or as one error."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ptycho_core.testing.errors import ConformanceError

__all__ = ["CheckResult", "ConformanceReport"]


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """The outcome of one check."""

    check: str
    """Function name, e.g. ``'check_infer_output'``."""
    rule: str
    """Rule name, e.g. ``'infer-output'``."""
    status: str
    """``'passed'``, ``'failed'`` or ``'skipped'``."""
    message: str = ""
    """Why it failed or was skipped."""
    seconds: float = 0.0
    """Time the check took (including artefacts it was the first to need)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class ConformanceReport:
    """All check results for one backend."""

    backend: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks do not fail)."""
        return not self.failures

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "skipped")

    def raise_if_failed(self) -> None:
        """Raise a ConformanceError listing every failed check."""
        if self.failures:
            lines = "\n".join(f"  {r.check}: {r.message}" for r in self.failures)
            raise ConformanceError(
                ", ".join(r.rule for r in self.failures),
                "every check to pass",
                f"{len(self.failures)} failed:\n{lines}",
                backend=self.backend,
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }

    def __str__(self) -> str:
        width = max((len(r.check) for r in self.results), default=0)
        lines = [f"conformance of backend {self.backend!r}:"]
        for r in self.results:
            note = f"  {r.message}" if r.message else ""
            lines.append(f"  {r.status.upper():<7} {r.check:<{width}} {r.seconds:6.2f}s{note}")
        counts = {
            s: sum(r.status == s for r in self.results) for s in ("passed", "failed", "skipped")
        }
        lines.append(
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        )
        return "\n".join(lines)
