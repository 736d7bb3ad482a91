"""The bundle format: round trips through a real backend, and every refusal.

The backend is the installed test backend 'numpy-gain' (tests/plugins/), selected
through its entry point; broken bundles are crafted with ``zipfile`` directly.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import itertools
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ptycho_core
from ptycho_core.backend_selector import select_backend
from ptycho_core.bundle import (
    BUNDLE_EXTENSION,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PROBE_NAME,
    check_member_name,
    read_bundle,
    read_manifest,
    write_bundle,
)
from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.errors import BackendMismatchError, BundleError, PtychoError
from ptycho_core.grouping import GroupedData
from ptycho_core.hooks import hookimpl, make_plugin_manager
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_core.workflows import load_bundle, save_bundle

pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")

N = 64
C_TRUE = 0.8 * np.exp(0.4j)


# --------------------------------------------------------------------------- helpers


def amplitude(field: np.ndarray) -> np.ndarray:
    """sqrt(fftshift(|fft2 ψ|²) / N²), written out again here as the test's reference."""
    return np.sqrt(np.fft.fftshift(np.abs(np.fft.fft2(field)) ** 2 / field.shape[-1] ** 2))


def make_probe(n: int = N) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disk = np.hypot(xx, yy) < n / 6
    return (disk * np.exp(0.01j * (xx**2 + yy**2))).astype(np.complex64)


def make_groups(n_groups: int, *, n: int = N, seed: int = 0, channels: int = 1) -> GroupedData:
    rng = np.random.default_rng(seed)
    clean = abs(C_TRUE) * amplitude(make_probe(n).astype(np.complex128))
    noisy = clean[None, :, :, None] * (1 + 0.05 * rng.standard_normal((n_groups, n, n, channels)))
    return GroupedData(
        diffraction=np.abs(noisy).astype(np.float32),
        coords_relative=np.zeros((n_groups, 1, 2, channels), np.float32),
        coords_offsets=rng.uniform(20, 80, (n_groups, 1, 2, 1)),
        nn_indices=np.arange(n_groups * channels, dtype=np.int64).reshape(n_groups, channels),
        normalisation=1.0,
    )


def make_training_data(n_groups: int = 12, *, n: int = N, seed: int = 0) -> TrainingData:
    return TrainingData(
        groups=make_groups(n_groups, n=n, seed=seed),
        probe=make_probe(n),
        intensity_scale=math.sqrt(1e6) / (n / 2),
    )


def make_config(**changes: Any) -> TrainingConfig:
    values: dict[str, Any] = {
        "backend": "numpy-gain",
        "nepochs": 6,
        "batch_size": 4,
        "validation_split": 0.25,
        "nphotons": 1e6,
        "seed": 7,
    }
    values.update(changes)
    return TrainingConfig(**values)


