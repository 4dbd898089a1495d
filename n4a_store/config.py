"""Store configurations and URIs: where a workspace's catalog, arrays and artifacts live.

A :class:`StoreConfig` is a frozen, serialisable description of a store that can be
passed between processes (Dagster steps, celery workers) before anything connects:

* :class:`DuckDBStoreConfig` - a directory (a path or ``file://`` URI): the embedded
  DuckDB catalog ``store.duckdb`` with arrays and artifacts next to it (the default);
* :class:`PostgresStoreConfig` - ``postgresql://user@host/db?file_root=/shared/n4a``:
  the catalog in PostgreSQL, arrays and artifacts under ``file_root``, a filesystem
  every host mounts.

Every config can be :meth:`~StoreConfig.scoped` to a named workspace inside a
collection (a sub-directory; a PostgreSQL schema with its own sub-directory of
``file_root``), and an unscoped config lists the workspaces of its collection.
``arrays=`` picks the prediction-array backend: ``parquet`` (default), ``table``
(the catalog's ``prediction_arrays`` table) or ``memory`` (tests, notebooks).

Subclasses register themselves by their ``scheme`` when their module is imported,
so a user's own config class works with :func:`create_store` and
:func:`parse_to_config`. Passwords never appear in a repr, a message or
:meth:`StoreConfig.display_uri`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .arrays.base import ArrayBackend
    from .artifacts.base import ArtifactBackend
    from .catalog.sql import SqlCatalog
    from .workspace import WorkspaceStore

ARRAY_BACKENDS = ("parquet", "table", "memory")
_WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


class LocatorInfo(NamedTuple):
    """A store URI split into parts (what :meth:`StoreConfig.from_locator` receives)."""

    scheme: str
    user: str | None
    password: str | None
    host: str | None
    port: int | None
    path: str
    query: dict[str, str]
    uri: str


class StoreBackends(NamedTuple):
    """The three backends a store is made of, opened from a config."""

    catalog: "SqlCatalog"
    arrays: "ArrayBackend"
    artifacts: "ArtifactBackend"
    file_root: Path


def check_workspace_name(name: Any) -> str:
    """A workspace name usable as a directory and a PostgreSQL schema, else InvalidInputError."""
    if not isinstance(name, str) or not _WORKSPACE_NAME.match(name):
        raise InvalidInputError(
            f"workspace name {name!r} is not valid: use 1-63 letters, digits, '_', '.' or '-', "
            f"not starting with '.' or '-'")
    return name


def _check_arrays(value: Any) -> str:
    if value not in ARRAY_BACKENDS:
        raise InvalidInputError(
            f"unknown array backend {value!r}; expected one of: {', '.join(ARRAY_BACKENDS)}")
    return value


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable store URI>"
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:***@{netloc[-1]}"))


class _Registry:
    """Config classes by URI scheme."""

    def __init__(self) -> None:
        self.by_scheme: dict[str, type[StoreConfig]] = {}

    def register(self, cls: type["StoreConfig"]) -> None:
        for scheme in (cls.scheme, *cls.aliases):
            self.by_scheme[scheme.lower()] = cls

    def lookup(self, scheme: str) -> type["StoreConfig"]:
        cls = self.by_scheme.get(scheme.lower())
        if cls is None:
            raise InvalidInputError(
                f"unknown store URI scheme {scheme!r}; known: {', '.join(sorted(self.by_scheme))} "
                f"(a config class registers its scheme when its module is imported)")
        return cls


REGISTRY = _Registry()


@dataclass(frozen=True, kw_only=True)
class StoreConfig(ABC):
    """Base of every store configuration; subclasses set ``scheme`` and are registered."""

    scheme: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()

    workspace: str | None = None
    arrays: str = "parquet"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("scheme"):
            REGISTRY.register(cls)

    def __post_init__(self) -> None:
        if self.workspace is not None:
            check_workspace_name(self.workspace)
        _check_arrays(self.arrays)

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with a ``_type`` key naming the scheme."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["_type"] = type(self).scheme
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "StoreConfig":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict) or "_type" not in data:
            raise InvalidInputError("a store config dict needs a '_type' key")
        fields = dict(data)
        cls = REGISTRY.lookup(str(fields.pop("_type")))
        try:
            return cls(**fields)
        except TypeError as exc:
            raise InvalidInputError(f"bad {cls.__name__} fields: {exc}") from exc

    # -- scoping -----------------------------------------------------------------------
    def scoped(self, name: str) -> "StoreConfig":
        """This config for the workspace ``name`` of its collection."""
        return dataclasses.replace(self, workspace=check_workspace_name(name))

    def for_workspace(self, name: str) -> "StoreConfig":
        """The config of workspace ``name`` in this (unscoped) collection."""
        if self.workspace is not None:
            raise InvalidInputError(f"{self!r} is already scoped to workspace {self.workspace!r}")
        return self.scoped(name)

    def list_workspaces(self) -> list[str]:
        """Names of the workspaces in this (unscoped) collection."""
        if self.workspace is not None:
            raise InvalidInputError(f"{self!r} is scoped; list workspaces on the unscoped collection")
        return self._list_workspaces()

    # -- connecting ----------------------------------------------------------------------
    def connect(self, **kwargs: Any) -> "WorkspaceStore":
        """Open a :class:`~n4a_store.WorkspaceStore` on this config."""
        from .workspace import WorkspaceStore

        return WorkspaceStore(self, **kwargs)

    def display_uri(self) -> str:
        """The store URI without any password (safe for logs and UI metadata)."""
        return redact(self.to_uri())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_uri()!r})"

    @abstractmethod
    def to_uri(self) -> str:
        """The URI this config parses from (including any password: do not log it)."""

    @abstractmethod
    def open_backends(self, *, lock_timeout: float, idle_release: float) -> StoreBackends:
        """Open the catalog, array and artifact backends."""

    @abstractmethod
    def exists(self) -> bool:
        """True when the store already holds a catalog (nothing is created)."""

    @abstractmethod
    def _list_workspaces(self) -> list[str]:
        """Workspace names of the collection."""

    @classmethod
    @abstractmethod
    def from_locator(cls, info: LocatorInfo, **kwargs: Any) -> "StoreConfig":
        """Build from a parsed URI plus keyword overrides."""


def _array_backend(kind: str, file_root: Path, catalog: "SqlCatalog") -> "ArrayBackend":
    if kind == "parquet":
        from .arrays.store import ArrayStore

        return ArrayStore(file_root)
    if kind == "table":
        from .arrays.table import TableArrays

        return TableArrays(catalog)
    from .arrays.memory import MemoryArrays

    return MemoryArrays()


@dataclass(frozen=True, kw_only=True, repr=False)
class DuckDBStoreConfig(StoreConfig):
    """A workspace directory with the embedded DuckDB catalog (``file://`` or a path)."""

    scheme: ClassVar[str] = "file"
    aliases: ClassVar[tuple[str, ...]] = ("duckdb",)

    root: str

    def __post_init__(self) -> None:
        if not isinstance(self.root, (str, os.PathLike)) or not str(self.root).strip():
            raise InvalidInputError(f"a DuckDB store needs a directory, got {self.root!r}")
        if "\x00" in str(self.root):
            raise InvalidInputError("the store directory contains a NUL byte")
        object.__setattr__(self, "root", str(Path(self.root).expanduser().resolve()))
        super().__post_init__()

    @property
    def path(self) -> Path:
        """The workspace directory (the root, or its sub-directory when scoped)."""
        root = Path(self.root)
        return root / self.workspace if self.workspace else root

    def to_uri(self) -> str:
        query = {k: v for k, v in (("workspace", self.workspace), ("arrays", self.arrays))
                 if v is not None and not (k == "arrays" and v == "parquet")}
        uri = Path(self.root).as_uri()
        return f"{uri}?{urlencode(query)}" if query else uri

    def display_uri(self) -> str:
        return str(self.path) if self.arrays == "parquet" else self.to_uri()

    def exists(self) -> bool:
        from .catalog.duckdb.catalog import DB_NAME

        return (self.path / DB_NAME).is_file()

    def _list_workspaces(self) -> list[str]:
        from .catalog.duckdb.catalog import DB_NAME

        root = Path(self.root)
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir()
                      if p.is_dir() and (p / DB_NAME).is_file() and _WORKSPACE_NAME.match(p.name))

    def open_backends(self, *, lock_timeout: float, idle_release: float) -> StoreBackends:
        from .artifacts.files import ArtifactFiles
        from .catalog.duckdb import DuckDBCatalog

        path = self.path
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"workspace path {str(path)!r} is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        catalog = DuckDBCatalog(path, lock_timeout, idle_release)
        return StoreBackends(catalog, _array_backend(self.arrays, path, catalog),
                             ArtifactFiles(path / "artifacts"), path)

    @classmethod
    def from_locator(cls, info: LocatorInfo, **kwargs: Any) -> "DuckDBStoreConfig":
        if info.host not in (None, "", "localhost"):
            raise InvalidInputError(f"file URI {info.uri!r} names a host; use file:///absolute/path")
        fields = {k: v for k, v in info.query.items() if k in ("workspace", "arrays")}
        unknown = set(info.query) - {"workspace", "arrays"}
        if unknown:
            raise InvalidInputError(f"unknown parameter(s) {', '.join(sorted(unknown))} in {info.uri!r}")
        fields.update(kwargs)
        return cls(root=unquote(info.path), **fields)


