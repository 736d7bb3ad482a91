"""The model bundle: one zip archive format for every backend (specs/bundle-format.md).

Design rules:

- One layout for all backends: ``manifest.json`` (plain JSON, readable without any ML
  framework), ``probe.npy`` (the normalised probe, no pickle) and ``payload/...``, the
  backend's own files, each listed in the manifest with its size and SHA-256.
- Core owns everything but the payload: a backend's ``save`` calls :func:`write_bundle`
  with a function that writes its files into a private folder, and its ``load`` reads
  them back inside :func:`read_bundle`.
- Writes are atomic: a failure at any point leaves a previous bundle at the path intact.
- Reading never executes code (no pickle), never trusts the zip headers (sizes are
  counted while extracting), and never writes outside a private temporary folder that
  is deleted when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from ptycho_core._atomic import atomic_path, private_dir
from ptycho_core.config import TrainingConfig
from ptycho_core.entry_points import registered_distribution
from ptycho_core.errors import (
    BackendMismatchError,
    BundleError,
)
from ptycho_core.npz import read_npy_bytes
from ptycho_core.protocol import TrainedModel

__all__ = [
    "BUNDLE_EXTENSION",
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_MEMBER_BYTES",
    "DEFAULT_MAX_TOTAL_BYTES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_MAX_BYTES",
    "MANIFEST_NAME",
    "PAYLOAD_PREFIX",
    "PROBE_NAME",
    "BundleContents",
    "check_member_name",
    "json_value",
    "read_bundle",
    "read_manifest",
    "read_payload_json",
    "write_bundle",
]

FORMAT_NAME = "ptycho-bundle"
FORMAT_VERSION = 1
BUNDLE_EXTENSION = ".ptycho"
"""Conventional file extension; the file is a plain zip archive, any name works."""
MANIFEST_NAME = "manifest.json"
PROBE_NAME = "probe.npy"
PAYLOAD_PREFIX = "payload/"

DEFAULT_MAX_MEMBER_BYTES = 2 * 1024**3
"""Largest uncompressed member a reader accepts by default (2 GiB)."""
DEFAULT_MAX_MEMBERS = 10_000
"""Most members (files and folder entries) a reader accepts by default."""
DEFAULT_MAX_TOTAL_BYTES = 8 * 1024**3
"""Largest total uncompressed size a reader accepts by default (8 GiB)."""
MANIFEST_MAX_BYTES = 64 * 1024**2
"""Largest manifest.json a reader accepts (64 MiB), whatever the member limit."""

_CHUNK = 1024 * 1024
_TEMP_PREFIX = "ptycho-bundle-"
_NPY_HEADER_ALLOWANCE = 4096
_GAIN_TOLERANCE = 1e-6
"""Relative difference allowed between a manifest's output gain and its network's."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")


def check_member_name(name: str) -> str | None:
    """Why ``name`` is not a safe archive member name, or None when it is.

    Safe names are relative POSIX paths: no leading ``/``, no drive letter, no
    backslash, no empty, ``.`` or ``..`` component, no control character, components of
    at most 255 UTF-8 bytes. A trailing ``/`` marks a folder entry.
    """
    if not isinstance(name, str) or not name:
        return "the name is empty"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    if _DRIVE.match(name):
        return "it starts with a drive letter"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "it contains a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    for part in parts:
        if part == "":
            return "it has an empty path component"
        if part in (".", ".."):
            return f"it has a {part!r} path component"
        if len(part.encode("utf-8")) > 255:
            return "a path component is longer than 255 bytes"
    return None


# ----------------------------------------------------------------------------- writing


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def json_value(value: Any, where: str) -> Any:
    """A JSON-compatible copy of ``value`` (numpy scalars/arrays become Python values).

    What a manifest stores for ``TrainedModel.extra``. Raises ValueError, naming ``where``
    and the offending item, for a non-finite number, a non-string key or a value of
    another type.
    """
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, found {value!r}")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: expected string keys, found {key!r}")
            out[key] = json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(
        f"{where}: expected a JSON-compatible value (dict, list, str, number, bool, None), "
        f"found {type(value).__name__}"
    )