class Recorder:
    """A real hook plugin that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def ptycho_train_start(self, backend: str, config: Any, n_groups: int) -> None:
        self.calls.append(("train_start", {"backend": backend, "n_groups": n_groups}))

    @hookimpl
    def ptycho_epoch_end(self, epoch: int, nepochs: int, losses: Mapping[str, float]) -> None:
        self.calls.append(("epoch_end", {"epoch": epoch, "nepochs": nepochs, **losses}))

    @hookimpl
    def ptycho_train_end(self, history: Mapping[str, Any]) -> None:
        self.calls.append(("train_end", {"history": {k: list(v) for k, v in history.items()}}))

    @hookimpl
    def ptycho_infer_progress(self, done: int, total: int) -> None:
        self.calls.append(("infer_progress", {"done": done, "total": total}))


def hooks_for(recorder: Recorder) -> Any:
    return make_plugin_manager(recorder, load_entry_points=False).hook


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    backend = select_backend("numpy-gain")
    return backend.train(make_training_data(), make_config(), hooks=hooks_for(Recorder()))


@pytest.fixture
def bundle(tmp_path: Path, trained: TrainedModel) -> Path:
    path = tmp_path / f"model{BUNDLE_EXTENSION}"
    select_backend("numpy-gain").save(trained, path)
    return path


def rewrite(
    source: Path,
    target: Path,
    *,
    manifest: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    members: Mapping[str, bytes | None] | None = None,
    raw_manifest: bytes | None = None,
) -> Path:
    """Copy a bundle member by member, editing the manifest and replacing/dropping members."""
    members = dict(members or {})
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == MANIFEST_NAME:
                if raw_manifest is not None:
                    data = raw_manifest
                elif manifest is not None:
                    data = json.dumps(manifest(json.loads(data))).encode()
            if info.filename in members:
                data = members.pop(info.filename)
                if data is None:
                    continue
            zout.writestr(zipfile.ZipInfo(info.filename), data)
        for name, data in members.items():
            if data is not None:
                zout.writestr(zipfile.ZipInfo(name), data)
    return target


# ------------------------------------------------------------------- the test backend


def test_numpy_gain_trains_for_real_and_reports_through_hooks(trained: TrainedModel) -> None:
    recorder = Recorder()
    data = make_training_data()
    config = make_config()
    model = select_backend("numpy-gain").train(data, config, hooks=hooks_for(recorder))
    train_part, _ = data.split(config.validation_split)
    a_p = amplitude(data.probe.astype(np.complex128))[None, :, :, None]
    x = train_part.groups.diffraction.astype(np.float64)
    least_squares = float(np.sum(a_p * x) / np.sum(np.broadcast_to(a_p, x.shape) ** 2))
    # half-Newton steps from c = 1: the distance to the optimum halves every epoch
    expected = least_squares + (1 - least_squares) * 0.5**config.nepochs
    assert abs(complex(model.network)) == pytest.approx(expected, rel=1e-9)
    assert least_squares == pytest.approx(abs(C_TRUE), rel=0.01)
    losses = model.history["loss"]
    assert len(losses) == config.nepochs and len(model.history["val_loss"]) == config.nepochs
    assert all(b < a for a, b in itertools.pairwise(losses))
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds == ["train_start"] + ["epoch_end"] * config.nepochs + ["train_end"]
    assert recorder.calls[0][1] == {"backend": "numpy-gain", "n_groups": train_part.n_groups}
    assert [c[1]["epoch"] for c in recorder.calls[1:-1]] == list(range(config.nepochs))
    assert recorder.calls[-1][1]["history"] == {k: list(v) for k, v in model.history.items()}
    # deterministic for a seed
    assert model.history == trained.history and complex(model.network) == complex(trained.network)


def test_numpy_gain_rejects_data_of_another_size(trained: TrainedModel) -> None:
    backend = select_backend("numpy-gain")
    with pytest.raises(
        ValueError,
        match=r"expected shape \(B, 64, 64, 1\) for the model's N=64.*\(3, 128, 128, 1\)",
    ):
        backend.infer(
            trained, make_groups(3, n=128), InferenceConfig(), hooks=hooks_for(Recorder())
        )
    with pytest.raises(ValueError, match=r"expected groups of 64×64×1 .*found 128×128×1"):
        backend.train(make_training_data(n=128), make_config(), hooks=hooks_for(Recorder()))


# ------------------------------------------------------------------------ round trips


def test_round_trip_gives_identical_inference(bundle: Path, trained: TrainedModel) -> None:
    backend = select_backend("numpy-gain")
    groups = make_groups(10, seed=3)
    recorder = Recorder()
    before = backend.infer(
        trained, groups, InferenceConfig(batch_size=4), hooks=hooks_for(recorder)
    )
    assert before.shape == (10, N, N, 1) and before.dtype == np.complex64
    assert [c[1] for c in recorder.calls] == [
        {"done": 4, "total": 10},
        {"done": 8, "total": 10},
        {"done": 10, "total": 10},
    ]
    for loaded in (backend.load(bundle), load_bundle(bundle)):
        after = backend.infer(loaded, groups, InferenceConfig(), hooks=hooks_for(Recorder()))
        np.testing.assert_array_equal(after, before)
        assert loaded.backend == "numpy-gain"
        assert loaded.config == trained.config
        assert loaded.intensity_scale == trained.intensity_scale
        assert loaded.history == trained.history
        assert loaded.extra == trained.extra
        assert loaded.probe.dtype == np.complex64
        np.testing.assert_array_equal(loaded.probe, trained.probe)


def test_save_bundle_dispatches_on_model_backend(tmp_path: Path, trained: TrainedModel) -> None:
    path = tmp_path / "saved.ptycho"
    save_bundle(trained, path)
    assert read_manifest(path)["backend"] == "numpy-gain"
    assert complex(load_bundle(path).network) == complex(trained.network)


def test_manifest_fields(bundle: Path, trained: TrainedModel) -> None:
    manifest = read_manifest(bundle)
    with zipfile.ZipFile(bundle) as archive:
        assert sorted(archive.namelist()) == sorted(
            [MANIFEST_NAME, PROBE_NAME, "payload/weights.npz"]
        )
        weights = archive.read("payload/weights.npz")
        probe_bytes = archive.read(PROBE_NAME)
        assert json.loads(archive.read(MANIFEST_NAME)) == manifest
    assert manifest["format"] == "ptycho-bundle"
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["backend"] == "numpy-gain"
    assert manifest["distribution"] == "ptycho-testbackends"
    assert manifest["distribution_version"] == importlib.metadata.version("ptycho-testbackends")
    assert manifest["framework"] == {"numpy": np.__version__}
    assert manifest["ptycho_version"] == ptycho_core.__version__
    created = datetime.fromisoformat(manifest["created_utc"].replace("Z", "+00:00"))
    assert manifest["created_utc"].endswith("Z")
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    assert manifest["config"] == trained.config.to_dict()
    assert manifest["N"] == N and manifest["gridsize"] == 1
    assert manifest["intensity_scale"] == trained.intensity_scale
    assert manifest["history"] == {k: list(v) for k, v in trained.history.items()}
    assert manifest["extra"] == dict(trained.extra)
    assert manifest["payload"] == {
        "weights.npz": {"size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
    }
    assert manifest["probe"]["sha256"] == hashlib.sha256(probe_bytes).hexdigest()
    probe = np.load(io.BytesIO(probe_bytes), allow_pickle=False)
    assert probe.dtype == np.complex64 and probe.shape == (N, N)


def test_unregistered_backend_records_null_distribution(
    tmp_path: Path, trained: TrainedModel
) -> None:
    model = TrainedModel(
        backend="used-directly-not-registered",
        config=trained.config,
        probe=trained.probe,
        intensity_scale=2.0,
        network=None,
        history={"loss": [3.0, float("nan"), 1.0]},
        extra={"gain": np.float32(1.5), "layers": (1, 2)},
    )
    path = tmp_path / "direct.ptycho"

    def write_payload(folder: Path) -> None:
        (folder / "sub").mkdir()
        (folder / "sub" / "w.bin").write_bytes(b"\x00\x01" * 100)

    write_bundle(path, model, write_payload, framework={})
    manifest = read_manifest(path)
    assert manifest["distribution"] is None and manifest["distribution_version"] is None
    assert manifest["history"] == {"loss": [3.0, None, 1.0]}  # a diverged epoch is null
    assert manifest["extra"] == {"gain": 1.5, "layers": [1, 2]}
    with read_bundle(path) as contents:
        assert (contents.payload_dir / "sub" / "w.bin").read_bytes() == b"\x00\x01" * 100
        assert math.isnan(contents.history["loss"][1])
        rebuilt = contents.trained_model(network="net")
        payload_dir = contents.payload_dir
    assert not payload_dir.exists()
    assert rebuilt.backend == "used-directly-not-registered" and rebuilt.network == "net"
    assert rebuilt.intensity_scale == 2.0 and rebuilt.extra == {"gain": 1.5, "layers": [1, 2]}


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=25, deadline=None)
@given(extra=st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4))
def test_extra_round_trips_exactly(extra: dict[str, Any]) -> None:
    model = TrainedModel(
        backend="anything",
        config=TrainingConfig(),
        probe=make_probe(),
        intensity_scale=1.0,
        network=None,
        extra=extra,
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "b.ptycho"
        write_bundle(path, model, lambda _: None, framework={"numpy": np.__version__})
        with read_bundle(path) as contents:
            assert contents.extra == extra


def test_cross_backend_load_names_both(tmp_path: Path) -> None:
    zero = select_backend("direct-zero")
    model = zero.train(
        make_training_data(4),
        make_config(backend="direct-zero", nepochs=1),
        hooks=hooks_for(Recorder()),
    )
    path = tmp_path / "zero.ptycho"
    zero.save(model, path)
    assert read_manifest(path)["payload"] == {}  # an empty payload is valid
    with pytest.raises(BackendMismatchError) as caught:
        select_backend("numpy-gain").load(path)
    message = str(caught.value)
    assert isinstance(caught.value, BundleError) and isinstance(caught.value, ValueError)
    assert "'direct-zero'" in message and "'numpy-gain'" in message and str(path) in message
    loaded = load_bundle(path)  # dispatch by manifest picks the right backend
    assert loaded.backend == "direct-zero"
    out = select_backend("direct-zero").infer(
        loaded, make_groups(2), InferenceConfig(), hooks=hooks_for(Recorder())
    )
    assert out.shape == (2, N, N, 1) and not out.any()


# ------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.99])
def test_truncated_bundle(bundle: Path, tmp_path: Path, keep: float) -> None:
    data = bundle.read_bytes()
    cut = tmp_path / "cut.ptycho"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(BundleError, match="truncated or corrupt") as caught, read_bundle(cut):
        pass
    assert str(cut) in str(caught.value)
    with pytest.raises(BundleError):
        read_manifest(cut)


def _data_offset(path: Path, name: str) -> tuple[int, zipfile.ZipInfo]:
    """Where member ``name``'s (compressed) data starts in the file."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    raw = path.read_bytes()
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len, info


