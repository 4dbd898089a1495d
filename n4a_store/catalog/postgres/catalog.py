"""PostgreSQL catalog backend (psycopg 3): many writer processes on many hosts, no file lock.

Only connection handling, the schema and a few dialect fragments live here; every
query is shared with DuckDB (:mod:`n4a_store.catalog.sql`). How the guarantees of the
DuckDB catalog's single writer hold here without one:

* **Readers never wait.** Reads run in autocommit on MVCC snapshots.
* **All or nothing.** A commit of the store is one transaction; another process sees
  a pipeline's rows all at once or not at all.
* **gc never removes a claimed artifact.** Writers hold a shared advisory lock of the
  workspace for the length of their transaction; gc and deletes take it exclusively
  and keep it until their files are removed, so a file a writer has just claimed
  (its claim committed or not) is never unlinked from under it.
* **Deletes never strand rows.** A writer locks the pipelines it writes under
  (``FOR SHARE``) and a delete locks them ``FOR UPDATE`` first, so one waits for
  the other. Rows are upserted in id order, so concurrent writers cannot deadlock
  on shared artifacts.
* Bulk rows go in with ``COPY``; lock waits are bounded by ``lock_timeout``.

Each workspace is one PostgreSQL schema (``public`` when unscoped).
"""

from __future__ import annotations

import os
import threading
import weakref
import zlib
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import Any, Iterator, Sequence

import polars as pl
import pyarrow as pa

from ...errors import InvalidInputError, StoreUnavailableError, WorkspaceLockTimeout
from .. import schema
from ..base import AfterCommit, Session
from ..sql import SqlCatalog
from . import schema as pg_schema

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql as pg_sql
except ImportError as exc:  # pragma: no cover - the postgres extra is not installed
    raise ImportError("the PostgreSQL catalog needs psycopg: pip install 'n4a[postgres]'") from exc

_LIVE: "weakref.WeakSet[PostgresCatalog]" = weakref.WeakSet()
# Connections inherited by a forked child: never closed there (that would end the
# parent's session on the shared socket), kept referenced so they are not collected.
_INHERITED: list[object] = []
_LOCK_CLASS_WRITERS = 0x4E34
_LOCK_CLASS_SCHEMA = 0x4E35

_POLARS_TYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(), 20: pl.Int64(), 21: pl.Int16(), 23: pl.Int32(), 25: pl.String(),
    1043: pl.String(), 19: pl.String(), 700: pl.Float32(), 701: pl.Float64(),
    1700: pl.Float64(), 1114: pl.Datetime("us"), 1009: pl.List(pl.String()),
    1015: pl.List(pl.String()), 1016: pl.List(pl.Int64()), 1007: pl.List(pl.Int32()),
    1022: pl.List(pl.Float64()),
}


def _reset_after_fork() -> None:
    for catalog in list(_LIVE):
        if catalog._con is not None:
            _INHERITED.append(catalog._con)
        catalog._con = None
        catalog._mutex = threading.RLock()


os.register_at_fork(after_in_child=_reset_after_fork)


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """Translate ``?`` placeholders to psycopg's ``%s`` (literal ``%`` escaped)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _lock_key(name: str) -> int:
    value = zlib.crc32(name.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


def _column(values: list[Any], type_code: int) -> tuple[list[Any], pl.DataType | None]:
    dtype = _POLARS_TYPES.get(type_code)
    if type_code == 1700:
        values = [None if v is None else float(v) for v in values]
    elif dtype is None and any(isinstance(v, Decimal) for v in values):
        values = [None if v is None else float(v) for v in values]
    return values, dtype


def _number_as_float(value: Any) -> Any:
    """A ``numeric`` value (``Decimal``) as the float :meth:`PostgresSession.frame` makes of it."""
    return float(value) if isinstance(value, Decimal) else value


class PostgresSession:
    """A :class:`~n4a_store.catalog.base.Session` over one psycopg connection."""

    def __init__(self, con: "psycopg.Connection[Any]") -> None:
        self.con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the rows it changed."""
        with self.con.cursor() as cur:
            cur.execute(_pg(sql), list(params))
            return max(cur.rowcount, 0)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of a query."""
        with self.con.cursor() as cur:
            cur.execute(_pg(sql), list(params))
            return cur.fetchall() if cur.description else []

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """A query's result as polars, typed from the result's column types."""
        with self.con.cursor() as cur:
            cur.execute(_pg(sql), list(params))
            description = cur.description or []
            data = cur.fetchall()
        columns = list(zip(*data)) if data else [() for _ in description]
        series = []
        for col, values in zip(description, columns):
            vals, dtype = _column(list(values), col.type_code)
            series.append(pl.Series(col.name, vals, dtype=dtype, strict=False))
        return pl.DataFrame(series)

    def records(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts straight from the cursor, valued as :meth:`frame` values them.

        No DataFrame is built: a point read stays clear of polars (whose first use in a
        process can cost more than a second while its runtime loads).
        """
        with self.con.cursor() as cur:
            cur.execute(_pg(sql), list(params))
            names = [col.name for col in cur.description or ()]
            data = cur.fetchall()
        return [dict(zip(names, map(_number_as_float, row))) for row in data]

    def insert(self, table: str, rows: pa.Table) -> None:
        """COPY an Arrow table into ``table`` (columns by name)."""
        names = rows.column_names
        statement = pg_sql.SQL("COPY {} ({}) FROM STDIN").format(
            pg_sql.Identifier(table), pg_sql.SQL(", ").join(map(pg_sql.Identifier, names)))
        columns = [rows.column(n).to_pylist() for n in names]
        with self.con.cursor() as cur, cur.copy(statement) as copy:
            for row in zip(*columns):
                copy.write_row(row)


