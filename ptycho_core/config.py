"""Immutable, validated run configurations.

Configs are frozen dataclasses passed down explicitly; there is no global parameter
dictionary. Every field carries a one-line description in its metadata (used by the
CLI help and the specs) and is validated when the object is built, so a bad value
fails at the place it was written, with a :class:`~ptycho_core.errors.ConfigError` (a
``ValueError``) that names the field. Every count has an upper bound too: a config
read from a file must not be able to ask for unbounded memory or time.

Code that still expects upstream PtychoPINN's flat ``params.cfg`` keys can call the
pure function :func:`to_legacy_dict`; nothing is ever written to a global.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Self

from ptycho_core.errors import ConfigError
from ptycho_core.limits import MAX_ITERATIONS

__all__ = [
    "ACCELERATORS",
    "ACTIVATION_ALIASES",
    "AMP_ACTIVATIONS",
    "LEGACY_RENAMES",
    "LR_SCHEDULES",
    "MAX_BACKEND_OPTIONS",
    "MAX_OPTION_STRING",
    "MODEL_TYPES",
    "OPTION_NAME_PATTERN",
    "PRECISIONS",
    "SUPPORTED_N",
    "BackendOptions",
    "InferenceConfig",
    "ModelConfig",
    "OptionValue",
    "TrainingConfig",
    "option_name_problem",
    "option_value_problem",
    "to_legacy_dict",
]

SUPPORTED_N: tuple[int, ...] = (64, 128, 256)
AMP_ACTIVATIONS: tuple[str, ...] = ("sigmoid", "swish", "softplus", "relu")
ACTIVATION_ALIASES: Mapping[str, str] = {"silu": "swish"}
MODEL_TYPES: tuple[str, ...] = ("pinn", "supervised")
PRECISIONS: tuple[str, ...] = ("32", "bf16-mixed")
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "gpu")
LR_SCHEDULES: tuple[str, ...] = ("cosine", "plateau")
"""Learning-rate schedules of gradient training (defined in :mod:`ptycho_core.schedule`)."""
DEFAULT_BACKEND = "tensorflow"
CONFIG_FILE_MAX_BYTES = 16 * 1024**2
"""Largest JSON config document read from a file."""
MAX_GRIDSIZE = 8
MAX_FILTERS_SCALE = 16
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_GROUPS = 100_000_000
MAX_NEIGHBORS = 256
MAX_OFFSET = 1024
MAX_WARMUP_STEPS = 10_000_000
MAX_DEVICES = 4096
MAX_SEED = 2**63 - 1
MAX_BACKEND_OPTIONS = 64
"""Most entries in one ``backend_options`` mapping."""
MAX_OPTION_STRING = 1024
"""Longest string value of a backend option, in characters."""
OPTION_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
"""What a backend option's name looks like: a lower-case identifier of at most 64 characters."""
_OPTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_OPTION_INT_BOUND = 2**63

Check = Callable[[Any], str | None]