def test_flipped_byte_in_payload_is_detected(bundle: Path, tmp_path: Path) -> None:
    start, info = _data_offset(bundle, "payload/weights.npz")
    data = bytearray(bundle.read_bytes())
    data[start + info.compress_size // 2] ^= 0xFF
    corrupt = tmp_path / "flipped.ptycho"
    corrupt.write_bytes(bytes(data))
    with (
        pytest.raises(BundleError, match=r"'payload/weights.npz' is corrupt"),
        read_bundle(corrupt),
    ):
        pass


def test_payload_not_matching_manifest_checksum(bundle: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        weights = bytearray(archive.read("payload/weights.npz"))
    weights[-30] ^= 0x01
    corrupt = rewrite(
        bundle, tmp_path / "sha.ptycho", members={"payload/weights.npz": bytes(weights)}
    )
    with (
        pytest.raises(BundleError, match=r"'weights\.npz' does not match manifest\.json"),
        read_bundle(corrupt),
    ):
        pass


def test_foreign_zip_and_foreign_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    with pytest.raises(
        BundleError, match=r"'manifest.json' is missing; this is not a ptycho bundle"
    ):
        read_manifest(foreign)
    text = tmp_path / "notes.ptycho"
    text.write_text("just text\n")
    with pytest.raises(BundleError, match="not a zip archive") as caught, read_bundle(text):
        pass
    assert str(text) in str(caught.value)
    with pytest.raises(BundleError, match="no such file"):
        read_manifest(tmp_path / "absent.ptycho")
    with pytest.raises(BundleError, match="not a regular file"):
        read_manifest(tmp_path)


def test_other_format_name_is_refused(bundle: Path, tmp_path: Path) -> None:
    path = rewrite(bundle, tmp_path / "other.ptycho", manifest=lambda m: {**m, "format": "keras"})
    with pytest.raises(BundleError, match="not a ptycho bundle"):
        read_manifest(path)


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "payload/../../evil.txt",
        "/tmp/evil.txt",
        "C:/evil.txt",
        "c:evil.txt",
        "payload\\..\\evil.txt",
        "payload/./x",
        "payload//x",
    ],
)
def test_unsafe_member_names_are_refused(bundle: Path, tmp_path: Path, name: str) -> None:
    path = rewrite(bundle, tmp_path / "unsafe.ptycho", members={name: b"evil"})
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    with pytest.raises(BundleError, match="unsafe member name"), read_bundle(path):
        pass
    with pytest.raises(BundleError, match="unsafe member name"):
        read_manifest(path)
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert not (tmp_path / "evil.txt").exists()


