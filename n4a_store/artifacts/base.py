"""The artifact-backend protocol: content-addressed bytes of fitted objects.

Backends never see Python objects, only bytes and their SHA-256 id; the store
serialises (:mod:`.codec`) and the backend keeps the bytes. Reads are always
verified against the id before anything is unpickled.
"""

from __future__ import annotations

from typing import Any, Protocol


class ArtifactBackend(Protocol):
    """Where artifact bytes live."""

    kind: str

    def relative_path(self, artifact_id: str, format: str) -> str:
        """The artifact's location relative to the store's file root (recorded in the catalog)."""
        ...

    def write(self, artifact_id: str, format: str, data: bytes) -> bool:
        """Store the bytes unless an intact copy is there; True if they were written."""
        ...

    def read_verified(self, artifact_id: str, format: str) -> bytes:
        """The bytes, checked against the id (ArtifactNotFoundError / ArtifactIntegrityError)."""
        ...

    def load(self, artifact_id: str, format: str) -> Any:
        """Verify, then deserialise."""
        ...

    def exists(self, artifact_id: str, format: str) -> bool:
        """True when the bytes are present."""
        ...

    def remove(self, artifact_id: str, format: str) -> int:
        """Delete the bytes; return how many were freed."""
        ...
