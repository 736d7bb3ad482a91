"""Hostile and broken input: every mutation of a valid file loads correctly or is refused.

Each property starts from a valid file (dataset NPZ, reconstruction NPZ, bundle,
config document), mutates it the way a damaged disk or an attacker would (truncate,
flip bits, change declared shapes and dtypes, add, duplicate or drop members, swap
JSON types, nest deeply, plant links) and asserts the loader either returns a
correct result or raises the contract's own error: never another exception, never
an allocation beyond the (lowered) byte limit. The memory test at the end runs the
loaders under an address-space limit far below what the files declare.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npy_format
import pytest
from cli_helpers import run_python
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptycho_core.bundle import (
    MANIFEST_NAME,
    PROBE_NAME,
    read_bundle,
    write_bundle,
)
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.data import PtychoData, load_npz, save_npz
from ptycho_core.errors import BundleError, ConfigError, DataContractError, PtychoError
from ptycho_core.npz import read_npy_bytes
from ptycho_core.protocol import TrainedModel
from ptycho_core.results import load_reconstruction, save_reconstruction
from ptycho_core.simulate import SimulationConfig
from ptycho_core.stitching import stitch_patches
from ptycho_core.workflows import load_bundle

pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")

LIMIT = 32 * 1024**2
"""The byte limit in force during the properties, so no mutation can allocate much."""
N = 8
HOSTILE = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def _low_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTYCHO_MAX_ARRAY_BYTES", str(LIMIT))


# ------------------------------------------------------------------ zip and npy surgery


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], descr: Any, body: bytes = b"") -> bytes:
    """An NPY file whose header declares ``shape``/``descr``, followed by ``body``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return b"\x93NUMPY\x01\x00" + buffer.getvalue()[8:] + body


