"""Backend options: settings that only one backend understands, declared and checked.

A config's ``backend_options`` (:class:`~ptycho_core.config.BackendOptions`) carries them
from a config file or ``ptycho train --option NAME=VALUE`` to the backend. A backend
declares what it accepts as class attributes, one :class:`BackendOption` per name::

    class MyBackend:
        training_options = (
            BackendOption("probe_modes", "incoherent probe modes", int_in(1, 8), default=1),
        )
        inference_options = ()

and resolves a config's options first thing in every method that takes a config::

    options = resolve_backend_options(
        self.name, config.backend_options, self.training_options,
        field="TrainingConfig.backend_options",
    )

An unknown name or an invalid value raises :class:`~ptycho_core.errors.ConfigError`; the
protocol forbids ignoring a setting, so a backend that declares nothing still resolves
(against no declarations) and so refuses every option (specs/backend-protocol.md §11).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ptycho_core.config import (
    _bool,
    _int_in,
    _one_of,
    _real_in,
    _short,
    option_name_problem,
    option_value_problem,
)
from ptycho_core.errors import ConfigError

__all__ = [
    "OPTION_KINDS",
    "BackendOption",
    "Check",
    "boolean",
    "declared_options",
    "int_in",
    "one_of",
    "real_in",
    "resolve_backend_options",
    "string",
]

Check = Callable[[Any], str | None]
"""A value check: None when the value is fine, else a short description of what is expected."""

OPTION_KINDS: Mapping[str, str] = {
    "training": "training_options",
    "inference": "inference_options",
}
"""``declared_options`` kinds and the backend attribute that declares each."""

int_in: Callable[[int, int], Check] = _int_in
"""``int_in(low, high)``: an integer (not a bool) in ``[low, high]``."""
real_in: Callable[..., Check] = _real_in
"""``real_in(low, high, *, low_open=False, high_open=False)``: a finite number in the interval."""
one_of: Callable[[tuple[Any, ...]], Check] = _one_of
"""``one_of(choices)``: one of the given strings or integers."""
boolean: Check = _bool
"""True or False."""


def string(value: Any) -> str | None:
    """Any string (the option mapping already bounds its length)."""
    return None if isinstance(value, str) else "a string"


@dataclass(frozen=True)
class BackendOption:
    """One option a backend accepts: its ``name``, a one-line ``doc``, a value ``check``
    (returns None when a value is fine, else what is expected) and its ``default``.

    The declaration is checked when it is made: the name must be a valid option name and
    the default a valid option value that ``check`` accepts (``ValueError`` otherwise).
    """

    name: str
    doc: str
    check: Check
    default: bool | int | float | str

    def __post_init__(self) -> None:
        if (expected := option_name_problem(self.name)) is not None:
            raise ValueError(f"BackendOption.name: expected {expected}, found {self.name!r}")
        if not isinstance(self.doc, str) or not self.doc.strip():
            raise ValueError(f"BackendOption {self.name!r}: doc must be a non-empty string")
        if not callable(self.check):
            raise ValueError(f"BackendOption {self.name!r}: check must be callable")
        problem = option_value_problem(self.default)
        if problem is None:
            problem = self.check(self.default)
        if problem is not None:
            raise ValueError(
                f"BackendOption {self.name!r}: default: expected {problem}, "
                f"found {_short(self.default)}"
            )


def resolve_backend_options(
    backend: str,
    given: Mapping[str, Any],
    declared: Sequence[BackendOption],
    *,
    field: str,
) -> dict[str, Any]:
    """Every declared option of ``backend``: the value ``given`` for it, else its default.

    ``field`` names where ``given`` came from in messages, e.g.
    ``"TrainingConfig.backend_options"``. Raises :class:`~ptycho_core.errors.ConfigError`
    for a name ``backend`` does not declare (naming the backend, the field, the name and the
    accepted names, or saying that it accepts none) and for a value its check refuses
    (naming the key, what is expected and what was found).
    """
    by_name = {option.name: option for option in declared}
    for name in given:
        if name not in by_name:
            if not by_name:
                raise ConfigError(
                    f"{field}: the {backend} backend accepts no backend options here; "
                    f"expected none, found {name!r}"
                )
            raise ConfigError(
                f"{field}: the {backend} backend has no option {name!r}; expected one of "
                f"{', '.join(map(repr, sorted(by_name)))}, found {name!r}"
            )
    resolved: dict[str, Any] = {}
    for name, option in by_name.items():
        if name not in given:
            resolved[name] = option.default
            continue
        value = given[name]
        if (expected := option.check(value)) is not None:
            raise ConfigError(
                f"{field}[{name!r}]: the {backend} backend expects {expected}, "
                f"found {_short(value)}"
            )
        resolved[name] = value
    return resolved


def declared_options(
    backend: Any, kind: Literal["training", "inference"]
) -> tuple[BackendOption, ...]:
    """The options ``backend`` declares for ``kind`` ('training' or 'inference').

    Read from its ``training_options`` / ``inference_options`` attribute; a backend without
    the attribute declares none. Raises ``TypeError`` when the attribute is not a sequence of
    :class:`BackendOption` or names one option twice, ``ValueError`` for an unknown kind.
    """
    if kind not in OPTION_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(OPTION_KINDS)}, found {kind!r}")
    attribute = OPTION_KINDS[kind]
    options = getattr(backend, attribute, ())
    if isinstance(options, str | bytes) or not isinstance(options, Sequence):
        raise TypeError(
            f"{attribute}: expected a tuple of BackendOption, found {type(options).__name__}"
        )
    options = tuple(options)
    if not all(isinstance(option, BackendOption) for option in options):
        raise TypeError(f"{attribute}: expected a tuple of BackendOption, found {options!r}")
    names = [option.name for option in options]
    if len(set(names)) != len(names):
        raise TypeError(f"{attribute}: an option is declared twice in {names}")
    return options
