"""Artifact bytes: serialisation formats and content hashes.

An artifact's id is the SHA-256 of its serialised bytes, so identical content is
stored once whatever backend keeps the bytes.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from typing import Any

from ..errors import InvalidInputError

#: serialisation format -> file extension
ARTIFACT_FORMATS = {"joblib": "joblib", "cloudpickle": "pkl"}


def serialize(obj: Any, format: str) -> bytes:
    """Serialise ``obj`` for the ``joblib`` or ``cloudpickle`` format.

    ``joblib`` artifacts are written as pickle protocol 5, which ``joblib.load``
    reads natively; it is several times faster than ``joblib.dump`` on fitted
    estimators (numpy arrays are copied as raw buffers either way).
    """
    if format == "joblib":
        return pickle.dumps(obj, protocol=5)
    if format == "cloudpickle":
        import cloudpickle

        return cloudpickle.dumps(obj)
    raise InvalidInputError(
        f"unknown artifact format {format!r}; expected one of: {', '.join(ARTIFACT_FORMATS)}"
    )


def deserialize(data: bytes, format: str) -> Any:
    """Inverse of :func:`serialize`."""
    if format == "joblib":
        import joblib

        return joblib.load(io.BytesIO(data))
    if format == "cloudpickle":
        import cloudpickle

        return cloudpickle.loads(data)
    raise InvalidInputError(f"unknown artifact format {format!r}")


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()
