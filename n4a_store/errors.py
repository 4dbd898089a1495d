"""Exceptions raised by n4a_store.

Every error the store raises on purpose derives from :class:`N4AError`, so a
caller can catch the whole family in one place. Where a built-in exception
already carries the meaning (``KeyError`` for a missing id, ``ValueError`` for
bad arguments, ``TimeoutError`` for a bounded wait), the n4a class also derives
from it.
"""

from __future__ import annotations


class N4AError(Exception):
    """Base class of every error raised on purpose by n4a_store."""


class InvalidInputError(N4AError, ValueError):
    """An argument is malformed: unknown column name, inconsistent array lengths, bad format."""


class MissingParentError(N4AError, KeyError):
    """A write refers to a run, pipeline, chain or artifact id that does not exist."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"{kind} {ident!r} does not exist")

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.args[0]


class WorkspaceLockTimeout(N4AError, TimeoutError):
    """Another process held the workspace catalog for longer than the allowed wait."""


class SchemaVersionError(N4AError):
    """The workspace was written by a newer n4a version; it is refused and left untouched."""


class ArtifactNotFoundError(N4AError, KeyError):
    """An artifact id is not in the catalog, or its file is missing."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "artifact not found"


class ArtifactIntegrityError(N4AError):
    """An artifact file's SHA-256 does not match its id: the file was corrupted or altered."""


class StoreUnavailableError(N4AError, ConnectionError):
    """The store's catalog server cannot be reached (or the connection to it was lost)."""