class PostgresCatalog(SqlCatalog):
    """The catalog in one schema of a PostgreSQL database."""

    kind = "postgresql"

    def __init__(self, dsn: str, schema_name: str = "public", *, display: str | None = None,
                 lock_timeout: float = 60.0) -> None:
        self.dsn = dsn
        self.schema_name = schema_name
        self._display = display or "postgresql catalog"
        self.lock_timeout = lock_timeout
        self._con: "psycopg.Connection[Any] | None" = None
        self._mutex = threading.RLock()
        self._key = _lock_key(schema_name)
        _LIVE.add(self)

    @property
    def location(self) -> str:
        """The store URI without its password."""
        return self._display

    # -- connections -----------------------------------------------------------------
    @staticmethod
    def _connect(dsn: str, display: str) -> "psycopg.Connection[Any]":
        try:
            return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            # psycopg's message names host and port, never the password
            raise StoreUnavailableError(f"cannot connect to the catalog at {display}: {exc}") from exc

    def _connection(self) -> "psycopg.Connection[Any]":
        con = self._con
        if con is None or con.closed or con.broken:
            con = self._connect(self.dsn, self._display)
            with con.cursor() as cur:
                cur.execute(pg_sql.SQL("SET search_path TO {}").format(
                    pg_sql.Identifier(self.schema_name)))
                cur.execute(f"SET lock_timeout = '{int(self.lock_timeout * 1000)}ms'")
            self._con = con
        return con

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except pg_errors.LockNotAvailable as exc:
            raise WorkspaceLockTimeout(
                f"workspace {self._display!r} is busy: a lock stayed held by another process "
                f"for more than {self.lock_timeout:.1f}s") from exc
        except psycopg.OperationalError as exc:
            if self._con is not None and self._con.broken:
                self._con = None
            raise StoreUnavailableError(f"lost the catalog at {self._display}: {exc}") from exc

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Autocommit reads on the latest committed state (never blocked by writers)."""
        with self._mutex, self._guard():
            yield PostgresSession(self._connection())

    @contextmanager
    def writing(self, after_commit: AfterCommit = None, *, maintenance: bool = False) -> Iterator[Session]:
        """One transaction; writers share the workspace's advisory lock, maintenance takes it alone."""
        with self._mutex, self._guard():
            con = self._connection()
            lock = "pg_advisory_lock" if maintenance else "pg_advisory_lock_shared"
            unlock = "pg_advisory_unlock" if maintenance else "pg_advisory_unlock_shared"
            with con.cursor() as cur:
                cur.execute(f"SELECT {lock}(%s, %s)", [_LOCK_CLASS_WRITERS, self._key])
            try:
                with con.transaction():
                    yield PostgresSession(con)
                if after_commit is not None:
                    after_commit()
            finally:
                if not con.broken and not con.closed:
                    with con.cursor() as cur:
                        cur.execute(f"SELECT {unlock}(%s, %s)", [_LOCK_CLASS_WRITERS, self._key])

    @contextmanager
    def exclusive(self) -> Iterator[Session]:
        """Autocommit statements (VACUUM, DDL)."""
        with self._mutex, self._guard():
            yield PostgresSession(self._connection())

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._mutex:
            if self._con is not None:
                try:
                    self._con.close()
                finally:
                    self._con = None

    def is_transient(self, error: BaseException) -> bool:
        """True for failures a retry of the same transaction can cure (deadlock, serialization)."""
        return isinstance(error, (pg_errors.DeadlockDetected, pg_errors.SerializationFailure))

    # -- schema ----------------------------------------------------------------------
    def open_schema(self) -> None:
        """Create the workspace schema, migrate it, or refuse a newer one (one transaction)."""
        with self._mutex, self._guard():
            con = self._connection()
            with con.transaction():
                session = PostgresSession(con)
                session.execute("SELECT pg_advisory_xact_lock(?, ?)", [_LOCK_CLASS_SCHEMA, self._key])
                with con.cursor() as cur:
                    cur.execute(pg_sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        pg_sql.Identifier(self.schema_name)))
                schema.create_or_migrate(session, self._display, pg_schema.TYPES,
                                         pg_schema.MIGRATIONS, pg_schema.has_table,
                                         extra_ddl=pg_schema.INDEXES)

    def vacuum(self) -> None:
        """VACUUM (ANALYZE) every table of the workspace schema."""
        with self.exclusive() as s:
            for table in schema.TABLES:
                s.execute(f"VACUUM (ANALYZE) {table}")

    @classmethod
    def list_schemas(cls, dsn: str) -> list[str]:
        """Schemas of the database that hold an n4a catalog."""
        with cls._connect(dsn, "postgresql catalog") as con:
            rows = con.execute("SELECT table_schema FROM information_schema.tables "
                               "WHERE table_name = 'schema_info' ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    @classmethod
    def schema_exists(cls, dsn: str, schema_name: str) -> bool:
        """True when ``schema_name`` holds an n4a catalog."""
        return schema_name in cls.list_schemas(dsn)

    # -- dialect ---------------------------------------------------------------------
    def row_lock(self, mode: str) -> str:
        if mode not in ("share", "update"):
            raise InvalidInputError(f"unknown row lock {mode!r}")
        return " FOR SHARE" if mode == "share" else " FOR UPDATE"

    def in_list(self, column: str) -> str:
        return f"{column} = ANY(CAST(? AS TEXT[]))"

    def array_has(self, column: str) -> str:
        return f"CAST(? AS TEXT) = ANY({column})"

    def add_artifact_claims(self, session: Session, rows: pa.Table, claims: dict[str, int]) -> None:
        """Upsert saved artifacts in id order with their claims, then add the other claims.

        ``ON CONFLICT`` makes a concurrent writer storing the same content wait
        for this one and add its claims; rows are locked in id order, so writers
        sharing artifacts do not deadlock on them.
        """
        if rows.num_rows:
            names = rows.column_names
            placeholders = ", ".join(["%s"] * len(names))
            sql = (f"INSERT INTO artifacts ({', '.join(names)}) VALUES ({placeholders}) "
                   "ON CONFLICT (artifact_id) DO UPDATE SET ref_count = artifacts.ref_count + "
                   "EXCLUDED.ref_count")
            ordered = sorted(rows.to_pylist(), key=lambda r: r["artifact_id"])
            with session.con.cursor() as cur:  # type: ignore[attr-defined]
                cur.executemany(sql, [[r[n] for n in names] for r in ordered])
        if claims:
            super().add_artifact_claims(session, rows.slice(0, 0), claims)

    def insert_artifacts(self, session: Session, rows: pa.Table) -> set[str]:
        """Insert absent artifact rows (``ON CONFLICT DO NOTHING``); return the ids inserted."""
        names = rows.column_names
        placeholders = ", ".join(["%s"] * len(names))
        sql = (f"INSERT INTO artifacts ({', '.join(names)}) VALUES ({placeholders}) "
               "ON CONFLICT (artifact_id) DO NOTHING RETURNING artifact_id")
        inserted: set[str] = set()
        with session.con.cursor() as cur:  # type: ignore[attr-defined]
            for r in sorted(rows.to_pylist(), key=lambda r: r["artifact_id"]):
                cur.execute(sql, [r[n] for n in names])
                inserted.update(x[0] for x in cur.fetchall())
        return inserted

    def apply_completions(self, session: Session, rows: pa.Table) -> None:
        """Mark pipelines completed with one pipelined executemany."""
        sql = ("UPDATE pipelines SET status = 'completed', best_val = %s, best_test = %s, "
               "metric = %s, duration_ms = %s, error = NULL, completed_at = %s WHERE pipeline_id = %s")
        params = [[r["best_val"], r["best_test"], r["metric"], r["duration_ms"], r["completed_at"],
                   r["pipeline_id"]] for r in rows.to_pylist()]
        with session.con.cursor() as cur:  # type: ignore[attr-defined]
            cur.executemany(sql, params)
