"""n4a_store: storage for machine-learning experiment workspaces.

A workspace is one directory holding a DuckDB catalog (``store.duckdb``),
Parquet prediction arrays (``arrays/``) and content-addressed artifacts
(``artifacts/``). :class:`WorkspaceStore` is the facade over all three.

Public names are resolved lazily so that ``import n4a_store`` stays cheap
(no scikit-learn import until a chain is replayed).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # real names for type checkers; resolved lazily at run time
    from .arrays.store import ArrayStore
    from .bundles.importer import import_bundle
    from .bundles.predict import predict
    from .chains.builder import ChainBuilder
    from .chains.replay import replay_chain
    from .chains.trace import ExecutionTrace, TraceStep
    from .config import (
        DuckDBStoreConfig,
        PostgresStoreConfig,
        StoreConfig,
        create_store,
        parse_to_config,
    )
    from .errors import (
        ArtifactIntegrityError,
        ArtifactNotFoundError,
        InvalidInputError,
        MissingParentError,
        N4AError,
        SchemaVersionError,
        WorkspaceLockTimeout,
    )
    from .library import PipelineLibrary
    from .transfer import export_store
    from .workspace import WorkspaceStore

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    "WorkspaceStore": "n4a_store.workspace",
    "StoreConfig": "n4a_store.config",
    "DuckDBStoreConfig": "n4a_store.config",
    "PostgresStoreConfig": "n4a_store.config",
    "create_store": "n4a_store.config",
    "parse_to_config": "n4a_store.config",
    "export_store": "n4a_store.transfer",
    "ArrayStore": "n4a_store.arrays.store",
    "ChainBuilder": "n4a_store.chains.builder",
    "ExecutionTrace": "n4a_store.chains.trace",
    "TraceStep": "n4a_store.chains.trace",
    "replay_chain": "n4a_store.chains.replay",
    "predict": "n4a_store.bundles.predict",
    "import_bundle": "n4a_store.bundles.importer",
    "PipelineLibrary": "n4a_store.library",
    "N4AError": "n4a_store.errors",
    "InvalidInputError": "n4a_store.errors",
    "MissingParentError": "n4a_store.errors",
    "WorkspaceLockTimeout": "n4a_store.errors",
    "SchemaVersionError": "n4a_store.errors",
    "ArtifactNotFoundError": "n4a_store.errors",
    "ArtifactIntegrityError": "n4a_store.errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name on first access."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'n4a_store' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
