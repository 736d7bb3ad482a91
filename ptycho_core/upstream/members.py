"""Bounded reads of single zip members into memory (upstream archives nest zips)."""

from __future__ import annotations

import zipfile

from ptycho_core.errors import UpstreamArchiveError

__all__ = ["read_member"]


def read_member(archive: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes:
    """Member ``name`` of ``archive`` (described as ``where`` in errors), at most ``limit``
    bytes: the declared size is checked before reading and the bytes counted while reading.
    """
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise UpstreamArchiveError(f"{where}: member {name!r} is missing") from None
    if info.file_size > limit:
        raise UpstreamArchiveError(
            f"{where}: member {name!r} declares {info.file_size} bytes, more than the limit "
            f"of {limit}"
        )
    if info.flag_bits & 0x1:
        raise UpstreamArchiveError(f"{where}: member {name!r} is encrypted")
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise UpstreamArchiveError(f"{where}: member {name!r} is corrupt ({error})") from None
    if len(data) > limit:
        raise UpstreamArchiveError(f"{where}: member {name!r} is larger than {limit} bytes")
    return data
