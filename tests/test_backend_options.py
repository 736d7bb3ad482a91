"""Backend options: the configs' BackendOptions mapping, declarations and their resolution."""

from __future__ import annotations

import copy
import json
import math
import pickle
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho_core.backend_options import (
    BackendOption,
    boolean,
    declared_options,
    int_in,
    one_of,
    real_in,
    resolve_backend_options,
    string,
)
from ptycho_core.config import (
    MAX_BACKEND_OPTIONS,
    MAX_OPTION_STRING,
    OPTION_NAME_PATTERN,
    BackendOptions,
    InferenceConfig,
    TrainingConfig,
    to_legacy_dict,
)
from ptycho_core.errors import ConfigError

NAMES = st.from_regex(OPTION_NAME_PATTERN, fullmatch=True)
VALUES = (
    st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=MAX_OPTION_STRING)
)
CONFIGS = [TrainingConfig, InferenceConfig]


def _valid_key(key: Any) -> bool:
    return isinstance(key, str) and re.fullmatch(OPTION_NAME_PATTERN, key) is not None


def _valid_value(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= MAX_OPTION_STRING


# ------------------------------------------------------------------ the mapping in configs


@given(kind=st.sampled_from(CONFIGS), options=st.dictionaries(NAMES, VALUES, max_size=8))
def test_valid_options_round_trip_through_dict_and_json(kind: type, options: dict) -> None:
    config = kind(backend_options=options)
    assert isinstance(config.backend_options, BackendOptions)
    assert dict(config.backend_options) == options
    plain = config.to_dict()["backend_options"]
    assert type(plain) is dict and plain == options
    assert kind.from_dict(config.to_dict()) == config
    again = kind.from_json(config.to_json())
    assert again == config and hash(again) == hash(config)
    assert {type(v) for v in again.backend_options.values()} == {type(v) for v in options.values()}


@given(
    kind=st.sampled_from(CONFIGS),
    options=st.dictionaries(
        st.text(max_size=6) | NAMES,
        st.none()
        | VALUES
        | st.integers()
        | st.floats()
        | st.text(min_size=1020, max_size=1030)
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
        max_size=4,
    ),
)
def test_an_option_is_accepted_exactly_when_its_name_and_value_are_valid(
    kind: type, options: dict
) -> None:
    valid = all(_valid_key(k) and _valid_value(v) for k, v in options.items())
    try:
        config = kind(backend_options=options)
    except ConfigError as error:
        assert not valid
        message = str(error)
        assert message.startswith(f"{kind.__name__}.backend_options")
        assert "expected " in message and "found " in message
        bad = next(k for k, v in options.items() if not (_valid_key(k) and _valid_value(v)))
        assert repr(bad)[:40] in message
        return
    assert valid
    assert dict(config.backend_options) == options


def test_the_number_of_options_is_bounded() -> None:
    many = {f"o{i}": i for i in range(MAX_BACKEND_OPTIONS)}
    assert len(TrainingConfig(backend_options=many).backend_options) == MAX_BACKEND_OPTIONS
    with pytest.raises(ConfigError, match=r"TrainingConfig\.backend_options: expected at most 64"):
        TrainingConfig(backend_options={**many, "one_more": 1})


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"Probe": 1}, "found 'Probe'"),
        ({"9lives": 1}, "found '9lives'"),
        ({"x" * 65: 1}, "found 'xxx"),
        ({"modes": None}, "['modes']: expected true or false"),
        ({"modes": [1, 2]}, "found list [1, 2]"),
        ({"modes": {"a": 1}}, "found dict"),
        ({"modes": 2**63}, "found int 9223372036854775808"),
        ({"modes": -(2**63)}, "found int -9223372036854775808"),
        ({"modes": math.inf}, "found float inf"),
        ({"modes": math.nan}, "found float nan"),
        ({"modes": "x" * (MAX_OPTION_STRING + 1)}, "found str 'xxx"),
        ([("modes", 1)], "expected an object of option names to values, found list"),
        (None, "found NoneType None"),
        ("modes=1", "found str 'modes=1'"),
    ],
)
def test_invalid_options_are_config_errors_naming_field_and_key(
    options: Any, fragment: str
) -> None:
    for kind in CONFIGS:
        with pytest.raises(ConfigError) as caught:
            kind(backend_options=options)
        message = str(caught.value)
        assert message.startswith(f"{kind.__name__}.backend_options"), message
        assert fragment in message, message
    with pytest.raises(ConfigError, match=r"TrainingConfig\.backend_options"):
        TrainingConfig.from_json(json.dumps({"backend_options": _jsonable(options)}))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return 1e400  # Infinity on the way back in
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def test_boundaries_of_values_are_inclusive_where_documented() -> None:
    edge = {"big": 2**63 - 1, "small": -(2**63) + 1, "text": "x" * MAX_OPTION_STRING, "f": -0.0}
    assert dict(TrainingConfig(backend_options=edge).backend_options) == edge
    assert dict(TrainingConfig(backend_options={"a" * 64: True}).backend_options) == {
        "a" * 64: True
    }


def test_the_mapping_is_read_only_hashable_and_type_aware() -> None:
    options = BackendOptions({"probe_modes": 2, "engine": "lsqml"})
    assert list(options) == ["engine", "probe_modes"]  # sorted: one order for equal mappings
    with pytest.raises(AttributeError):
        options._items = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        options["probe_modes"] = 3  # type: ignore[index]
    assert hash(options) == hash(BackendOptions({"engine": "lsqml", "probe_modes": 2}))
    assert options == {"engine": "lsqml", "probe_modes": 2}
    # 1, 1.0 and True are different JSON values and different settings
    assert BackendOptions({"a": 1}) != BackendOptions({"a": 1.0})
    assert BackendOptions({"a": 1}) != BackendOptions({"a": True})
    assert TrainingConfig(backend_options={"a": 1}) != TrainingConfig(backend_options={"a": 1.0})
    assert options != {"engine": None} and options != 3
    assert pickle.loads(pickle.dumps(options)) == options
    config = InferenceConfig(backend_options=options)
    assert copy.deepcopy(config) == config and pickle.loads(pickle.dumps(config)) == config
    assert {config: 1}[InferenceConfig(backend_options={"probe_modes": 2, "engine": "lsqml"})]