def _history_json(history: Mapping[str, Any]) -> dict[str, list[float | None]]:
    """Per-epoch losses; a non-finite value (a diverged epoch) is stored as null."""
    if not isinstance(history, Mapping):
        raise ValueError(
            f"TrainedModel.history: expected a mapping, found {type(history).__name__}"
        )
    out: dict[str, list[float | None]] = {}
    for key, values in history.items():
        if not isinstance(key, str):
            raise ValueError(f"TrainedModel.history: expected string keys, found {key!r}")
        if isinstance(values, np.ndarray):
            values = values.tolist()
        if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
            raise ValueError(
                f"TrainedModel.history[{key!r}]: expected a sequence of numbers, "
                f"found {type(values).__name__}"
            )
        floats: list[float | None] = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ValueError(
                    f"TrainedModel.history[{key!r}]: expected numbers, found {value!r}"
                )
            number = float(value)
            floats.append(number if math.isfinite(number) else None)
        out[key] = floats
    return out


def _payload_files(root: Path) -> list[tuple[str, Path]]:
    """(member name, file) for every file the backend wrote; refuses links and specials."""
    files: list[tuple[str, Path]] = []
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(folder)
        for entry in sorted(dirnames) + sorted(filenames):
            item = here / entry
            relative = item.relative_to(root).as_posix()
            info = item.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise BundleError(
                    f"bundle payload: {relative!r} is a symbolic link; a payload holds "
                    "regular files only"
                )
            if entry in dirnames:
                continue
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"bundle payload: {relative!r} is not a regular file")
            if not item.resolve().is_relative_to(root.resolve()):
                raise BundleError(f"bundle payload: {relative!r} lies outside the payload folder")
            problem = check_member_name(relative)
            if problem is not None:
                raise BundleError(f"bundle payload: file name {relative!r} is refused: {problem}")
            files.append((relative, item))
    return sorted(files)


def _zip_info(name: str, when: datetime) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _write_member(
    archive: zipfile.ZipFile, name: str, source: IO[bytes], size_hint: int, when: datetime
) -> dict[str, Any]:
    """Stream ``source`` into the archive; return its size and SHA-256.

    ZIP64 records are used only for members that need them, so ordinary tools read the
    archive too.
    """
    digest = hashlib.sha256()
    size = 0
    large = size_hint >= zipfile.ZIP64_LIMIT // 2
    with archive.open(_zip_info(name, when), "w", force_zip64=large) as sink:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            sink.write(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _probe_bytes(model: TrainedModel) -> bytes:
    N = model.config.model.N
    probe = np.asarray(model.probe)
    if probe.shape != (N, N) or not np.issubdtype(probe.dtype, np.number):
        raise ValueError(
            f"TrainedModel.probe: expected a numeric ({N}, {N}) array for N={N}, found "
            f"shape {probe.shape} dtype {probe.dtype}"
        )
    probe = probe.astype(np.complex64)
    if not np.all(np.isfinite(probe)):
        raise ValueError("TrainedModel.probe: expected finite values, found NaN or inf")
    buffer = io.BytesIO()
    np.save(buffer, probe, allow_pickle=False)
    return buffer.getvalue()


def _manifest(model: TrainedModel, framework: Mapping[str, str], when: datetime) -> dict[str, Any]:
    """Every manifest field except ``payload`` and ``probe`` (filled in while writing)."""
    from ptycho_core._version import __version__

    if not isinstance(model, TrainedModel):
        raise TypeError(f"write_bundle: expected a TrainedModel, found {type(model).__name__}")
    if not isinstance(model.backend, str) or not model.backend:
        raise ValueError(
            f"TrainedModel.backend: expected a non-empty string, found {model.backend!r}"
        )
    if not isinstance(model.config, TrainingConfig):
        raise ValueError(
            f"TrainedModel.config: expected a TrainingConfig, found {type(model.config).__name__}"
        )
    scale = model.intensity_scale
    numeric = isinstance(scale, int | float | np.floating | np.integer)
    if isinstance(scale, bool) or not numeric or not (math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"TrainedModel.intensity_scale: expected a finite number > 0, found {scale!r}"
        )
    if not isinstance(framework, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in framework.items()
    ):
        raise ValueError(
            f"write_bundle framework: expected a mapping of module name to version string, "
            f"found {framework!r}"
        )
    distribution, distribution_version = registered_distribution(model.backend)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": model.backend,
        "distribution": distribution,
        "distribution_version": distribution_version,
        "framework": dict(framework),
        "ptycho_version": __version__,
        "created_utc": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": model.config.to_dict(),
        "N": model.config.model.N,
        "gridsize": model.config.model.gridsize,
        "intensity_scale": float(scale),
        "history": _history_json(model.history),
        "extra": json_value(dict(model.extra), "TrainedModel.extra"),
    }