def members_of(raw: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def build_zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we plant
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in members:
                if isinstance(info, str):
                    info = zipfile.ZipInfo(info)
                    info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    return buffer.getvalue()


DECLARED_SHAPES = st.lists(
    st.sampled_from([0, 1, 3, N, 64, 10**6, 10**12, -1]), min_size=0, max_size=4
).map(tuple)
DESCRS = st.sampled_from(
    ["<f4", "<c8", ">f8", "|b1", "<i8", "<U3", "|S2", "|O", "|V8", [("a", "<f4")]]
)


@st.composite
def zip_mutations(draw: st.DrawFn, raw: bytes) -> bytes:
    """One hostile variant of the zip archive ``raw``."""
    kind = draw(
        st.sampled_from(
            ["truncate", "flip", "declare", "add", "bomb", "duplicate", "drop", "garbage", "link"]
        )
    )
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([raw[at] ^ (1 << draw(st.integers(0, 7)))]) + raw[at + 1 :]
    members = members_of(raw)
    index = draw(st.integers(0, len(members) - 1))
    info, data = members[index]
    if kind == "declare":  # the header lies about shape or dtype; the data stays
        offset = 10 + int.from_bytes(data[8:10], "little")
        members[index] = (info, npy_header(draw(DECLARED_SHAPES), draw(DESCRS), data[offset:]))
    elif kind == "add":
        name = draw(st.sampled_from(["extra.npy", "x/../y.npy", "/abs.npy", "payload/z", "a\\b"]))
        members.append((name, draw(st.binary(max_size=64))))
    elif kind == "bomb":  # honest header, more bytes than the limit: 1 MiB deflates tiny
        shape = (LIMIT // 4 + 1,)
        members[index] = (info, npy_header(shape, "<f4", bytes(4 * shape[0])))
    elif kind == "duplicate":
        members.append((info.filename, data))
    elif kind == "drop":
        del members[index]
    elif kind == "garbage":
        members[index] = (info, draw(st.binary(max_size=256)))
    else:  # the member is marked as a symbolic link
        link = zipfile.ZipInfo(info.filename)
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        members[index] = (link, b"/etc/passwd")
    return build_zip(members)


# ------------------------------------------------------------------ datasets


def small_dataset() -> PtychoData:
    rng = np.random.default_rng(0)
    n = 6
    return PtychoData(
        diffraction=rng.random((n, N, N), dtype=np.float32),
        xcoords=np.linspace(5.0, 10.0, n),
        ycoords=np.linspace(6.0, 9.0, n),
        probe=(rng.random((N, N)) + 1j).astype(np.complex64),
        object=np.ones((24, 24), np.complex64),
        scan_index=np.zeros(n, np.int64),
    )


@pytest.fixture(scope="module")
def dataset_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "data.npz"
    save_npz(small_dataset(), path)
    return path.read_bytes()


def _check_dataset(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a legacy-layout warning is a correct load
        loaded = load_npz(path)
    assert loaded.diffraction.dtype == np.float32 and loaded.diffraction.ndim == 3
    assert loaded.probe.shape == (loaded.N, loaded.N)


def _check_reconstruction(path: Path) -> None:
    stitched = load_reconstruction(path)
    assert stitched.image.ndim == 2 and stitched.weight.shape == stitched.image.shape


@HOSTILE
@given(data=st.data())
@pytest.mark.parametrize(
    ("valid", "check"),
    [("dataset_bytes", _check_dataset), ("reconstruction_bytes", _check_reconstruction)],
)
def test_a_mutated_npz_loads_or_is_refused(
    data: st.DataObject, valid: str, check: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    path = tmp_path / "mutated.npz"
    path.write_bytes(data.draw(zip_mutations(request.getfixturevalue(valid))))
    try:
        check(path)
    except DataContractError as error:
        assert str(path) in str(error)


@HOSTILE
@given(
    x=st.floats(allow_nan=False, allow_infinity=False, width=64),
    y=st.floats(allow_nan=False, allow_infinity=False, width=64),
)
def test_any_coordinates_without_an_object_load_or_are_refused(
    x: float, y: float, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Positions size the stitching canvas when no objectGuess does; 1e300 must not."""
    path = tmp_path_factory.mktemp("coords") / "far.npz"
    data = small_dataset()
    xs, ys = data.xcoords.copy(), data.ycoords.copy()
    xs[-1], ys[-1] = x, y
    arrays = {"diffraction": data.diffraction, "xcoords": xs, "ycoords": ys}
    np.savez(path, probeGuess=data.probe, **arrays)
    try:
        loaded = load_npz(path)
        stitched = stitch_patches(
            np.ones((loaded.n_positions, N, N)), loaded.xcoords, loaded.ycoords, M=4
        )
    except DataContractError:
        return
    assert stitched.image.size <= 1 << 28


# ------------------------------------------------------------------ reconstructions


@pytest.fixture(scope="module")
def reconstruction_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "reconstruction.npz"
    stitched = stitch_patches(np.ones((3, N, N)), np.array([4.0, 6, 8]), np.array([4.0, 5, 6]), M=4)
    save_reconstruction(stitched, path, backend="numpy-gain")
    return path.read_bytes()


# ------------------------------------------------------------------ bundles

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def bundle_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "model.ptycho"
    config = TrainingConfig(backend="direct-zero", model=ModelConfig(N=64))
    model = TrainedModel(
        backend="direct-zero",
        config=config,
        probe=np.ones((64, 64), np.complex64),
        intensity_scale=2.0,
        network=None,
        history={"loss": [3.0, 2.0]},
        extra={"note": "valid"},
    )

    def payload(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)

    write_bundle(path, model, payload, framework={})
    return path.read_bytes()


def _set_at(document: Any, path: list[Any], value: Any) -> Any:
    if not path or not isinstance(document, dict | list) or not document:
        return value
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[path[0] % len(keys)]
    document[key] = _set_at(document[key], path[1:], value)
    return document


@st.composite
def bundle_mutations(draw: st.DrawFn, raw: bytes) -> bytes:
    kind = draw(st.sampled_from(["zip", "manifest", "nest", "probe"]))
    if kind == "zip":
        return draw(zip_mutations(raw))
    members = members_of(raw)
    by_name = {info.filename: i for i, (info, _) in enumerate(members)}
    manifest = json.loads(members[by_name[MANIFEST_NAME]][1])
    if kind == "manifest":  # any field, at any depth, becomes any JSON value
        where = draw(st.lists(st.integers(0, 40), min_size=1, max_size=4))
        manifest = _set_at(manifest, where, draw(JSON))
        text = json.dumps(manifest).encode()
    elif kind == "nest":  # deep enough to exhaust a recursive parser
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        text = (
            json.dumps(manifest)[:-1].encode() + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
        )
    else:  # a probe the checksum accepts: the array checks must refuse it
        body = npy_header(draw(DECLARED_SHAPES), draw(DESCRS), draw(st.binary(max_size=64)))
        probe_index = by_name[PROBE_NAME]
        members[probe_index] = (members[probe_index][0], body)
        manifest["probe"].update(size=len(body), sha256=hashlib.sha256(body).hexdigest())
        text = json.dumps(manifest).encode()
    index = by_name[MANIFEST_NAME]
    members[index] = (members[index][0], text)
    return build_zip(members)


@HOSTILE
@given(data=st.data())
def test_a_mutated_bundle_loads_or_is_refused(
    data: st.DataObject, bundle_bytes: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "mutated.ptycho"
    path.write_bytes(data.draw(bundle_mutations(bundle_bytes)))
    try:
        model = load_bundle(path)
        with read_bundle(path) as contents:
            payload = sorted(p.name for p in contents.payload_dir.iterdir())
    except BundleError as error:
        assert str(path) in str(error)
        return
    except PtychoError:  # e.g. a manifest naming a backend that is not installed
        return
    assert model.probe.shape == (64, 64) and payload == ["weights.bin"]


def test_a_bundle_given_as_a_folder_or_a_link_to_one_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model.ptycho"
    (folder / "payload").mkdir(parents=True)
    (folder / MANIFEST_NAME).write_text("{}")
    link = tmp_path / "link.ptycho"
    link.symlink_to(folder)
    for path in (folder, link):
        with pytest.raises(BundleError, match="not a regular file"):
            load_bundle(path)


# ------------------------------------------------------------------ configs

CONFIGS = [TrainingConfig, InferenceConfig, ModelConfig, SimulationConfig]


@settings(max_examples=600, deadline=None)
@given(kind=st.sampled_from(CONFIGS), document=JSON)
def test_any_json_document_parses_or_is_a_config_error(kind: type, document: Any) -> None:
    try:
        config = kind.from_dict(document)
    except ConfigError:
        return
    assert kind.from_dict(config.to_dict()) == config


@settings(max_examples=600, deadline=None)
@given(
    kind=st.sampled_from(CONFIGS),
    where=st.lists(st.integers(0, 60), min_size=1, max_size=2),
    value=JSON | st.integers(min_value=-(10**30), max_value=10**30),
)
def test_a_valid_config_with_any_field_swapped_parses_or_is_a_config_error(
    kind: type, where: list[int], value: Any
) -> None:
    document = _set_at(kind().to_dict(), where, value)
    try:
        config = kind.from_json(json.dumps(document))
    except ConfigError:
        return
    assert kind.from_dict(config.to_dict()) == config


OPTION_LIKE = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,3}", fullmatch=True) | st.text(max_size=4),
    JSON | st.integers(min_value=-(10**30), max_value=10**30) | st.text(min_size=1020),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from([TrainingConfig, InferenceConfig]), value=JSON | OPTION_LIKE)
def test_any_json_as_backend_options_parses_or_is_a_config_error(kind: type, value: Any) -> None:
    text = json.dumps({"backend_options": value})
    try:
        config = kind.from_json(text)
    except ConfigError as error:
        assert f"{kind.__name__}.backend_options" in str(error)
        return
    assert isinstance(value, dict) and dict(config.backend_options) == value
    assert kind.from_json(config.to_json()) == config


@settings(HOSTILE, max_examples=150)
@given(value=JSON | OPTION_LIKE)
def test_a_bundle_with_any_backend_options_loads_or_is_refused(
    value: Any, bundle_bytes: bytes, tmp_path: Path
) -> None:
    members = members_of(bundle_bytes)
    index = next(i for i, (info, _) in enumerate(members) if info.filename == MANIFEST_NAME)
    manifest = json.loads(members[index][1])
    manifest["config"]["backend_options"] = value
    members[index] = (members[index][0], json.dumps(manifest).encode())
    path = tmp_path / "options.ptycho"
    path.write_bytes(build_zip(members))
    try:
        model = load_bundle(path)
    except BundleError as error:
        message = str(error)  # the manifest's JSON is strict: no Infinity either
        assert str(path) in message
        assert "backend_options" in message or "non-standard JSON constant" in message
        return
    assert dict(model.config.backend_options) == value


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40) | st.sampled_from(["[" * 100_000, '{"model": ' * 50_000]))
def test_any_text_parses_or_is_a_config_error(text: str) -> None:
    try:
        config = TrainingConfig.from_json(text)
    except ConfigError:
        return
    assert isinstance(config, TrainingConfig)


def test_counts_that_drive_memory_or_time_are_bounded() -> None:
    for kind, field, value in [
        (ModelConfig, "gridsize", 10**6),
        (ModelConfig, "n_filters_scale", 10**6),
        (ModelConfig, "offset", 10**9),
        (TrainingConfig, "nepochs", 10**12),
        (TrainingConfig, "n_groups", 10**12),
        (InferenceConfig, "iterations", 10**12),
        (InferenceConfig, "batch_size", 10**12),
        (SimulationConfig, "n_positions", 10**12),
        (SimulationConfig, "object_size", 10**6),
    ]:
        with pytest.raises(ConfigError, match=field):
            kind.from_dict({field: value})


# ------------------------------------------------------------------ memory

MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from ptycho_core.bundle import read_bundle
    from ptycho_core.data import load_npz
    from ptycho_core.errors import PtychoError
    from ptycho_core.results import load_reconstruction

    status = open("/proc/self/status").read()
    used = int(next(l for l in status.splitlines() if l.startswith("VmSize")).split()[1]) * 1024
    headroom = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (used + headroom, used + headroom))
    loaders = {"npz": load_npz, "rec": load_reconstruction}
    for spec in sys.argv[2:]:
        kind, path = spec.split("=", 1)
        try:
            if kind == "bundle":
                with read_bundle(path):
                    pass
            else:
                loaders[kind](path)
            print("LOADED", path)
        except PtychoError as error:
            print(type(error).__name__, path)
    """
)


def test_files_declaring_more_than_the_limit_are_refused_before_allocation(
    tmp_path: Path, dataset_bytes: bytes, reconstruction_bytes: bytes, bundle_bytes: bytes
) -> None:
    headroom = 256 * 1024**2
    files: list[str] = []

    def plant(kind: str, name: str, raw: bytes, member: str, head: bytes, zeros: int = 0) -> None:
        """``raw`` with ``member`` replaced by ``head`` and ``zeros`` zero bytes (streamed)."""
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in members_of(raw):
                if info.filename != member:
                    archive.writestr(info, data)
            with archive.open(member, "w", force_zip64=True) as sink:
                sink.write(head)
                for _ in range(zeros // 2**24):
                    sink.write(bytes(2**24))
        files.append(f"{kind}={path}")

    petabytes = npy_header((10**12, 64, 64), "<f4", bytes(64))
    plant("npz", "lying.npz", dataset_bytes, "diffraction.npy", petabytes)
    declared = 512 * 1024**2  # honest: the zeros deflate to about half a megabyte
    honest = npy_header((declared // 4,), "<f4")
    plant("npz", "inflating.npz", dataset_bytes, "diffraction.npy", honest, declared)
    plant("rec", "lying-rec.npz", reconstruction_bytes, "object.npy", petabytes)
    plant("rec", "inflating-rec.npz", reconstruction_bytes, "weight.npy", honest, declared)
    plant("npz", "extra-key.npz", dataset_bytes, "unused.npy", honest, declared)  # never read
    members = members_of(bundle_bytes)
    manifest = json.loads(next(d for i, d in members if i.filename == MANIFEST_NAME))
    probe = npy_header((10**6, 10**6), "<c8", bytes(64))
    manifest["probe"].update(size=len(probe), sha256=hashlib.sha256(probe).hexdigest())
    kept = [(i, d) for i, d in members if i.filename not in (MANIFEST_NAME, PROBE_NAME)]
    path = tmp_path / "probe.ptycho"
    path.write_bytes(
        build_zip([*kept, (PROBE_NAME, probe), (MANIFEST_NAME, json.dumps(manifest).encode())])
    )
    files.append(f"bundle={path}")
    limit = {"PTYCHO_MAX_ARRAY_BYTES": str(128 * 1024**2)}
    result = run_python("-c", MEMORY_SCRIPT, str(headroom), *files, env=limit)
    assert result.returncode == 0, result.stderr
    outcome = dict(line.split(" ", 1)[::-1] for line in result.stdout.splitlines())
    expected = {
        "lying.npz": "DataContractError",
        "inflating.npz": "DataContractError",
        "lying-rec.npz": "DataContractError",
        "inflating-rec.npz": "DataContractError",
        "extra-key.npz": "LOADED",
        "probe.ptycho": "BundleError",
    }
    assert {Path(p).name: v for p, v in outcome.items()} == expected, result.stdout


@pytest.mark.parametrize(
    "header",
    [
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (24, 24(, }",  # tokenizer error
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (24, 24)) }",  # parser error
        b"{'descr': '<f4', 'fortran_order': False, 'shape': " + b"(" * 5000 + b"}",  # depth
    ],
)
def test_an_npy_header_numpy_cannot_parse_is_the_contract_error(header: bytes) -> None:
    """numpy parses headers as Python literals; every way that fails is refused alike."""
    padded = header.ljust(((len(header) + 11) // 64 + 1) * 64 - 11) + b"\n"
    raw = b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded
    with pytest.raises(DataContractError, match="expected a valid NPY array header"):
        read_npy_bytes(raw, what="probe.npy", fail=DataContractError)


@pytest.mark.parametrize("shape", [(0, 10**20), (10**19, 0, 3), (0,) * 3 + (2**62,)])
def test_an_empty_array_declaring_an_unaddressable_dimension_is_refused(
    shape: tuple[int, ...], tmp_path: Path
) -> None:
    """Zero elements, but a dimension no array can have: the contract's error, not numpy's."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    npy_format.write_array_header_2_0(buffer, header)
    with pytest.raises(DataContractError, match="PTYCHO_MAX_ARRAY_BYTES"):
        read_npy_bytes(buffer.getvalue(), what="x.npy", fail=DataContractError)