def test_oversized_member_and_too_many_members(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
    largest = max(sizes, key=sizes.__getitem__)
    size = sizes[largest]
    with (
        pytest.raises(BundleError, match=f"member '{largest}' declares {size} bytes, more than"),
        read_bundle(bundle, max_member_bytes=size - 1),
    ):
        pass
    with (
        pytest.raises(BundleError, match="3 members, more than the limit of 2"),
        read_bundle(bundle, max_members=2),
    ):
        pass
    total = sum(sizes.values())
    with (
        pytest.raises(BundleError, match=f"more than the limit of {total - 1} bytes"),
        read_bundle(bundle, max_total_bytes=total - 1),
    ):
        pass
    with read_bundle(bundle, max_member_bytes=size, max_members=3, max_total_bytes=total) as c:
        assert (c.payload_dir / "weights.npz").stat().st_size == sizes["payload/weights.npz"]


def test_member_larger_than_its_header_says_is_refused(
    tmp_path: Path, trained: TrainedModel
) -> None:
    """Sizes are counted while reading: a header that lies does not get more bytes through."""
    big = bytes(range(256)) * 400  # 102400 bytes, larger than probe.npy
    source = tmp_path / "big.ptycho"
    write_bundle(source, trained, lambda d: (d / "big.bin").write_bytes(big), framework={})
    stored = tmp_path / "stored.ptycho"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(stored, "w") as zout:
        for info in zin.infolist():
            zout.writestr(zipfile.ZipInfo(info.filename), zin.read(info))  # ZIP_STORED
    data = bytearray(stored.read_bytes())
    # walk the central directory (its offset is in the end record) to the member's record
    end = data.rfind(b"PK\x05\x06")
    record = int.from_bytes(data[end + 16 : end + 20], "little")
    while True:
        assert data[record : record + 4] == b"PK\x01\x02"
        lengths = [
            int.from_bytes(data[record + i : record + i + 2], "little") for i in (28, 30, 32)
        ]
        if data[record + 46 : record + 46 + lengths[0]] == b"payload/big.bin":
            break
        record += 46 + sum(lengths)
    assert int.from_bytes(data[record + 24 : record + 28], "little") == len(big)
    data[record + 24 : record + 28] = (10).to_bytes(4, "little")  # declare 10 bytes
    lying = tmp_path / "lying.ptycho"
    lying.write_bytes(bytes(data))
    assert zipfile.ZipFile(lying).getinfo("payload/big.bin").file_size == 10
    with (
        pytest.raises(BundleError, match=r"member 'payload/big\.bin' is (corrupt|larger)"),
        read_bundle(lying, max_member_bytes=50_000),
    ):
        pass


def test_newer_format_version_asks_for_an_upgrade(bundle: Path, tmp_path: Path) -> None:
    path = rewrite(bundle, tmp_path / "v2.ptycho", manifest=lambda m: {**m, "format_version": 2})
    with pytest.raises(BundleError, match=r"format version 2 .* newer .* upgrade ptycho"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: {k: v for k, v in m.items() if k != "intensity_scale"},
            "'intensity_scale' is missing",
        ),
        (lambda m: {**m, "N": "64"}, "field 'N': expected a positive integer, found '64'"),
        (lambda m: {**m, "N": 128}, r"field 'N': expected 64 \(config.model.N\)"),
        (
            lambda m: {**m, "intensity_scale": -1.0},
            "'intensity_scale': expected a finite number > 0",
        ),
        (lambda m: {**m, "payload": {"w": {"size": 1}}}, "field 'payload'"),
        (lambda m: {**m, "payload": {"../w": m["payload"]["weights.npz"]}}, "'../w' is refused"),
        (lambda m: {**m, "config": {**m["config"], "bogus": 1}}, "field 'config': .*'bogus'"),
        (lambda m: {**m, "history": {"loss": ["x"]}}, "field 'history'"),
        (lambda m: [1, 2], "expected a JSON object, found list"),
    ],
)
def test_bad_manifest_fields(
    bundle: Path, tmp_path: Path, edit: Callable[[Any], Any], message: str
) -> None:
    path = rewrite(bundle, tmp_path / "bad.ptycho", manifest=edit)
    with pytest.raises(BundleError, match=message) as caught, read_bundle(path):
        pass
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": 1, "a": 2}', b'{"a": NaN}', b"\xff\xfe"])
def test_manifest_that_is_not_valid_json(bundle: Path, tmp_path: Path, raw: bytes) -> None:
    path = rewrite(bundle, tmp_path / "json.ptycho", raw_manifest=raw)
    with pytest.raises(BundleError, match=r"manifest.json is not valid JSON"):
        read_manifest(path)