def write_bundle(
    path: str | os.PathLike[str],
    model: TrainedModel,
    write_payload: Callable[[Path], None],
    *,
    framework: Mapping[str, str],
) -> None:
    """Write ``model`` as a bundle at ``path``, atomically.

    ``write_payload(folder)`` writes the backend's own files into an empty private
    folder; they become ``payload/...`` members. ``framework`` maps the modules the
    payload depends on to their versions (e.g. ``{"torch": torch.__version__}``). On
    any exception the previous file at ``path`` is untouched and no temporary file or
    folder is left behind.
    """
    when = _utc_now()
    manifest = _manifest(model, framework, when)
    probe = _probe_bytes(model)
    with private_dir(_TEMP_PREFIX) as workdir:
        payload_root = workdir / "payload"
        payload_root.mkdir()
        write_payload(payload_root)
        files = _payload_files(payload_root)
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
            payload: dict[str, Any] = {}
            for relative, file in files:
                with open(file, "rb") as source:
                    size = os.fstat(source.fileno()).st_size
                    payload[relative] = _write_member(
                        archive, PAYLOAD_PREFIX + relative, source, size, when
                    )
            probe_entry = _write_member(archive, PROBE_NAME, io.BytesIO(probe), len(probe), when)
            manifest["probe"] = {**probe_entry, "shape": [model.N, model.N], "dtype": "complex64"}
            manifest["payload"] = payload
            text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
            raw = text.encode("utf-8")
            _write_member(archive, MANIFEST_NAME, io.BytesIO(raw), len(raw), when)


# ----------------------------------------------------------------------------- reading


def _fail(path: Path, message: str) -> BundleError:
    return BundleError(f"bundle {path}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _is_str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _is_history(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(values, list) and all(v is None or _is_number(v) for v in values)
        for values in value.values()
    )


def _is_file_entry(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _is_int(value.get("size"))
        and value["size"] >= 0
        and isinstance(value.get("sha256"), str)
        and _SHA256.fullmatch(value["sha256"]) is not None
    )


