"""Bounded, pickle-free reading of ``.npz`` archives and ``.npy`` arrays.

``numpy.load`` trusts what a file declares: an array header can announce 10¹² × 64 × 64
values, a small deflated member can inflate to gigabytes, and every key of an archive
can be read although a caller needs three. Here every array is read in two steps:

1. its NPY header is parsed with :mod:`numpy.lib.format` (no data read yet); the
   declared shape and dtype must be plain numbers or strings (never objects, which need
   pickle), and their byte count must agree with the member's declared size and stay
   within :data:`~ptycho_core.limits.MAX_ARRAY_BYTES` for the whole file;
2. only then is the array allocated and filled from the stream, which the zip reader
   cuts at the declared size and checks against its CRC.

Callers look at the headers first (to check shapes against their contract before any
allocation), then read only the keys they name. Every decoding failure of zipfile,
zlib or numpy becomes the caller's error type here, in one place, with the file and
the key in its message.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from ptycho_core.errors import DataContractError
from ptycho_core.limits import MAX_ARRAY_BYTES

__all__ = ["ArrayHeader", "NpzReader", "open_npz", "read_npy", "read_npy_bytes"]

Fail = Callable[[str], Exception]
"""Builds the caller's error from a message (the message does not repeat the file)."""

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
_MAX_HEADER_BYTES = 10_000
_CHUNK = 16 * 1024**2
_ALLOWED_KINDS = "biufcUS"
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# What zipfile, zlib and numpy raise for damaged or hostile input.
# numpy parses an NPY header as a Python literal: a damaged one can also fail in the
# tokenizer or the parser, or nest deeper than the parser goes.
_DECODE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    SyntaxError,
    RecursionError,
    tokenize.TokenError,
)


