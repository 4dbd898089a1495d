"""Content-addressed files of fitted objects under ``artifacts/`` (the local artifact backend).

An artifact's id is the SHA-256 of its serialised bytes, and its file lives at
``artifacts/<first two hex>/<sha256>.<ext>``. Identical content therefore maps
to one file. Files are written to a temporary name and renamed into place, so
a reader never sees half a file; every load re-hashes the bytes, so a
corrupted or altered file is detected before anything is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ArtifactIntegrityError, ArtifactNotFoundError, InvalidInputError
from ..fileio import write_atomic
from .codec import ARTIFACT_FORMATS, content_hash, deserialize, serialize

__all__ = ["ArtifactFiles", "content_hash", "deserialize", "serialize"]


class ArtifactFiles:
    """The ``artifacts/`` directory of a workspace (the local artifact backend)."""

    kind = "files"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def relative_path(self, artifact_id: str, format: str) -> str:
        """Path of an artifact relative to the workspace root, with '/' separators."""
        ext = ARTIFACT_FORMATS.get(format)
        if ext is None:
            raise InvalidInputError(f"unknown artifact format {format!r}")
        return f"artifacts/{artifact_id[:2]}/{artifact_id}.{ext}"

    def path(self, artifact_id: str, format: str) -> Path:
        """Absolute path of an artifact file."""
        return self.root.parent / self.relative_path(artifact_id, format)

    def write(self, artifact_id: str, format: str, data: bytes) -> bool:
        """Write the file unless an intact copy is already there; True if it was written.

        An existing file is re-hashed, so a damaged copy is replaced.
        """
        target = self.path(artifact_id, format)
        try:
            if content_hash(target.read_bytes()) == artifact_id:
                return False
        except FileNotFoundError:
            pass
        write_atomic(target, data)
        return True

    def read_verified(self, artifact_id: str, format: str) -> bytes:
        """Read an artifact's bytes and check they hash to its id."""
        target = self.path(artifact_id, format)
        try:
            data = target.read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"artifact {artifact_id!r} is in the catalog but its file "
                f"{self.relative_path(artifact_id, format)} is missing"
            ) from exc
        if content_hash(data) != artifact_id:
            raise ArtifactIntegrityError(
                f"artifact {artifact_id!r} is corrupted: the SHA-256 of "
                f"{self.relative_path(artifact_id, format)} does not match its id"
            )
        return data

    def load(self, artifact_id: str, format: str) -> Any:
        """Load and deserialise an artifact after verifying its hash."""
        return deserialize(self.read_verified(artifact_id, format), format)

    def exists(self, artifact_id: str, format: str) -> bool:
        """True when the artifact's file is present (its content is not checked)."""
        return self.path(artifact_id, format).is_file()

    def remove(self, artifact_id: str, format: str) -> int:
        """Delete an artifact file; return the bytes freed (0 if it was absent)."""
        target = self.path(artifact_id, format)
        try:
            size = target.stat().st_size
            target.unlink()
        except FileNotFoundError:
            return 0
        try:
            target.parent.rmdir()
        except OSError:
            pass
        return size