# field → (check, what the check expects)
_REQUIRED_FIELDS: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "format": (lambda v: isinstance(v, str), "a string"),
    "format_version": (_is_int, "an integer"),
    "backend": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "distribution": (_is_str_or_none, "a string or null"),
    "distribution_version": (_is_str_or_none, "a string or null"),
    "framework": (
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "an object of module name to version string",
    ),
    "ptycho_version": (lambda v: isinstance(v, str), "a string"),
    "created_utc": (lambda v: isinstance(v, str), "an ISO-8601 UTC time string"),
    "config": (lambda v: isinstance(v, dict), "an object (TrainingConfig.to_dict())"),
    "N": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "gridsize": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "intensity_scale": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "history": (_is_history, "an object of loss name to list of numbers or null"),
    "extra": (lambda v: isinstance(v, dict), "an object"),
    "payload": (
        lambda v: isinstance(v, dict) and all(_is_file_entry(e) for e in v.values()),
        'an object of file name to {"size": int, "sha256": hex}',
    ),
    "probe": (_is_file_entry, '{"size": int, "sha256": hex, ...}'),
}


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _validate_manifest(path: Path, manifest: Any) -> dict[str, Any]:
    """Check the manifest's format, version and every required field's type."""
    from ptycho_core._version import __version__

    if not isinstance(manifest, dict):
        found = type(manifest).__name__
        raise _fail(path, f"{MANIFEST_NAME}: expected a JSON object, found {found}")
    if manifest.get("format") != FORMAT_NAME:
        raise _fail(
            path,
            f"{MANIFEST_NAME} field 'format': expected {FORMAT_NAME!r}, found "
            f"{manifest.get('format')!r}; this is not a ptycho bundle",
        )
    version = manifest.get("format_version")
    if not _is_int(version) or version < 1:
        raise _fail(
            path,
            f"{MANIFEST_NAME} field 'format_version': expected an integer >= 1, found {version!r}",
        )
    if version > FORMAT_VERSION:
        raise _fail(
            path,
            f"bundle format version {version} (written by ptycho "
            f"{manifest.get('ptycho_version', '?')}) is newer than the version this ptycho "
            f"({__version__}) reads, {FORMAT_VERSION}; upgrade ptycho to load it",
        )
    for key, (check, expected) in _REQUIRED_FIELDS.items():
        if key not in manifest:
            raise _fail(path, f"{MANIFEST_NAME}: required field {key!r} is missing")
        if not check(manifest[key]):
            found = repr(manifest[key])
            if len(found) > 80:
                found = found[:77] + "..."
            raise _fail(path, f"{MANIFEST_NAME} field {key!r}: expected {expected}, found {found}")
    for name in manifest["payload"]:
        problem = check_member_name(name)
        if problem is not None or name.endswith("/"):
            raise _fail(
                path,
                f"{MANIFEST_NAME} field 'payload': file name {name!r} is refused: "
                f"{problem or 'it names a folder'}",
            )
    try:
        config = TrainingConfig.from_dict(manifest["config"])
    except (TypeError, ValueError) as error:
        raise _fail(
            path,
            f"{MANIFEST_NAME} field 'config': {error} (written by ptycho "
            f"{manifest['ptycho_version']}, read by {__version__})",
        ) from error
    for key, value in (("N", config.model.N), ("gridsize", config.model.gridsize)):
        if manifest[key] != value:
            raise _fail(
                path,
                f"{MANIFEST_NAME} field {key!r}: expected {value} (config.model.{key}), "
                f"found {manifest[key]!r}",
            )
    return manifest