def test_subclasses_of_the_value_types_are_stored_as_the_plain_type() -> None:
    class Flag(str):
        pass

    options = BackendOptions({"name": Flag("x")})
    assert type(options["name"]) is str


def test_configs_default_to_no_options_and_replace_converts() -> None:
    config = TrainingConfig()
    assert config.backend_options == BackendOptions() and len(config.backend_options) == 0
    assert config.to_dict()["backend_options"] == {}
    changed = config.replace(backend_options={"probe_modes": 3})
    assert isinstance(changed.backend_options, BackendOptions)
    assert changed.backend_options["probe_modes"] == 3
    assert to_legacy_dict(changed)["backend_options"] == {"probe_modes": 3}


# ------------------------------------------------------------------ declarations


MODES = BackendOption("probe_modes", "incoherent probe modes", int_in(1, 8), default=1)
ENGINE = BackendOption("engine", "solver", one_of(("lsqml", "epie")), default="lsqml")
STEP = BackendOption("step", "step size", real_in(0.0, 1.0, low_open=True), default=0.5)
CORRECT = BackendOption("position_correction", "refine positions", boolean, default=False)
LABEL = BackendOption("label", "a free label", string, default="")
DECLARED = (MODES, ENGINE, STEP, CORRECT, LABEL)
FIELD = "TrainingConfig.backend_options"


def test_resolution_fills_in_the_defaults_of_undeclared_values() -> None:
    resolved = resolve_backend_options("ptychi", {"probe_modes": 3}, DECLARED, field=FIELD)
    assert resolved == {
        "probe_modes": 3,
        "engine": "lsqml",
        "step": 0.5,
        "position_correction": False,
        "label": "",
    }
    assert resolve_backend_options("ptychi", {}, (), field=FIELD) == {}


def test_an_unknown_option_names_backend_field_key_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_backend_options("ptychi", {"probe_mode": 2}, DECLARED, field=FIELD)
    message = str(caught.value)
    assert message.startswith(FIELD) and "the ptychi backend has no option 'probe_mode'" in message
    assert "expected one of 'engine', 'label', 'position_correction', 'probe_modes'" in message


def test_a_backend_without_declarations_refuses_every_option() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_backend_options("epie", {"foo": 1}, (), field="InferenceConfig.backend_options")
    message = str(caught.value)
    assert message.startswith("InferenceConfig.backend_options")
    assert "epie backend accepts no backend options" in message and "found 'foo'" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("probe_modes", 0, "an integer in [1, 8]"),
        ("probe_modes", True, "an integer in [1, 8]"),
        ("probe_modes", 2.0, "an integer in [1, 8]"),
        ("engine", "dm", "one of 'lsqml', 'epie'"),
        ("step", 0.0, "a finite number in (0.0, 1.0]"),
        ("position_correction", 1, "True or False"),
        ("label", 3, "a string"),
    ],
)
def test_an_invalid_value_names_key_expected_and_found(
    name: str, value: Any, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_backend_options("ptychi", {name: value}, DECLARED, field=FIELD)
    message = str(caught.value)
    assert message.startswith(f"{FIELD}[{name!r}]"), message
    assert f"expects {expected}, found {value!r}" in message, message


@given(given_options=st.dictionaries(NAMES, VALUES, max_size=4))
def test_resolution_accepts_exactly_declared_names_with_checked_values(
    given_options: dict,
) -> None:
    by_name = {option.name: option for option in DECLARED}
    fine = all(k in by_name and by_name[k].check(v) is None for k, v in given_options.items())
    try:
        resolved = resolve_backend_options("ptychi", given_options, DECLARED, field=FIELD)
    except ConfigError:
        assert not fine
        return
    assert fine and set(resolved) == set(by_name)
    assert all(resolved[k] == v for k, v in given_options.items())


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        (("Modes", "doc", int_in(1, 2), 1), "BackendOption.name"),
        (("modes", "", int_in(1, 2), 1), "doc must be a non-empty string"),
        (("modes", "doc", None, 1), "check must be callable"),
        (("modes", "doc", int_in(1, 2), 5), r"default: expected an integer in \[1, 2\]"),
        (("modes", "doc", int_in(1, 2), None), "default: expected true or false"),
    ],
)
def test_declarations_are_checked_when_made(arguments: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BackendOption(*arguments)


def test_declared_options_reads_the_class_attributes() -> None:
    class Declares:
        training_options = (MODES, STEP)
        inference_options = [ENGINE]  # noqa: RUF012  # any sequence will do

    class DeclaresNothing:
        pass

    class Broken:
        training_options = ("probe_modes",)
        inference_options = (MODES, MODES)

    assert declared_options(Declares(), "training") == (MODES, STEP)
    assert declared_options(Declares, "inference") == (ENGINE,)
    assert declared_options(DeclaresNothing(), "training") == ()
    with pytest.raises(TypeError, match="training_options: expected a tuple of BackendOption"):
        declared_options(Broken(), "training")
    with pytest.raises(TypeError, match="declared twice"):
        declared_options(Broken(), "inference")
    with pytest.raises(ValueError, match="kind: expected one of training, inference"):
        declared_options(Declares(), "refinement")  # type: ignore[arg-type]
