"""Content-addressed artifact files: serialisation, hashing, layout, integrity checks."""

from .files import ArtifactFiles, serialize

__all__ = ["ArtifactFiles", "serialize"]
