"""The restricted unpickler reads upstream's plain pickled settings and runs nothing else."""

from __future__ import annotations

import os
import pickle
from pathlib import Path, PurePosixPath

import dill
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptycho_core.errors import UpstreamArchiveError
from ptycho_core.upstream.pickles import MAX_PICKLE_BYTES, load_pickle

DUMPERS = {
    "dill": dill.dumps,
    **{f"pickle-{p}": (lambda o, p=p: pickle.dumps(o, protocol=p)) for p in (2, 3, 4, 5)},
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.complex_numbers(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
plain = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=20,
)
arrays = hnp.arrays(
    dtype=st.one_of(
        hnp.boolean_dtypes(),
        hnp.integer_dtypes(),
        hnp.floating_dtypes(),
        hnp.complex_number_dtypes(),
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
)


@pytest.mark.parametrize("dumper", DUMPERS)
@settings(max_examples=60, deadline=None)
@given(value=plain)
def test_plain_values_come_back_equal(dumper, value) -> None:
    assert load_pickle(DUMPERS[dumper](value), "params.dill") == value


@pytest.mark.parametrize("dumper", DUMPERS)
@settings(max_examples=60, deadline=None)
@given(array=arrays, fortran=st.booleans())
def test_numpy_arrays_and_scalars_come_back_equal(dumper, array, fortran) -> None:
    array = np.asfortranarray(array) if fortran else array
    data = DUMPERS[dumper]({"a": array, "s": array.reshape(-1)[:1].sum()})
    loaded, reference = load_pickle(data, "x"), pickle.loads(data)  # our own test data
    np.testing.assert_array_equal(loaded["a"], array)
    assert loaded["a"].dtype == reference["a"].dtype
    np.testing.assert_array_equal(loaded["s"], reference["s"])
    assert type(loaded["s"]) is type(reference["s"])


@pytest.mark.parametrize("dumper", DUMPERS)
def test_paths_sets_and_ordered_dicts(dumper) -> None:
    from collections import OrderedDict

    value = {
        "out": Path("runs/a"),
        "set": {1, 2},
        "frozen": frozenset("ab"),
        "od": OrderedDict(a=1),
    }
    loaded = load_pickle(DUMPERS[dumper](value), "params.dill")
    assert loaded["out"] == PurePosixPath("runs/a")
    assert loaded["set"] == {1, 2} and loaded["frozen"] == frozenset("ab")
    assert loaded["od"] == {"a": 1}


class _WritesMarker:
    """A pickle whose loading would create a file: the classic ``__reduce__`` payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _PlainObject:
    pass


@pytest.mark.parametrize("dumper", DUMPERS)
def test_a_reduce_payload_is_refused_and_never_runs(tmp_path, dumper) -> None:
    marker = tmp_path / "ran"
    data = DUMPERS[dumper]({"N": 64, "probe": _WritesMarker(marker)})
    with pytest.raises(
        UpstreamArchiveError, match=r"params\.dill: refused to unpickle posix\.system"
    ):
        load_pickle(data, "params.dill")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (eval, "builtins.eval"),
        (_PlainObject(), "test_upstream_pickles._PlainObject"),
        (lambda x: x, "dill._dill._create_function"),
        (np.array([1, "a"], dtype=object), "dtype object"),
        (np.zeros(2, dtype=[("a", "f4")]), "structured"),
        (np.ma.masked_array([1.0]), "numpy.ma.core"),
        (type, "the type 'type'"),
    ],
    ids=["builtin", "instance", "function", "object-array", "structured", "subclass", "type"],
)
def test_anything_but_plain_data_is_refused_naming_it(value, named) -> None:
    with pytest.raises(UpstreamArchiveError, match="refused to unpickle") as error:
        load_pickle(dill.dumps({"v": value}), "params.dill")
    assert named in str(error.value)


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_a_size_never_reaches_an_allocation(kind) -> None:
    """``bytes(n)`` / ``bytearray(n)`` would allocate n bytes: a tiny pickle, a huge array."""

    class Allocates:
        def __reduce__(self):
            return (kind, (10**15,))

    for dumper in DUMPERS.values():
        with pytest.raises(
            UpstreamArchiveError, match=f"refused to unpickle builtins.{kind.__name__} of a int"
        ):
            load_pickle(dumper({"v": Allocates()}), "params.dill")


def test_persistent_references_and_oversized_pickles_are_refused() -> None:
    import io

    class Persistent(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if obj == "x" else None

    buffer = io.BytesIO()
    Persistent(buffer).dump(["x"])
    with pytest.raises(UpstreamArchiveError, match="persistent reference"):
        load_pickle(buffer.getvalue(), "model.pth")
    with pytest.raises(UpstreamArchiveError, match="more than the limit"):
        load_pickle(b"\x80" * (MAX_PICKLE_BYTES + 1), "params.dill")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_give_a_value_or_one_clear_error(data) -> None:
    try:
        load_pickle(data, "params.dill")
    except UpstreamArchiveError as error:
        assert str(error).startswith("params.dill: ")