@dataclass(frozen=True, kw_only=True, repr=False)
class PostgresStoreConfig(StoreConfig):
    """The catalog in PostgreSQL; arrays and artifacts under ``file_root`` (shared by all hosts)."""

    scheme: ClassVar[str] = "postgresql"
    aliases: ClassVar[tuple[str, ...]] = ("postgres",)

    connection_string: str
    file_root: str

    def __post_init__(self) -> None:
        if not isinstance(self.connection_string, str) or not self.connection_string.startswith(
                ("postgresql://", "postgres://")):
            raise InvalidInputError("connection_string must be a postgresql:// URI")
        if not isinstance(self.file_root, (str, os.PathLike)) or not str(self.file_root).strip():
            raise InvalidInputError(
                "a PostgreSQL store needs file_root: the directory (mounted on every host) that "
                "holds its artifacts and arrays, e.g. postgresql://host/db?file_root=/shared/n4a")
        object.__setattr__(self, "file_root", str(Path(self.file_root).expanduser().resolve()))
        parts = urlsplit(self.connection_string)
        if parts.query:
            raise InvalidInputError("give n4a parameters as fields, not in connection_string")
        super().__post_init__()

    @property
    def path(self) -> Path:
        """The directory of this workspace's files."""
        root = Path(self.file_root)
        return root / self.workspace if self.workspace else root

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this workspace's tables."""
        return self.workspace or "public"

    def to_uri(self) -> str:
        query = {"file_root": self.file_root}
        if self.workspace:
            query["workspace"] = self.workspace
        if self.arrays != "parquet":
            query["arrays"] = self.arrays
        return f"{self.connection_string}?{urlencode(query)}"

    def exists(self) -> bool:
        from .catalog.postgres import PostgresCatalog

        return PostgresCatalog.schema_exists(self.connection_string, self.schema)

    def _list_workspaces(self) -> list[str]:
        from .catalog.postgres import PostgresCatalog

        return [n for n in PostgresCatalog.list_schemas(self.connection_string) if n != "public"]

    def open_backends(self, *, lock_timeout: float, idle_release: float) -> StoreBackends:
        from .artifacts.files import ArtifactFiles
        from .catalog.postgres import PostgresCatalog

        path = self.path
        path.mkdir(parents=True, exist_ok=True)
        catalog = PostgresCatalog(self.connection_string, self.schema, display=self.display_uri(),
                                  lock_timeout=lock_timeout)
        return StoreBackends(catalog, _array_backend(self.arrays, path, catalog),
                             ArtifactFiles(path / "artifacts"), path)

    @classmethod
    def from_locator(cls, info: LocatorInfo, **kwargs: Any) -> "PostgresStoreConfig":
        query = dict(info.query)
        fields: dict[str, Any] = {k: query.pop(k) for k in ("file_root", "workspace", "arrays")
                                  if k in query}
        fields.update(kwargs)
        if "file_root" not in fields:
            raise InvalidInputError(
                f"store URI {redact(info.uri)!r} needs file_root: the shared directory for "
                f"artifacts and arrays (…?file_root=/shared/n4a or file_root= keyword)")
        parts = urlsplit(info.uri)
        dsn = urlunsplit(parts._replace(query=urlencode(query), fragment=""))
        return cls(connection_string=dsn, **fields)


