"""The one place ``ptycho_tf`` imports TensorFlow and Keras, and checks they fit together.

Keras 3 can run on several frameworks; a stray ``KERAS_BACKEND=torch`` (or a
``keras.json``) would silently move this backend onto another framework, so importing
this module fails with an actionable error unless Keras runs on TensorFlow. TensorFlow's
C++ info lines are hidden unless the user chose a log level (the variable must be set
before TensorFlow is imported).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

from ptycho_core.errors import BackendUnavailableError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

__all__ = ["keras", "keras_numpy_copy_warning_ignored", "tf"]

_NEEDS = "the TensorFlow backend of ptycho needs Keras 3 running on TensorFlow"
_FIX = (
    "unset KERAS_BACKEND or set it to 'tensorflow', or choose another ptycho backend with --backend"
)

try:
    import keras
except ImportError as error:  # Keras told to use a framework that is not installed
    _chosen = os.environ.get("KERAS_BACKEND", "tensorflow")
    if _chosen == "tensorflow":
        raise
    raise BackendUnavailableError(
        f"{_NEEDS}, but KERAS_BACKEND is {_chosen!r} and importing Keras failed ({error}); {_FIX}"
    ) from error

if keras.config.backend() != "tensorflow":
    raise BackendUnavailableError(
        f"{_NEEDS}, but keras.config.backend() is {keras.config.backend()!r} (set by the "
        f"KERAS_BACKEND environment variable or ~/.keras/keras.json); {_FIX}"
    )


@contextlib.contextmanager
def keras_numpy_copy_warning_ignored() -> Iterator[None]:
    """Hide one known DeprecationWarning of Keras 3 under numpy 2 while Keras saves or loads.

    Keras' variables implement ``__array__`` without numpy 2's ``copy`` keyword, and its
    weight saving converts them with ``np.array``; numpy then warns (an error under
    ``-W error``) although the values are right. Only that message is ignored.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"__array__ implementation doesn't accept a copy keyword",
            category=DeprecationWarning,
        )
        yield