def test_payload_members_must_match_the_manifest(bundle: Path, tmp_path: Path) -> None:
    extra = rewrite(bundle, tmp_path / "extra.ptycho", members={"payload/sneaky.bin": b"x"})
    with pytest.raises(BundleError, match=r"not listed in manifest.json"):
        read_manifest(extra)
    missing = rewrite(bundle, tmp_path / "missing.ptycho", members={"payload/weights.npz": None})
    with pytest.raises(BundleError, match=r"listed in manifest.json are missing"):
        read_manifest(missing)


def _with_probe(bundle: Path, target: Path, probe_bytes: bytes) -> Path:
    digest = hashlib.sha256(probe_bytes).hexdigest()
    return rewrite(
        bundle,
        target,
        members={PROBE_NAME: probe_bytes},
        manifest=lambda m: {
            **m,
            "probe": {**m["probe"], "size": len(probe_bytes), "sha256": digest},
        },
    )


def test_probe_is_checked_and_never_unpickled(bundle: Path, tmp_path: Path) -> None:
    small = io.BytesIO()
    np.save(small, np.ones((32, 32), np.complex64))
    path = _with_probe(bundle, tmp_path / "small.ptycho", small.getvalue())
    with (
        pytest.raises(BundleError, match=r"probe.npy: expected shape \(64, 64\)"),
        read_bundle(path),
    ):
        pass
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    path = _with_probe(bundle, tmp_path / "pickled.ptycho", pickled.getvalue())
    with (
        pytest.raises(BundleError, match=r"probe.npy: .*pickled object arrays are refused"),
        read_bundle(path),
    ):
        pass
    path = rewrite(bundle, tmp_path / "probe-sha.ptycho", members={PROBE_NAME: small.getvalue()})
    with (
        pytest.raises(BundleError, match=r"probe.npy does not match manifest.json"),
        read_bundle(path),
    ):
        pass


