"""Upstream archives are read as data: hostile, foreign or broken ones are refused, naming the
file, member and key, before anything runs or is written (no framework needed)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import dill
import h5py
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from upstream_fixtures import upstream_params, write_archive

from ptycho_core.config import ModelConfig
from ptycho_core.convert import import_upstream
from ptycho_core.errors import UpstreamArchiveError
from ptycho_core.upstream import read_upstream_archive

PROBE = np.full((64, 64, 1), 0.5, np.complex64)


class _Payload:
    """Unpickling this creates ``marker``: what a hostile params.dill would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _params(**changes):
    return upstream_params(ModelConfig(), probe=PROBE, **changes)


def test_a_hostile_params_pickle_is_refused_and_its_payload_never_runs(tmp_path) -> None:
    marker = tmp_path / "payload-ran"
    hostile = {**_params(), "probe": _Payload(marker)}
    archive = write_archive(tmp_path / "wts.h5", {}, 988.0, params_object=hostile)
    output = tmp_path / "imported.ptycho"
    with pytest.raises(
        UpstreamArchiveError,
        match=r"diffraction_to_obj/params\.dill: refused to unpickle posix\.system",
    ):
        import_upstream(archive, output)
    result = run_cli("import-upstream", str(archive), "--output", str(output))
    assert_one_line_error(result, str(archive), "params.dill", "refused to unpickle posix.system")
    assert not marker.exists()
    assert not output.exists()


def test_a_hostile_manifest_is_refused_before_anything_else(tmp_path) -> None:
    marker = tmp_path / "payload-ran"
    archive = tmp_path / "wts.h5.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("manifest.dill", dill.dumps({"models": _Payload(marker)}))
    with pytest.raises(
        UpstreamArchiveError, match=r"manifest\.dill: refused to unpickle posix\.system"
    ):
        read_upstream_archive(archive)
    assert not marker.exists()


def test_custom_objects_are_never_unpickled(tmp_path) -> None:
    """Upstream's custom_objects.dill holds code; a payload there must not run either."""
    marker = tmp_path / "payload-ran"
    archive = write_archive(tmp_path / "wts.h5", _params(), 988.0, model_bytes=b"not a zip")
    rebuilt = tmp_path / "rebuilt.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(rebuilt, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("custom_objects.dill"):
                data = dill.dumps({"ProbeIllumination": _Payload(marker)})
            target.writestr(info, data)
    with pytest.raises(UpstreamArchiveError, match=r"model\.keras: not a Keras 3 model file"):
        read_upstream_archive(rebuilt)
    assert not marker.exists()


def test_the_pytorch_ports_archives_are_recognised_and_refused(tmp_path) -> None:
    archive = write_archive(tmp_path / "wts.h5", _params(), 988.0, version="2.0-pytorch")
    with pytest.raises(UpstreamArchiveError, match=r"PyTorch port .* not imported"):
        read_upstream_archive(archive)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04 truncated", "not a zip archive"),
        (b"plain text", "not a zip archive"),
    ],
)
def test_files_that_are_not_archives_are_named(tmp_path, content, message) -> None:
    path = tmp_path / "wts.h5.zip"
    path.write_bytes(content)
    with pytest.raises(UpstreamArchiveError, match=f"upstream archive {path}: {message}"):
        read_upstream_archive(path)


def test_a_bundle_or_foreign_zip_lacks_the_manifest(tmp_path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as handle:
        handle.writestr("manifest.json", "{}")
    with pytest.raises(UpstreamArchiveError, match=r"member 'manifest\.dill' is missing"):
        read_upstream_archive(path)


def test_an_unknown_manifest_version_is_named(tmp_path) -> None:
    archive = write_archive(tmp_path / "wts.h5", _params(), 988.0, version="9.9")
    with pytest.raises(
        UpstreamArchiveError,
        match=r"key 'version': expected one of '1\.0', '2\.0-pytorch', found '9\.9'",
    ):
        read_upstream_archive(archive)


def _keras_file(layers: list[dict], fill) -> bytes:
    """A model.keras holding ``layers`` in config.json and weights written by ``fill(h5)``."""
    weights = io.BytesIO()
    with h5py.File(weights, "w") as h5:
        fill(h5)
    document = {"class_name": "Functional", "config": {"layers": layers}}
    keras = io.BytesIO()
    with zipfile.ZipFile(keras, "w") as handle:
        handle.writestr("config.json", json.dumps(document))
        handle.writestr("metadata.json", "{}")
        handle.writestr("model.weights.h5", weights.getvalue())
    return keras.getvalue()


CONV = {"class_name": "Conv2D", "config": {"name": "conv2d", "activation": "relu"}}


def _links(h5) -> None:
    h5.create_group("layers/conv2d/vars")
    h5["layers/conv2d/vars/0"] = h5py.ExternalLink("/etc/hostname", "/data")
    h5["layers/conv2d/vars/1"] = h5py.SoftLink("/elsewhere")


def _extra(h5) -> None:
    h5.create_dataset("layers/batch_normalization/vars/0", data=np.ones(3, np.float32))


@pytest.mark.parametrize(
    ("layers", "fill", "message"),
    [
        ([CONV], _links, r"'0' is a ExternalLink; only the file's own data is read"),
        (
            [{"class_name": "BatchNormalization", "config": {"name": "bn"}}],
            _extra,
            r"layer 'bn' \(BatchNormalization\) holds weights that map onto no layer",
        ),
        ([CONV], lambda h5: h5.create_group("layers"), "expected 22 convolutions for N=64"),
        ([CONV], lambda h5: h5.create_group("other"), "no 'layers' group \\(written by Keras 2"),
    ],
    ids=["links", "unknown-weights", "too-few", "keras-2"],
)
def test_weights_files_are_read_as_their_own_data_only(tmp_path, layers, fill, message) -> None:
    archive = write_archive(
        tmp_path / "wts.h5", _params(), 988.0, model_bytes=_keras_file(layers, fill)
    )
    with pytest.raises(UpstreamArchiveError, match=message):
        read_upstream_archive(archive)


def test_an_upstream_archive_given_where_a_bundle_belongs_names_the_import(tmp_path) -> None:
    archive = write_archive(tmp_path / "wts.h5", _params(), 988.0)
    result = run_cli(
        "infer", str(archive), str(tmp_path / "data.npz"), "--output-dir", str(tmp_path / "o")
    )
    assert_one_line_error(
        result, "upstream PtychoPINN archive", f"ptycho import-upstream {archive}"
    )