def _doc(text: str, check: Check | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a description and an optional validator (returns an error)."""
    return field(metadata={"doc": text, "check": check}, **kwargs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _int_at_least(low: int) -> Check:
    def check(value: Any) -> str | None:
        if not _is_int(value) or value < low:
            return f"an integer >= {low}"
        return None

    return check


def _int_in(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        return None if _is_int(value) and low <= value <= high else f"an integer in [{low}, {high}]"

    return check


def _iterations(value: Any) -> str | None:
    return _int_in(1, MAX_ITERATIONS.value)(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "None or a string"


def _instance_of(kind: type) -> Check:
    def check(value: Any) -> str | None:
        return None if isinstance(value, kind) else f"a {kind.__name__} (an object of its fields)"

    return check


def _optional(check: Check) -> Check:
    def wrapped(value: Any) -> str | None:
        if value is None:
            return None
        problem = check(value)
        return None if problem is None else f"None or {problem}"

    return wrapped


def _one_of(choices: tuple[Any, ...]) -> Check:
    def check(value: Any) -> str | None:
        known = isinstance(value, str | int) and not isinstance(value, bool) and value in choices
        return None if known else f"one of {', '.join(map(repr, choices))}"

    return check


def _real_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    def check(value: Any) -> str | None:
        ok = _is_real(value)
        if ok:
            ok = (value > low if low_open else value >= low) and (
                value < high if high_open else value <= high
            )
        if ok:
            return None
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        return f"a finite number in {left}{low}, {high}{right}"

    return check


def _positive_real(value: Any) -> str | None:
    return None if _is_real(value) and value > 0 else "a finite number > 0"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def _non_empty_str(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


def _power_of_two(value: Any) -> str | None:
    if _is_int(value) and 0 < value <= MAX_BATCH_SIZE and value & (value - 1) == 0:
        return None
    return f"a power of two in [1, {MAX_BATCH_SIZE}]"


def _devices(value: Any) -> str | None:
    if value == "auto" or (_is_int(value) and 1 <= value <= MAX_DEVICES):
        return None
    return f"'auto' or an integer in [1, {MAX_DEVICES}]"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


OptionValue = bool | int | float | str
"""The type of one backend option's value."""


def option_value_problem(value: Any) -> str | None:
    """None when ``value`` may be a backend option's value, else what is expected."""
    if isinstance(value, bool | str) and (
        not isinstance(value, str) or len(value) <= MAX_OPTION_STRING
    ):
        return None
    if _is_int(value) and abs(value) < _OPTION_INT_BOUND:
        return None
    if isinstance(value, float) and math.isfinite(value):
        return None
    return (
        f"true or false, an integer with |value| < 2**63, a finite number or a string of at "
        f"most {MAX_OPTION_STRING} characters"
    )


def option_name_problem(name: Any) -> str | None:
    """None when ``name`` may name a backend option, else what is expected."""
    if isinstance(name, str) and _OPTION_NAME.fullmatch(name):
        return None
    return f"a name matching {OPTION_NAME_PATTERN}"


def _plain_value(value: OptionValue) -> OptionValue:
    """``value`` as exactly bool, int, float or str (a subclass, e.g. numpy.float64, is cast)."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    raise AssertionError(value)  # pragma: no cover - option_value_problem refused it


_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class BackendOptions(Mapping[str, OptionValue]):
    """Read-only, hashable mapping of backend option names to values (bool, int, float, str).

    The value of the configs' ``backend_options`` field: settings that only one backend
    understands (specs/backend-protocol.md §11). Built from any mapping, which is checked:
    at most :data:`MAX_BACKEND_OPTIONS` entries, names matching :data:`OPTION_NAME_PATTERN`,
    values True/False, integers with ``|v| < 2**63``, finite floats or strings of at most
    :data:`MAX_OPTION_STRING` characters. Anything else raises
    :class:`~ptycho_core.errors.ConfigError` naming ``field`` and the key. Two mappings are
    equal when they hold the same names with values of the same type and value (so ``1``,
    ``1.0`` and ``True`` differ, as they do in JSON).
    """

    __slots__ = ("_items",)

    _items: tuple[tuple[str, OptionValue], ...]

    def __init__(
        self, options: Mapping[str, Any] = _NO_OPTIONS, /, *, field: str = "backend_options"
    ) -> None:
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"{field}: expected an object of option names to values, found "
                f"{type(options).__name__} {_short(options)}"
            )
        if len(options) > MAX_BACKEND_OPTIONS:
            raise ConfigError(
                f"{field}: expected at most {MAX_BACKEND_OPTIONS} options, found {len(options)}"
            )
        items = []
        for name, value in options.items():
            if (expected := option_name_problem(name)) is not None:
                raise ConfigError(
                    f"{field}: option name: expected {expected}, found {_short(name)}"
                )
            if (expected := option_value_problem(value)) is not None:
                raise ConfigError(
                    f"{field}[{name!r}]: expected {expected}, found "
                    f"{type(value).__name__} {_short(value)}"
                )
            items.append((name, _plain_value(value)))
        object.__setattr__(self, "_items", tuple(sorted(items)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __getitem__(self, key: str) -> OptionValue:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def _typed(self) -> tuple[tuple[str, type, OptionValue], ...]:
        return tuple((name, type(value), value) for name, value in self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BackendOptions):
            return self._typed() == other._typed()
        if isinstance(other, Mapping):
            try:
                return self == BackendOptions(other)
            except ConfigError:
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._typed())

    def __repr__(self) -> str:
        return f"BackendOptions({dict(self._items)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (BackendOptions, (dict(self._items),))

    def to_dict(self) -> dict[str, OptionValue]:
        """A plain, JSON-compatible dict (sorted by name)."""
        return dict(self._items)


def _backend_options_field(text: str) -> Any:
    return _doc(text, _instance_of(BackendOptions), default_factory=BackendOptions)


class _ConfigMixin:
    """Validation, dict/JSON round trip and field docs shared by the config classes."""

    _nested: ClassVar[Mapping[str, type]] = {}

    def __post_init__(self) -> None:
        fields = self.__dataclass_fields__  # type: ignore[attr-defined]
        options = getattr(self, "backend_options", None)
        if "backend_options" in fields and not isinstance(options, BackendOptions):
            # any mapping is accepted and frozen; anything else is refused by BackendOptions
            field = f"{type(self).__name__}.backend_options"
            object.__setattr__(self, "backend_options", BackendOptions(options, field=field))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check = f.metadata.get("check")
            value = getattr(self, f.name)
            if check is not None and (expected := check(value)) is not None:
                raise ConfigError(
                    f"{type(self).__name__}.{f.name}: expected {expected}, found {_short(value)}"
                )
        self._validate_together()

    def _validate_together(self) -> None:
        """Checks that involve several fields; overridden where needed."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict; nested configs and ``backend_options`` become plain dicts."""
        result: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _ConfigMixin | BackendOptions):
                value = value.to_dict()
            result[f.name] = value
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict` output; unknown keys are an error, missing keys default.

        Total over JSON: any value either gives a config or raises :class:`ConfigError`.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping, found {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(map(str, data)) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {', '.join(map(repr, unknown))}; "
                f"known fields: {', '.join(sorted(names))}"
            )
        values = dict(data)
        for name, nested in cls._nested.items():
            if name not in values or isinstance(values[name], nested):
                continue
            if not isinstance(values[name], Mapping):
                raise ConfigError(
                    f"{cls.__name__}.{name}: expected an object of {nested.__name__} fields, "
                    f"found {type(values[name]).__name__} {_short(values[name])}"
                )
            values[name] = nested.from_dict(values[name])  # type: ignore[attr-defined]
        return cls(**values)

    def to_json(self) -> str:
        """The config as a JSON document (stable key order)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse :meth:`to_json` output; malformed JSON raises :class:`ConfigError`."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
            raise ConfigError(f"{cls.__name__}: invalid JSON: {error}") from error
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Self:
        """Read a JSON config file (at most ``CONFIG_FILE_MAX_BYTES``); errors name the file."""
        try:
            with open(path, "rb") as handle:
                raw = handle.read(CONFIG_FILE_MAX_BYTES + 1)
            if len(raw) > CONFIG_FILE_MAX_BYTES:
                raise ConfigError(f"larger than the limit of {CONFIG_FILE_MAX_BYTES} bytes")
            return cls.from_json(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, ConfigError) as error:
            raise ConfigError(f"{os.fspath(path)}: {error}") from error

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Field name → one-line description."""
        return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class ModelConfig(_ConfigMixin):
    """Architecture of the PtychoPINN generator and its physics (specs/backend-protocol.md)."""

    N: int = _doc("diffraction pattern size in pixels", _one_of(SUPPORTED_N), default=64)
    gridsize: int = _doc(
        "groups hold gridsize² neighbouring patterns", _int_in(1, MAX_GRIDSIZE), default=1
    )
    n_filters_scale: int = _doc(
        "multiplier of every convolution's filters (upstream: 2)",
        _int_in(1, MAX_FILTERS_SCALE),
        default=1,
    )
    model_type: str = _doc(
        "'pinn' (physics loss) or 'supervised'", _one_of(MODEL_TYPES), default="pinn"
    )
    amp_activation: str = _doc(
        "amplitude head activation ('silu' is an alias of 'swish')",
        _one_of(AMP_ACTIVATIONS + tuple(ACTIVATION_ALIASES)),
        default="sigmoid",
    )
    object_big: bool = _doc(
        "merge the gridsize² patches into one object canvas", _bool, default=True
    )
    probe_big: bool = _doc("decode the field outside the central N/2 box too", _bool, default=True)
    probe_mask: bool = _doc("multiply the probe by the disk r < N/4", _bool, default=False)
    pad_object: bool = _doc(
        "decode the object in the central N/2 box, zero-padded", _bool, default=True
    )
    probe_scale: float = _doc("probe normalisation divisor", _positive_real, default=4.0)
    gaussian_smoothing_sigma: float = _doc(
        "σ of the complex probe smoothing (0 disables)", _real_in(0.0, 100.0), default=0.0
    )
    offset: int = _doc(
        "nominal spacing of grouped positions in pixels", _int_in(0, MAX_OFFSET), default=4
    )
    max_position_jitter: int = _doc(
        "extra canvas margin in pixels", _int_in(0, MAX_OFFSET), default=10
    )

    def __post_init__(self) -> None:
        alias = (
            ACTIVATION_ALIASES.get(self.amp_activation)
            if isinstance(self.amp_activation, str)
            else None
        )
        if alias is not None:
            object.__setattr__(self, "amp_activation", alias)
        super().__post_init__()

    @property
    def channels(self) -> int:
        """Patterns per group, C = gridsize²."""
        return self.gridsize**2

    @property
    def canvas_size(self) -> int:
        """Side P of the in-model merge canvas: N + (gridsize−1)·offset + max_position_jitter."""
        return self.N + (self.gridsize - 1) * self.offset + self.max_position_jitter


@dataclass(frozen=True, kw_only=True)
class TrainingConfig(_ConfigMixin):
    """How to train a model; ``backend`` names the entry point that does the work."""

    _nested: ClassVar[Mapping[str, type]] = {"model": ModelConfig}

    model: ModelConfig = _doc(
        "the architecture to train", _instance_of(ModelConfig), default_factory=ModelConfig
    )
    backend: str = _doc(
        "backend name in the 'ptycho.backends' entry points",
        _non_empty_str,
        default=DEFAULT_BACKEND,
    )
    nepochs: int = _doc("maximum number of epochs", _int_in(1, MAX_EPOCHS), default=50)
    batch_size: int = _doc("groups per optimisation step", _power_of_two, default=16)
    learning_rate: float = _doc("Adam learning rate", _positive_real, default=1e-3)
    nphotons: float = _doc(
        "expected photons per pattern; sets the Poisson scale", _positive_real, default=1e9
    )
    n_groups: int | None = _doc(
        "groups to train on (None: one per position)",
        _optional(_int_in(1, MAX_GROUPS)),
        default=512,
    )
    neighbor_count: int = _doc(
        "K of the K-nearest-neighbour grouping", _int_in(1, MAX_NEIGHBORS), default=4
    )
    sequential_sampling: bool = _doc(
        "seed groups at the first positions instead of at random", _bool, default=False
    )
    mae_weight: float = _doc("weight of the amplitude MAE loss", _real_in(0.0, 1.0), default=0.0)
    nll_weight: float = _doc(
        "weight of the Poisson negative log-likelihood", _real_in(0.0, 1.0), default=1.0
    )
    probe_trainable: bool = _doc("let the optimiser refine the probe", _bool, default=False)
    intensity_scale_trainable: bool = _doc(
        "train the output gain exp(log_gain)", _bool, default=True
    )
    validation_split: float = _doc(
        "fraction of groups (the last ones) held out",
        _real_in(0.0, 1.0, high_open=True),
        default=0.05,
    )
    lr_schedule: str = _doc(
        "'cosine' (decay to min_learning_rate over nepochs) or 'plateau' (cut on stalls)",
        _one_of(LR_SCHEDULES),
        default="cosine",
    )
    lr_warmup_steps: int = _doc(
        "optimiser steps of linear warmup to learning_rate before the schedule (0: none)",
        _int_in(0, MAX_WARMUP_STEPS),
        default=200,
    )
    lr_plateau_factor: float = _doc(
        "learning-rate factor when validation loss stalls ('plateau' schedule)",
        _real_in(0.0, 1.0, low_open=True, high_open=True),
        default=0.5,
    )
    lr_plateau_patience: int = _doc(
        "epochs without improvement before the rate drops ('plateau' schedule)",
        _int_in(0, MAX_EPOCHS),
        default=2,
    )
    min_learning_rate: float = _doc(
        "floor of the learning-rate schedule", _positive_real, default=1e-4
    )
    early_stop_patience: int = _doc(
        "epochs without training-loss improvement before stopping ('plateau' schedule)",
        _int_in(1, MAX_EPOCHS),
        default=3,
    )
    seed: int = _doc(
        "seed of grouping, weight initialisation and shuffling", _int_in(0, MAX_SEED), default=42
    )
    precision: str = _doc(
        "numeric precision: '32' or 'bf16-mixed'", _one_of(PRECISIONS), default="32"
    )
    accelerator: str = _doc("'auto', 'cpu' or 'gpu'", _one_of(ACCELERATORS), default="auto")
    devices: int | str = _doc("devices to train on, or 'auto'", _devices, default=1)
    strategy: str = _doc(
        "multi-device strategy passed to the backend ('auto', 'ddp', ...)",
        _non_empty_str,
        default="auto",
    )
    num_nodes: int = _doc("machines taking part in training", _int_in(1, MAX_DEVICES), default=1)
    train_data_file: str | None = _doc(
        "NPZ the model was trained on (provenance)", _optional_str, default=None
    )
    test_data_file: str | None = _doc(
        "NPZ used for evaluation (provenance)", _optional_str, default=None
    )
    output_dir: str | None = _doc("folder for outputs (provenance)", _optional_str, default=None)
    backend_options: BackendOptions = _backend_options_field(
        "settings only the chosen backend understands, by name (every other backend refuses them)"
    )

    def trainability(self) -> dict[str, bool]:
        """Which of the output gain and the probe train, as a network builder's keywords.

        ``intensity_scale_trainable`` and ``probe_trainable``: what training, weight import
        and bundle loading all pass to a backend's ``build_network``, written once.
        """
        return {
            "intensity_scale_trainable": self.intensity_scale_trainable,
            "probe_trainable": self.probe_trainable,
        }

    def _validate_together(self) -> None:
        if self.model.gridsize > 1 and self.neighbor_count < self.model.channels:
            raise ConfigError(
                f"TrainingConfig.neighbor_count: expected >= gridsize² = {self.model.channels} "
                f"for gridsize {self.model.gridsize}, found {self.neighbor_count}"
            )
        if self.mae_weight == 0 and self.nll_weight == 0 and self.model.model_type == "pinn":
            raise ConfigError(
                "TrainingConfig.nll_weight: expected mae_weight or nll_weight > 0 for a 'pinn' "
                "model, found both 0"
            )
        if self.min_learning_rate > self.learning_rate:
            raise ConfigError(
                f"TrainingConfig.min_learning_rate: expected <= learning_rate "
                f"({self.learning_rate}), found {self.min_learning_rate}"
            )


@dataclass(frozen=True, kw_only=True)
class InferenceConfig(_ConfigMixin):
    """How to run a trained model; the architecture comes from the bundle's manifest."""

    backend: str | None = _doc(
        "backend that must have trained the model (None: whichever did; the model knows)",
        _optional(_non_empty_str),
        default=None,
    )
    batch_size: int = _doc("groups per forward pass", _int_in(1, MAX_BATCH_SIZE), default=64)
    n_groups: int | None = _doc(
        "groups to reconstruct (None: one per position)",
        _optional(_int_in(1, MAX_GROUPS)),
        default=None,
    )
    neighbor_count: int = _doc(
        "K of the K-nearest-neighbour grouping", _int_in(1, MAX_NEIGHBORS), default=4
    )
    seed: int = _doc("seed of the grouping", _int_in(0, MAX_SEED), default=42)
    stitch_size: int = _doc(
        "side M of the central crop of each patch used for stitching",
        _int_in(1, max(SUPPORTED_N)),
        default=20,
    )
    precision: str = _doc(
        "numeric precision: '32' or 'bf16-mixed'", _one_of(PRECISIONS), default="32"
    )
    accelerator: str = _doc("'auto', 'cpu' or 'gpu'", _one_of(ACCELERATORS), default="auto")
    devices: int | str = _doc("devices to run on, or 'auto'", _devices, default=1)
    iterations: int | None = _doc(
        "iterations of an iterative backend; None: the model's own count",
        _optional(_iterations),
        default=None,
    )
    model_path: str | None = _doc(
        "bundle the model came from (provenance)", _optional_str, default=None
    )
    test_data_file: str | None = _doc("NPZ reconstructed (provenance)", default=None)
    output_dir: str | None = _doc("folder for outputs (provenance)", _optional_str, default=None)
    backend_options: BackendOptions = _backend_options_field(
        "settings only the inferring backend understands, by name (every other backend refuses them)"
    )

    def require_single_device(self, backend: str) -> None:
        """Refuse ``devices`` other than 1 or 'auto' for a backend that infers on one device.

        The protocol forbids silently ignoring a setting, so such backends call this first.
        """
        if self.devices not in (1, "auto"):
            raise ConfigError(
                f"InferenceConfig.devices: the {backend} backend infers on one device; "
                f"expected 1 or 'auto', found {self.devices!r}"
            )

    def require_no_iterations(self, backend: str) -> None:
        """Refuse ``iterations`` for a backend that does not iterate (a single pass).

        The protocol forbids silently ignoring a setting, so such backends call this first.
        """
        if self.iterations is not None:
            raise ConfigError(
                f"InferenceConfig.iterations: the {backend} backend reconstructs in one pass "
                f"and has no iterations; expected None, found {self.iterations!r}"
            )


#: Our field name → upstream's ``params.cfg`` key, where they differ (both directions use it).
LEGACY_RENAMES: Mapping[str, str] = {
    "object_big": "object.big",
    "probe_big": "probe.big",
    "probe_mask": "probe.mask",
    "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
    "output_dir": "output_prefix",
    "train_data_file": "train_data_file_path",
    "test_data_file": "test_data_file_path",
}


def to_legacy_dict(
    config: ModelConfig | TrainingConfig | InferenceConfig,
    *,
    intensity_scale: float | None = None,
) -> dict[str, Any]:
    """Flatten a config into upstream PtychoPINN's ``params.cfg`` key names.

    A pure function: it returns a new dict and touches no global. Nested model fields
    are flattened into the top level, as upstream's ``update_legacy_dict`` does, and
    ``None`` values are left out (upstream keeps the previous value for those).
    """
    if not isinstance(config, ModelConfig | TrainingConfig | InferenceConfig):
        raise TypeError(f"to_legacy_dict: expected a ptycho config, found {type(config).__name__}")
    flat = config.to_dict()
    model = flat.pop("model", None)
    if model is not None:
        flat.update(model)
    legacy = {
        LEGACY_RENAMES.get(key, key): value for key, value in flat.items() if value is not None
    }
    if intensity_scale is not None:
        legacy["intensity_scale"] = float(intensity_scale)
    return legacy