def test_payload_folder_is_private_and_removed(bundle: Path) -> None:
    with read_bundle(bundle, expected_backend="numpy-gain") as contents:
        folder = contents.payload_dir
        assert sorted(p.name for p in folder.iterdir()) == ["weights.npz"]
        assert (folder.parent.stat().st_mode & 0o077) == 0  # mkdtemp: owner only
    assert not folder.exists() and not folder.parent.exists()
    with pytest.raises(BundleError), read_bundle(bundle, max_members=1):
        pass


# --------------------------------------------------------------------- atomic writes


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_interrupted_save_keeps_the_previous_bundle(bundle: Path, trained: TrainedModel) -> None:
    previous = bundle.read_bytes()
    seen: list[Path] = []

    def fails_midway(folder: Path) -> None:
        seen.append(folder)
        (folder / "half.bin").write_bytes(b"\x00" * 1000)
        raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="disk full"):
        write_bundle(bundle, trained, fails_midway, framework={})
    assert bundle.read_bytes() == previous
    assert _files(bundle.parent) == [bundle.name]
    assert seen and not seen[0].exists() and not seen[0].parent.exists()


def test_refused_payloads_keep_the_previous_bundle(
    bundle: Path, trained: TrainedModel, tmp_path: Path
) -> None:
    previous = bundle.read_bytes()
    outside = tmp_path.parent / f"{tmp_path.name}-outside.bin"
    outside.write_bytes(b"secret")

    def writes_a_link(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"ok")
        os.symlink(outside, folder / "link.bin")

    def writes_a_fifo(folder: Path) -> None:
        os.mkfifo(folder / "pipe")

    def writes_a_backslash(folder: Path) -> None:
        (folder / "a\\b").write_bytes(b"x")

    for write_payload, message in [
        (writes_a_link, "'link.bin' is a symbolic link"),
        (writes_a_fifo, "'pipe' is not a regular file"),
        (writes_a_backslash, "backslash"),
    ]:
        with pytest.raises(BundleError, match=message):
            write_bundle(bundle, trained, write_payload, framework={})
        assert bundle.read_bytes() == previous
        assert _files(bundle.parent) == [bundle.name]
    outside.unlink()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extra": {"bad": object()}}, r"TrainedModel.extra\['bad'\]: expected a JSON-compatible"),
        ({"extra": {"nan": float("nan")}}, "expected a finite number"),
        ({"probe": np.ones((8, 8), np.complex64)}, r"expected a numeric \(64, 64\) array"),
        ({"intensity_scale": float("inf")}, "intensity_scale: expected a finite number > 0"),
        ({"backend": ""}, "TrainedModel.backend"),
    ],
)
def test_invalid_models_are_refused_before_writing(
    bundle: Path, trained: TrainedModel, changes: dict[str, Any], message: str
) -> None:
    previous = bundle.read_bytes()
    values = {
        "backend": trained.backend,
        "config": trained.config,
        "probe": trained.probe,
        "intensity_scale": trained.intensity_scale,
        "network": trained.network,
        "history": trained.history,
        "extra": trained.extra,
    }
    values.update(changes)
    with pytest.raises(ValueError, match=message):
        write_bundle(bundle, TrainedModel(**values), lambda _: None, framework={})
    assert bundle.read_bytes() == previous and _files(bundle.parent) == [bundle.name]
    with pytest.raises(ValueError, match="framework"):
        write_bundle(bundle, trained, lambda _: None, framework={"numpy": 2})  # type: ignore[dict-item]


