"""DuckDB catalog backend: one ``store.duckdb`` file, serialised by a waitable file lock.

Only connection handling, schema creation and a few dialect fragments live here;
every query is shared (:mod:`n4a_store.catalog.sql`). Bulk inserts and upserts
go through DuckDB's replacement scans of Arrow tables, its cheapest path.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb
import polars as pl
import pyarrow as pa

from .. import schema
from ..base import AfterCommit, Session
from ..sql import SqlCatalog
from . import schema as duckdb_schema
from .connection import LeasedConnection
from .lock import WorkspaceLock

_DML = ("INSERT", "UPDATE", "DELETE")
DB_NAME = "store.duckdb"


class DuckDBSession:
    """A :class:`~n4a_store.catalog.base.Session` over one DuckDB connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the rows an INSERT/UPDATE/DELETE changed."""
        rows = self.con.execute(sql, list(params) if params else None).fetchall()
        if rows and sql.lstrip()[:6].upper() in _DML:
            return int(rows[0][0])
        return 0

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of a query."""
        return self.con.execute(sql, list(params) if params else None).fetchall()

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """A query's result as polars, through Arrow without copies."""
        result = pl.from_arrow(self.con.sql(sql, params=list(params) if params else None)
                               .to_arrow_table())
        assert isinstance(result, pl.DataFrame)
        return result

    def records(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts straight from the cursor (a point read skips the Arrow round trip)."""
        cur = self.con.execute(sql, list(params) if params else None)
        columns = [d[0] for d in cur.description or ()]
        return [dict(zip(columns, row)) for row in cur.fetchall()]

    def insert(self, table: str, rows: pa.Table) -> None:
        """Insert an Arrow table by column name (DuckDB's replacement scan reads ``n4a_rows``).

        A single row of scalars goes in as ``VALUES`` instead: about two thirds of the
        cost of an Arrow scan (one pipeline's own row and its chain are single rows). Rows
        with list columns (arrays of the table backend) keep the scan: bound as Python
        lists, large arrays would cost far more.
        """
        columns = ", ".join(rows.column_names)
        if rows.num_rows == 1 and not any(pa.types.is_list(t) or pa.types.is_large_list(t)
                                          for t in rows.schema.types):
            values = [rows.column(name)[0].as_py() for name in rows.column_names]
            self.con.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(values))})",
                             values)
            return
        n4a_rows = rows  # noqa: F841 - found by DuckDB's replacement scan of this frame
        self.con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM n4a_rows")


class DuckDBCatalog(SqlCatalog):
    """The catalog in ``<workspace>/store.duckdb``."""

    kind = "duckdb"
    #: a read holds the shared workspace lock (no writer commits between its statements),
    #: and DuckDB has min(x, n) and list_max
    bounded_top_n = True

    def __init__(self, root: Path, lock_timeout: float = 60.0, idle_release: float = 0.2) -> None:
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        self.connection = LeasedConnection(self.db_path, WorkspaceLock(self.root), lock_timeout,
                                           idle_release)

    @property
    def location(self) -> str:
        """The workspace directory."""
        return str(self.root)

    # -- sessions --------------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only connection under the shared workspace lock."""
        with self.connection.reading() as con:
            yield DuckDBSession(con)

    @contextmanager
    def writing(self, after_commit: AfterCommit = None, *, maintenance: bool = False) -> Iterator[Session]:
        """One transaction under the exclusive workspace lock (which also excludes maintenance)."""
        with self.connection.writing(after_commit=after_commit) as con:
            yield DuckDBSession(con)

    @contextmanager
    def exclusive(self) -> Iterator[Session]:
        """A read-write connection with no transaction open."""
        with self.connection.exclusive() as con:
            yield DuckDBSession(con)

    @property
    def holding(self) -> str | None:
        """"r", "w" or None: what this process currently holds of the workspace lock."""
        return self.connection.holding

    def release(self) -> None:
        """End this process's lease of the catalog now."""
        self.connection.release()

    def close(self) -> None:
        """Close the connection and release the lock."""
        self.connection.close()

    # -- schema ----------------------------------------------------------------------
    def open_schema(self) -> None:
        """Create, migrate or refuse the catalog; a newer one is only ever read."""
        where = str(self.root)
        if self.db_path.exists():
            with self.reading() as s:
                version = duckdb_schema.read_version_outside_transaction(s)
            schema.check_readable(version, where)
            if version == schema.SCHEMA_VERSION:
                return
        with self.writing() as s:
            schema.create_or_migrate(s, where, duckdb_schema.TYPES, duckdb_schema.MIGRATIONS,
                                     duckdb_schema.has_table)

    def vacuum(self) -> None:
        """VACUUM and CHECKPOINT the database file."""
        with self.exclusive() as s:
            s.execute("VACUUM")
            s.execute("CHECKPOINT")

    # -- dialect ---------------------------------------------------------------------
    def in_list(self, column: str) -> str:
        return f"list_contains(?, {column})"

    def array_has(self, column: str) -> str:
        return f"list_contains({column}, ?)"

    def text_contains(self, column: str, needle: str) -> str:
        return f"contains({column}, {needle})"

    def insert_artifacts(self, session: Session, rows: pa.Table) -> set[str]:
        """One INSERT ... WHERE NOT EXISTS ... RETURNING (writers are serialised by the file lock)."""
        con = session.con  # type: ignore[attr-defined]
        n4a_artifacts = rows  # noqa: F841 - found by DuckDB's replacement scan
        columns = ", ".join(rows.column_names)
        return {r[0] for r in con.execute(
            f"INSERT INTO artifacts ({columns}) SELECT {columns} FROM n4a_artifacts p "
            "WHERE NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.artifact_id = p.artifact_id) "
            "RETURNING artifact_id").fetchall()}

    def apply_completions(self, session: Session, rows: pa.Table) -> None:
        """Mark many pipelines completed in one UPDATE ... FROM an Arrow table."""
        con = session.con  # type: ignore[attr-defined]
        n4a_completions = rows  # noqa: F841 - found by DuckDB's replacement scan
        con.execute(
            "UPDATE pipelines SET status = 'completed', best_val = c.best_val, "
            "best_test = c.best_test, metric = c.metric, duration_ms = c.duration_ms, "
            "error = NULL, completed_at = c.completed_at "
            "FROM n4a_completions c WHERE pipelines.pipeline_id = c.pipeline_id")
