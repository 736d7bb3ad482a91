"""Reading upstream's pickled metadata without running any of its code.

Upstream PtychoPINN keeps an archive's manifest and configuration as ``dill`` pickles.
Unpickling calls whatever callables a pickle names, so these are read with a restricted
:class:`pickle.Unpickler` whose ``find_class`` knows a fixed table of names and returns,
for each, a callable of ours that builds plain data and nothing else: containers and
scalars (which need no global), numpy arrays, dtypes and scalars, ``pathlib`` paths, and a
TensorFlow tensor (read as the numpy array it holds). The modules those names point at are
never imported. Every other name, and object arrays, are refused, naming the class.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Callable
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ptycho_core.errors import UpstreamArchiveError

__all__ = ["MAX_PICKLE_BYTES", "load_pickle"]

MAX_PICKLE_BYTES = 64 * 1024**2
"""Largest pickle read (upstream's configuration holds at most a probe of 256 × 256)."""

_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_PATH_MODULES = ("pathlib", "pathlib._local")
_TENSOR_MODULES = (
    "tensorflow.python.framework.ops",
    "tensorflow.python.framework.tensor_conversion",
    "tensorflow.python.framework.constant_op",
)


class _Refused(Exception):
    """Raised inside the unpickler; becomes one :class:`UpstreamArchiveError` line."""


def _plain_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"a numpy array whose dtype is {type(dtype).__name__}, not a dtype")
    if dtype.hasobject or dtype.kind == "V":
        raise _Refused(f"a numpy array of dtype {dtype} (object or structured data)")
    return dtype


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(spec, str):
        raise _Refused(f"a numpy dtype described by {type(spec).__name__}")
    return _plain_dtype(np.dtype(spec, align=bool(align), copy=bool(copy)))


def _reconstruct(cls: Any, shape: Any, code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise _Refused(f"a numpy array of class {getattr(cls, '__name__', cls)!r}")
    return np.ndarray.__new__(np.ndarray, (0,), dtype=np.uint8)


def _scalar(dtype: Any, raw: Any = b"") -> np.generic:
    dtype = _plain_dtype(dtype)
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise _Refused(f"a numpy {dtype} scalar held in {type(raw).__name__}")
    return np.frombuffer(raw, dtype=dtype, count=1)[0].copy()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    array = np.frombuffer(bytes(buffer), dtype=_plain_dtype(dtype))
    return array.reshape(shape, order="F" if order == "F" else "C").copy()


def _dill_array(factory: Any, args: Any, state: Any, npdict: Any = None) -> np.ndarray:
    if factory is not _reconstruct or npdict:
        raise _Refused("a dill array built by anything but numpy's own reconstruction")
    array = _reconstruct(*args)
    array.__setstate__(state)
    return array


def _tensor(value: Any, *args: Any, **kwargs: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray | np.generic | int | float | complex):
        raise _Refused(f"a tensor holding {type(value).__name__}")
    return np.asarray(value)


def _bytes_like(kind: type) -> Callable[..., Any]:
    """``bytes``/``bytearray`` of text or bytes only: called with a number they would
    allocate that many bytes (protocol-2 pickles spell ``b''`` as ``bytes()``)."""

    def build(*args: Any) -> Any:
        if args and not isinstance(args[0], bytes | str):
            raise _Refused(f"builtins.{kind.__name__} of a {type(args[0]).__name__}")
        return kind(*args)

    return build


_DILL_TYPES: dict[str, Any] = {
    **{t.__name__: t for t in (bool, int, float, complex, str, list, tuple, dict, set, frozenset)},
    **{t.__name__: _bytes_like(t) for t in (bytes, bytearray)},
}


def _dill_type(name: Any) -> Any:
    """dill names some builtin types through its own table; only plain data types pass."""
    try:
        return _DILL_TYPES[name]
    except (KeyError, TypeError):
        raise _Refused(f"the type {name!r} through dill._dill._load_type") from None


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """Protocol-2 pickles spell bytes as ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode of anything but text to latin-1 bytes")
    return text.encode("latin-1")


def _path(flavour: Callable[..., Any]) -> Callable[..., Any]:
    def build(*parts: Any) -> Any:
        if not all(isinstance(part, str) for part in parts):
            raise _Refused("a path with parts that are not strings")
        return flavour(*parts)

    return build


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "complex"): complex,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): _bytes_like(bytearray),
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1,
    ("builtins", "bytes"): _bytes_like(bytes),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("dill._dill", "_create_array"): _dill_array,
    ("dill._dill", "_load_type"): _dill_type,
    **{(module, "_reconstruct"): _reconstruct for module in _NUMPY_CORE},
    **{(module, "scalar"): _scalar for module in _NUMPY_CORE},
    **{(module, "_frombuffer"): _frombuffer for module in _NUMPY_NUMERIC},
    **{
        (module, name): _path(PureWindowsPath if "Windows" in name else PurePosixPath)
        for module in _PATH_MODULES
        for name in (
            "Path",
            "PosixPath",
            "PurePath",
            "PurePosixPath",
            "WindowsPath",
            "PureWindowsPath",
        )
    },
    **{
        (module, name): _tensor
        for module in _TENSOR_MODULES
        for name in ("convert_to_tensor", "convert_to_tensor_v2", "constant")
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # Python 2 spelling, in protocol 0–2 pickles
            module = "builtins"
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent reference (an object stored outside the pickle)")


def load_pickle(data: bytes, source: str) -> Any:
    """The plain data in pickle ``data`` (named ``source`` in errors), or an error.

    Refused: any global outside the table above (its ``module.name`` is in the message),
    object and structured arrays, persistent references, more than
    :data:`MAX_PICKLE_BYTES` bytes, and anything that is not a valid pickle.
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise UpstreamArchiveError(
            f"{source}: {len(data)} bytes, more than the limit of {MAX_PICKLE_BYTES} for a pickle"
        )
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except _Refused as refused:
        raise UpstreamArchiveError(
            f"{source}: refused to unpickle {refused} (only plain values, numpy arrays and "
            "paths are read: unpickling anything else would run code)"
        ) from None
    except Exception as error:  # any malformed pickle: EOF, bad opcode, wrong arguments
        raise UpstreamArchiveError(
            f"{source}: not a readable pickle of plain values ({type(error).__name__}: {error})"
        ) from None