def test_errors_are_ptycho_errors(tmp_path: Path) -> None:
    (tmp_path / "x.ptycho").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(PtychoError, match="truncated or corrupt"):
        read_manifest(tmp_path / "x.ptycho")


# -------------------------------------------------------------------- member names


SAFE_COMPONENT = st.text(alphabet="abcXYZ019-_.~ é", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
ANY_NAME = st.lists(
    st.sampled_from(["a", "b.npz", ".", "..", "", "/", "\\", "C:", ":", "\x00", "é", " "]),
    max_size=8,
).map("".join)


@given(parts=st.lists(SAFE_COMPONENT, min_size=1, max_size=5))
def test_relative_names_of_safe_components_are_accepted(parts: list[str]) -> None:
    assert check_member_name("/".join(parts)) is None
    assert check_member_name("/".join(parts) + "/") is None  # a folder entry


@given(name=ANY_NAME)
def test_accepted_names_stay_inside_the_extraction_folder(name: str) -> None:
    if check_member_name(name) is None:
        path = PurePosixPath(name)
        assert not path.is_absolute() and ".." not in path.parts and "\\" not in name
        root = "/extract/root"
        assert os.path.normpath(os.path.join(root, name)).startswith(root + "/")
    for bad in (f"../{name}", f"/{name}", f"{name}/../x", f"x\\{name}", f"C:/{name}"):
        assert check_member_name(bad) is not None, bad