@dataclass(frozen=True)
class ArrayHeader:
    """What an NPY header declares, before any data is read."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int
    """Bytes of magic and header before the data."""

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def describe(self) -> str:
        return f"shape {self.shape} dtype {self.dtype}"


_HEADER_READERS = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}


def _parse_header(stream: IO[bytes], what: str, fail: Fail) -> ArrayHeader:
    try:
        version = npy_format.read_magic(stream)
        reader = _HEADER_READERS.get(version)
        if reader is not None:
            shape, fortran, dtype = reader(stream, max_header_size=_MAX_HEADER_BYTES)
            offset = stream.tell()
    except _DECODE_ERRORS as error:
        raise fail(f"{what}: expected a valid NPY array header, found {error}") from error
    if reader is None:
        raise fail(f"{what}: expected an NPY array of format 1.0 or 2.0, found {version}")
    if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None:
        raise fail(
            f"{what}: expected a numeric or string array (pickled object arrays are refused), "
            f"found dtype {dtype}"
        )
    if any(d < 0 for d in shape):
        raise fail(f"{what}: expected a shape of non-negative sizes, found {shape}")
    # an empty array may still declare sizes numpy cannot address ((0, 10**20)): every
    # dimension must fit in the byte limit on its own
    largest = max(shape, default=0) * max(dtype.itemsize, 1)
    if largest > MAX_ARRAY_BYTES.value:
        raise fail(
            f"{what}: declares shape {tuple(shape)}: {MAX_ARRAY_BYTES.exceeded(largest, 'bytes')}"
        )
    return ArrayHeader(shape=tuple(shape), dtype=dtype, fortran_order=fortran, offset=offset)


def _check_budget(header: ArrayHeader, used: int, what: str, fail: Fail) -> None:
    if used + header.nbytes > MAX_ARRAY_BYTES.value:
        found = f"{header.describe()} ({header.nbytes} bytes"
        found += f" after {used} bytes of other arrays)" if used else ")"
        raise fail(
            f"{what}: declares {found}: {MAX_ARRAY_BYTES.exceeded(used + header.nbytes, 'bytes')}"
        )


def _read_data(stream: IO[bytes], header: ArrayHeader, what: str, fail: Fail) -> np.ndarray:
    flat = np.empty(header.size, dtype=header.dtype)
    view = memoryview(flat.view(np.uint8))
    done = 0
    try:
        while done < header.nbytes:
            got = stream.readinto(view[done : done + _CHUNK])  # type: ignore[attr-defined]
            if not got:
                break
            done += got
    except _DECODE_ERRORS as error:
        raise fail(
            f"{what}: expected readable array data, found a corrupt entry ({error})"
        ) from error
    if done < header.nbytes:
        raise fail(
            f"{what}: expected {header.nbytes} bytes of data for {header.describe()}, found "
            f"{done} (the file is truncated)"
        )
    if header.fortran_order:
        return flat.reshape(header.shape[::-1]).transpose()
    return flat.reshape(header.shape)


def read_npy(stream: IO[bytes], *, size: int, what: str, fail: Fail) -> np.ndarray:
    """One ``.npy`` array from ``stream`` holding exactly ``size`` bytes, bounded as above."""
    header = _parse_header(stream, what, fail)
    if header.offset + header.nbytes != size:
        raise fail(
            f"{what}: declares {header.describe()} ({header.nbytes} bytes of data), but holds "
            f"{size - header.offset} bytes of data"
        )
    _check_budget(header, 0, what, fail)
    return _read_data(stream, header, what, fail)


class NpzReader:
    """An open ``.npz`` archive: headers first, then only the arrays asked for."""

    def __init__(self, archive: zipfile.ZipFile, fail: Fail) -> None:
        self._archive = archive
        self._fail = fail
        self._members: dict[str, zipfile.ZipInfo] = {}
        self._headers: dict[str, ArrayHeader] = {}
        self._used = 0
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            if key in self._members:
                raise fail(f"key {key!r}: expected one member, found it more than once")
            self._members[key] = info

    @property
    def keys(self) -> frozenset[str]:
        """The array names the archive holds."""
        return frozenset(self._members)

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[IO[bytes]]:
        info = self._members[key]
        what = f"key {key!r}"
        if info.flag_bits & 0x1:
            raise self._fail(f"{what}: expected an unencrypted member, found an encrypted one")
        if info.compress_type not in _COMPRESSIONS:
            raise self._fail(
                f"{what}: expected a stored or deflated member, found compression method "
                f"{info.compress_type}"
            )
        try:
            stream = self._archive.open(info, "r")
        except _DECODE_ERRORS as error:
            raise self._fail(f"{what}: expected a readable member, found {error}") from error
        with stream:
            yield stream

    def header(self, key: str) -> ArrayHeader:
        """The declared shape and dtype of ``key`` (reads the header only)."""
        if key not in self._headers:
            what = f"key {key!r}"
            with self._open(key) as stream:
                header = _parse_header(stream, what, self._fail)
            data = self._members[key].file_size - header.offset
            if data != header.nbytes:
                raise self._fail(
                    f"{what}: declares {header.describe()} ({header.nbytes} bytes of data), but "
                    f"its member holds {data} bytes of data"
                )
            self._headers[key] = header
        return self._headers[key]

    def read(self, key: str) -> np.ndarray:
        """The array ``key``, after its header and the file's byte budget are checked."""
        header = self.header(key)
        what = f"key {key!r}"
        _check_budget(header, self._used, what, self._fail)
        with self._open(key) as stream:
            _parse_header(stream, what, self._fail)
            array = _read_data(stream, header, what, self._fail)
        self._used += header.nbytes
        return array


@contextlib.contextmanager
def open_npz(path: str | os.PathLike[str], *, fail: Fail | None = None) -> Iterator[NpzReader]:
    """Open ``path`` as an ``.npz`` archive; errors come from ``fail`` (default: the data
    contract's, naming the file)."""
    source = os.fspath(path)
    if fail is None:

        def fail(message: str) -> Exception:
            return DataContractError(f"{source}: {message}")

    file = Path(source)
    if not file.is_file():
        found = "a directory" if file.is_dir() else "no such file"
        raise fail(f"expected an .npz file, found {found}")
    try:
        handle = open(file, "rb")  # noqa: SIM115 - closed by the with-block below
    except OSError as error:
        raise fail(f"expected a readable .npz file, found {error}") from error
    with handle:
        head = handle.read(len(NPY_MAGIC))
        handle.seek(0)
        if head == NPY_MAGIC:
            raise fail("expected an .npz archive of named arrays, found a single .npy array")
        try:
            archive = zipfile.ZipFile(handle, "r")
        except (*_DECODE_ERRORS, zipfile.LargeZipFile) as error:
            kind = "a truncated or corrupt" if head[:4] == ZIP_MAGIC else "not an"
            raise fail(f"expected an .npz archive, found {kind} zip archive ({error})") from error
        with archive:
            yield NpzReader(archive, fail)


def read_npy_bytes(raw: bytes, *, what: str, fail: Fail) -> np.ndarray:
    """:func:`read_npy` over bytes already in memory."""
    return read_npy(io.BytesIO(raw), size=len(raw), what=what, fail=fail)
