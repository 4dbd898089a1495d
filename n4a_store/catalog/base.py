"""The catalog protocol: what the store needs from a database of runs, pipelines and predictions.

A catalog backend gives *sessions* inside three kinds of context:

* :meth:`CatalogBackend.reading` - sees every committed write; never blocks a writer
  for longer than one statement (DuckDB: shared lock; PostgreSQL: MVCC);
* :meth:`CatalogBackend.writing` - one transaction, committed when the block exits
  without error and rolled back otherwise; ``after_commit`` runs after COMMIT while
  the backend still excludes conflicting maintenance (file removal of deleted rows);
* :meth:`CatalogBackend.exclusive` - no transaction, for DDL and VACUUM.

A session runs SQL written with ``?`` placeholders (translated per dialect), returns
rows or polars DataFrames, and bulk-inserts Arrow tables. The SQL the store runs is
shared (:mod:`n4a_store.catalog.sql`); each backend overrides only how it connects,
its schema and migrations, and a few dialect fragments.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Protocol, Sequence

import polars as pl
import pyarrow as pa


class Session(Protocol):
    """One connection's view of the catalog inside a reading/writing/exclusive block."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed (0 for others)."""
        ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return all its rows as tuples."""
        ...

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """Run a query and return its result as a polars DataFrame."""
        ...

    def records(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a query and return its rows as dicts, valued as ``frame(...).to_dicts()`` is."""
        ...

    def insert(self, table: str, rows: pa.Table) -> None:
        """Insert an Arrow table whose column names are columns of ``table``."""
        ...


SessionContext = contextlib.AbstractContextManager[Session]
AfterCommit = Callable[[], None] | None