def _open_archive(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise _fail(path, "no such file")
    if not path.is_file():
        raise _fail(path, "not a regular file")
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        with open(path, "rb") as handle:
            head = handle.read(4)
        if head == b"PK\x03\x04":
            raise _fail(path, f"truncated or corrupt zip archive ({error})") from error
        raise _fail(path, f"not a ptycho bundle: not a zip archive ({error})") from error


def _is_symlink_entry(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _check_members(
    path: Path,
    archive: zipfile.ZipFile,
    *,
    max_member_bytes: int,
    max_members: int,
    max_total_bytes: int,
) -> dict[str, zipfile.ZipInfo]:
    """Member name → info, after the name, count, size, link and encryption checks."""
    infos = archive.infolist()
    if len(infos) > max_members:
        raise _fail(path, f"{len(infos)} members, more than the limit of {max_members}")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        problem = check_member_name(name)
        if problem is not None:
            raise _fail(path, f"unsafe member name {name!r}: {problem}")
        if name in members:
            raise _fail(path, f"member {name!r} appears more than once")
        if info.flag_bits & 0x1:
            raise _fail(path, f"member {name!r} is encrypted")
        if _is_symlink_entry(info):
            raise _fail(path, f"member {name!r} is a symbolic link")
        if info.file_size > max_member_bytes:
            raise _fail(
                path,
                f"member {name!r} declares {info.file_size} bytes, more than the limit of "
                f"{max_member_bytes}",
            )
        total += info.file_size
        if total > max_total_bytes:
            raise _fail(path, f"members total more than the limit of {max_total_bytes} bytes")
        members[name] = info
    if MANIFEST_NAME not in members and "manifest.dill" in members:
        raise _fail(
            path,
            "this is an upstream PtychoPINN archive, not a ptycho bundle; import it with "
            f"`ptycho import-upstream {path} --output MODEL.ptycho`",
        )
    for required in (MANIFEST_NAME, PROBE_NAME):
        if required not in members:
            raise _fail(path, f"member {required!r} is missing; this is not a ptycho bundle")
    return members


def _copy_member(
    path: Path,
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    sink: IO[bytes],
    limit: int,
) -> tuple[int, str]:
    """Copy one member into ``sink`` counting bytes as they come; return (size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with archive.open(info, "r") as source:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _fail(
                        path, f"member {info.filename!r} is larger than the limit of {limit} bytes"
                    )
                digest.update(chunk)
                sink.write(chunk)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise _fail(path, f"member {info.filename!r} is corrupt ({error})") from error
    return size, digest.hexdigest()


def read_payload_json(file: Path, max_bytes: int, fail: Callable[[str], Exception]) -> Any:
    """The JSON document in an extracted payload ``file`` of at most ``max_bytes`` bytes.

    For backends whose payload keeps settings as JSON: the size is bounded before the text
    is parsed, and a file that is too large or not JSON raises ``fail(message)``.
    """
    with open(file, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise fail(f"larger than {max_bytes} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise fail(f"is not JSON: {error}") from error


def _read_small(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int
) -> tuple[bytes, int, str]:
    buffer = io.BytesIO()
    size, sha = _copy_member(path, archive, info, buffer, limit)
    return buffer.getvalue(), size, sha


def _load_manifest(
    path: Path,
    archive: zipfile.ZipFile,
    members: Mapping[str, zipfile.ZipInfo],
    max_member_bytes: int,
) -> dict[str, Any]:
    raw, _, _ = _read_small(
        path, archive, members[MANIFEST_NAME], min(max_member_bytes, MANIFEST_MAX_BYTES)
    )
    try:
        manifest = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _fail(path, f"{MANIFEST_NAME} is not valid JSON ({error})") from error
    manifest = _validate_manifest(path, manifest)
    declared = {name[len(PAYLOAD_PREFIX) :] for name in members if name.startswith(PAYLOAD_PREFIX)}
    declared = {name for name in declared if name and not name.endswith("/")}
    listed = set(manifest["payload"])
    if declared - listed:
        raise _fail(
            path,
            f"payload member(s) {sorted(declared - listed)} are not listed in {MANIFEST_NAME}",
        )
    if listed - declared:
        raise _fail(
            path,
            f"payload file(s) {sorted(listed - declared)} listed in {MANIFEST_NAME} are missing",
        )
    return manifest


def _check_expected_backend(path: Path, manifest: Mapping[str, Any], expected: str | None) -> None:
    if expected is not None and manifest["backend"] != expected:
        raise BackendMismatchError(
            f"bundle {path} was written by backend {manifest['backend']!r}; backend "
            f"{expected!r} cannot load it; use --backend {manifest['backend']} "
            f"(or ptycho_core.workflows.load_bundle, which picks the backend from the manifest)"
        )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated manifest of the bundle at ``path``, extracting nothing else.

    Checks the archive's member names, count and declared sizes and that the payload
    members match the manifest; checksums are verified by :func:`read_bundle`.
    """
    path = Path(path)
    with _open_archive(path) as archive:
        members = _check_members(
            path,
            archive,
            max_member_bytes=DEFAULT_MAX_MEMBER_BYTES,
            max_members=DEFAULT_MAX_MEMBERS,
            max_total_bytes=DEFAULT_MAX_TOTAL_BYTES,
        )
        return _load_manifest(path, archive, members, DEFAULT_MAX_MEMBER_BYTES)


@dataclass(frozen=True, eq=False, kw_only=True)
class BundleContents:
    """A validated bundle, open inside :func:`read_bundle`'s ``with`` block.

    ``payload_dir`` exists only inside the block; everything else stays valid after it.
    """

    path: Path
    """The bundle file."""
    manifest: dict[str, Any]
    """The validated manifest (specs/bundle-format.md)."""
    probe: np.ndarray
    """Normalised training probe P̃, complex64 (N, N)."""
    payload_dir: Path
    """Private folder holding the extracted ``payload/`` files."""
    config: TrainingConfig
    """The training configuration, rebuilt from the manifest."""
    intensity_scale: float
    """s₀ used in training."""
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per-epoch losses (a null in the manifest comes back as NaN)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """The backend's own manifest values."""

    @property
    def backend(self) -> str:
        return str(self.manifest["backend"])

    @property
    def N(self) -> int:
        return self.config.model.N

    @property
    def gridsize(self) -> int:
        return self.config.model.gridsize

    def rebuild(self, build: Callable[..., Any], **options: Any) -> Any:
        """The network ``build`` makes for this bundle's architecture, probe and scale.

        Calls ``build(config.model, probe, intensity_scale, intensity_scale_trainable=...,
        probe_trainable=..., **options)``; a configuration the builder refuses is the
        bundle's fault, so its ``ValueError`` becomes a :class:`BundleError`.
        """
        try:
            return build(
                self.config.model,
                self.probe,
                self.intensity_scale,
                **self.config.trainability(),
                **options,
            )
        except ValueError as error:
            raise _fail(self.path, f"cannot rebuild the network ({error})") from error

    def check_network(
        self, probe: np.ndarray, output_gain: float, *, weight: str = "weight"
    ) -> None:
        """Refuse a bundle whose loaded network contradicts its manifest.

        A probe that was not trainable must equal ``probe.npy`` exactly, and a manifest
        ``extra['output_gain']`` must be the network's gain to a relative 1e-6: a backend
        that stores the probe and the gain among its weights calls this after loading them,
        with the network's ``probe`` (complex64 (N, N)) and ``output_gain``. ``weight`` is
        what the backend calls one of its weights in messages.
        """
        if not self.config.probe_trainable and not np.array_equal(probe, self.probe):
            raise _fail(
                self.path,
                f"{weight} 'probe' differs from probe.npy although the probe was not "
                "trainable; the bundle is inconsistent",
            )
        gain = self.extra.get("output_gain")
        if gain is not None and not (
            isinstance(gain, int | float)
            and math.isclose(gain, output_gain, rel_tol=_GAIN_TOLERANCE)
        ):
            raise _fail(
                self.path,
                f"manifest extra 'output_gain' is {gain!r} but the {weight} 'log_gain' gives "
                f"{output_gain!r}; the bundle is inconsistent",
            )

    def trained_model(self, network: Any) -> TrainedModel:
        """The :class:`TrainedModel` with the backend's rebuilt ``network``."""
        return TrainedModel(
            backend=self.backend,
            config=self.config,
            probe=self.probe,
            intensity_scale=self.intensity_scale,
            network=network,
            history={k: list(v) for k, v in self.history.items()},
            extra=dict(self.extra),
        )


def _probe_limit(N: int) -> int:
    """Most bytes a ``probe.npy`` of an N × N complex probe can take (header included)."""
    return N * N * np.dtype(np.complex128).itemsize + _NPY_HEADER_ALLOWANCE


def _load_probe(path: Path, raw: bytes, N: int) -> np.ndarray:
    probe = read_npy_bytes(raw, what=PROBE_NAME, fail=lambda message: _fail(path, message))
    if probe.shape != (N, N):
        raise _fail(path, f"{PROBE_NAME}: expected shape ({N}, {N}), found {probe.shape}")
    if probe.dtype not in (np.complex64, np.complex128):
        raise _fail(path, f"{PROBE_NAME}: expected dtype complex64, found {probe.dtype}")
    probe = probe.astype(np.complex64)
    if not np.all(np.isfinite(probe)):
        raise _fail(path, f"{PROBE_NAME}: expected finite values, found NaN or inf")
    return probe


def _extract_payload(
    path: Path,
    archive: zipfile.ZipFile,
    members: Mapping[str, zipfile.ZipInfo],
    manifest: Mapping[str, Any],
    root: Path,
    limit: int,
) -> None:
    root_resolved = root.resolve()
    for relative, entry in sorted(manifest["payload"].items()):
        destination = root / relative
        if not destination.resolve().is_relative_to(root_resolved):  # names are checked; belt
            raise _fail(path, f"payload member {relative!r} would be written outside its folder")
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            sink = open(destination, "xb")  # noqa: SIM115 (closed below)
        except OSError as error:
            message = f"payload member {relative!r} cannot be extracted ({error})"
            raise _fail(path, message) from error
        with sink:
            size, sha = _copy_member(path, archive, members[PAYLOAD_PREFIX + relative], sink, limit)
        if size != entry["size"] or sha != entry["sha256"]:
            raise _fail(
                path,
                f"payload member {relative!r} does not match {MANIFEST_NAME}: expected "
                f"{entry['size']} bytes with sha256 {entry['sha256']}, found {size} bytes "
                f"with sha256 {sha}; the bundle is corrupt",
            )


@contextlib.contextmanager
def read_bundle(
    path: str | os.PathLike[str],
    *,
    expected_backend: str | None = None,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> Iterator[BundleContents]:
    """Validate the bundle at ``path`` and yield its contents, payload extracted.

    Raises :class:`BundleError` naming the file for anything wrong with it, and
    :class:`BackendMismatchError` when ``expected_backend`` is given and is not the
    backend that wrote it. The payload folder is deleted when the block exits.
    """
    path = Path(path)
    with private_dir(_TEMP_PREFIX) as workdir:
        with _open_archive(path) as archive:
            members = _check_members(
                path,
                archive,
                max_member_bytes=max_member_bytes,
                max_members=max_members,
                max_total_bytes=max_total_bytes,
            )
            manifest = _load_manifest(path, archive, members, max_member_bytes)
            _check_expected_backend(path, manifest, expected_backend)
            probe_limit = min(max_member_bytes, _probe_limit(manifest["N"]))
            raw, size, sha = _read_small(path, archive, members[PROBE_NAME], probe_limit)
            if size != manifest["probe"]["size"] or sha != manifest["probe"]["sha256"]:
                raise _fail(
                    path,
                    f"{PROBE_NAME} does not match {MANIFEST_NAME} (size {size}, sha256 {sha}); "
                    "the bundle is corrupt",
                )
            probe = _load_probe(path, raw, manifest["N"])
            payload_dir = workdir / "payload"
            payload_dir.mkdir()
            _extract_payload(path, archive, members, manifest, payload_dir, max_member_bytes)
        contents = BundleContents(
            path=path,
            manifest=manifest,
            probe=probe,
            payload_dir=payload_dir,
            config=TrainingConfig.from_dict(manifest["config"]),
            intensity_scale=float(manifest["intensity_scale"]),
            history={
                k: [math.nan if v is None else float(v) for v in values]
                for k, values in manifest["history"].items()
            },
            extra=dict(manifest["extra"]),
        )
        yield contents