def _parse(uri: str) -> LocatorInfo:
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"bad port in store URI {redact(uri)!r}") from exc
    return LocatorInfo(
        scheme=parts.scheme.lower(), user=parts.username, password=parts.password,
        host=parts.hostname, port=port, path=parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)), uri=uri)


def parse_to_config(location: "str | os.PathLike[str] | StoreConfig", **kwargs: Any) -> StoreConfig:
    """Turn a path, ``file://`` or ``postgresql://`` URI (or a config) into a :class:`StoreConfig`.

    Keyword arguments override URI parameters (``file_root=``, ``workspace=``, ``arrays=``).
    """
    if isinstance(location, StoreConfig):
        return dataclasses.replace(location, **kwargs) if kwargs else location
    if isinstance(location, os.PathLike):
        return DuckDBStoreConfig(root=os.fspath(location), **kwargs)
    if not isinstance(location, str) or not location.strip():
        raise InvalidInputError(f"a store location must be a path or URI, got {location!r}")
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+)://", location)
    if match is None:
        return DuckDBStoreConfig(root=location, **kwargs)
    info = _parse(location)
    return REGISTRY.lookup(info.scheme).from_locator(info, **kwargs)


def create_store(location: "str | os.PathLike[str] | StoreConfig", **kwargs: Any) -> "WorkspaceStore":
    """Open a :class:`~n4a_store.WorkspaceStore` from a path, URI or config.

    ``lock_timeout`` and ``idle_release`` go to the store; other keywords to the config.
    """
    store_kwargs = {k: kwargs.pop(k) for k in ("lock_timeout", "idle_release") if k in kwargs}
    return parse_to_config(location, **kwargs).connect(**store_kwargs)
