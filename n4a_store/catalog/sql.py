"""Shared SQL of every catalog backend, with small dialect hooks.

:class:`SqlCatalog` holds every statement the store runs. Backends subclass it
(``catalog/duckdb``, ``catalog/postgres``) and override only connection handling,
schema creation and migration, and the fragments below where the dialects differ:

* :meth:`SqlCatalog.in_list` - ``column`` is one of a list parameter;
* :meth:`SqlCatalog.array_has` - a list column holds a scalar parameter;
* :meth:`SqlCatalog.text_contains` - a text column contains another text;
* :meth:`SqlCatalog.insert_artifacts` / :meth:`SqlCatalog.apply_completions` -
  bulk insert-if-absent and bulk update from Arrow rows.

No text from a caller is spliced into SQL: identifiers come from the whitelists
of :mod:`n4a_store.catalog.columns`, values travel as parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from datetime import datetime
from typing import Any, Iterable, Mapping

import polars as pl
import pyarrow as pa

from ..errors import MissingParentError
from .base import AfterCommit, Session, SessionContext
from .columns import GROUPABLE_COLUMNS, PREDICTION_COLUMNS, check_column
from .pending import SCHEMAS

PREDICTION_SELECT = ", ".join(PREDICTION_COLUMNS)


def _where(clauses: list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


class SqlCatalog(ABC):
    """A catalog backend speaking SQL; subclasses supply connections and dialect."""

    #: short backend name shown in reprs and metadata ("duckdb", "postgresql")
    kind: str = "sql"

    # -- connection handling (backend-specific) ------------------------------------
    @property
    @abstractmethod
    def location(self) -> str:
        """Where the catalog lives, for messages (never with a password)."""

    @abstractmethod
    def reading(self) -> SessionContext:
        """A session that sees every committed write."""

    @abstractmethod
    def writing(self, after_commit: AfterCommit = None, *, maintenance: bool = False) -> SessionContext:
        """A session inside one transaction; ``after_commit`` runs after COMMIT.

        Writers run concurrently where the backend allows it, but never alongside
        a ``maintenance`` write (gc, deletes): those wait for writers in flight and
        hold writers off until their ``after_commit`` (file removal) is done, so a
        file a writer has just claimed is never removed.
        """

    @abstractmethod
    def exclusive(self) -> SessionContext:
        """A session with no transaction open (DDL, VACUUM)."""

    @abstractmethod
    def open_schema(self) -> None:
        """Create the schema, migrate an older one, or refuse a newer one."""

    @abstractmethod
    def vacuum(self) -> None:
        """Reclaim unused space in the catalog."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and locks; later calls may reopen them."""

    def release(self) -> None:
        """Hand shared resources back now (a no-op unless the backend leases them)."""

    def is_transient(self, error: BaseException) -> bool:
        """True when retrying the same transaction can succeed (deadlock, serialization failure)."""
        return False

    # -- dialect fragments -----------------------------------------------------------
    def row_lock(self, mode: str) -> str:
        """Suffix locking selected rows ("share" or "update") until the transaction ends.

        Empty where writers are serialised anyway (DuckDB).
        """
        return ""

    def in_list(self, column: str) -> str:
        """SQL true when ``column`` is in the list bound to the one ``?`` it contains."""
        return f"{column} = ANY(?)"

    def array_has(self, column: str) -> str:
        """SQL true when the list column holds the scalar bound to its ``?``."""
        return f"? = ANY({column})"

    def text_contains(self, column: str, needle: str) -> str:
        """SQL true when text ``column`` contains the text expression ``needle``."""
        return f"strpos({column}, {needle}) > 0"

    def text_array(self) -> str:
        """A ``?`` cast to a list of text (for unnest)."""
        return "CAST(? AS TEXT[])"

    def bigint_array(self) -> str:
        """A ``?`` cast to a list of 64-bit integers (for unnest)."""
        return "CAST(? AS BIGINT[])"

    @abstractmethod
    def insert_artifacts(self, session: Session, rows: pa.Table) -> set[str]:
        """Insert artifact rows not in the catalog yet; return the ids inserted.

        Rows whose id is already there are left alone (their claims are added by
        :meth:`add_artifact_claims`).
        """

    def add_artifact_claims(self, session: Session, rows: pa.Table, claims: dict[str, int]) -> None:
        """Store artifacts saved by this process and add the claims committed chains take.

        ``rows`` (``artifacts`` schema) are artifacts whose bytes the process holds,
        each with the claims this commit takes in ``ref_count``: new ones are
        inserted with them, known ones get them added. ``claims`` adds claims to
        artifacts that must already be in the catalog; if one is gone (collected
        meanwhile), :class:`MissingParentError` names it and the transaction fails.
        """
        extra = dict(claims)
        if rows.num_rows:
            inserted = self.insert_artifacts(session, rows)
            for artifact_id, count in zip(rows.column("artifact_id").to_pylist(),
                                          rows.column("ref_count").to_pylist()):
                if artifact_id not in inserted and count:
                    extra[artifact_id] = extra.get(artifact_id, 0) + count
        extra = {a: n for a, n in extra.items() if n}
        if not extra:
            return
        ids, counts = zip(*sorted(extra.items()))
        changed = session.execute(
            "UPDATE artifacts SET ref_count = artifacts.ref_count + d.n "
            f"FROM (SELECT unnest({self.text_array()}) AS id, unnest({self.bigint_array()}) AS n) d "
            "WHERE artifacts.artifact_id = d.id", [list(ids), list(counts)])
        if changed < len(ids):
            present = self.existing(session, "artifacts", "artifact_id", ids)
            raise MissingParentError("artifact", sorted(set(ids) - present)[0])

    def apply_completions(self, session: Session, rows: pa.Table) -> None:
        """Mark pipelines completed from rows of the ``completions`` schema."""
        for row in rows.to_pylist():
            session.execute(
                "UPDATE pipelines SET status = 'completed', best_val = ?, best_test = ?, "
                "metric = ?, duration_ms = ?, error = NULL, completed_at = ? WHERE pipeline_id = ?",
                [row["best_val"], row["best_test"], row["metric"], row["duration_ms"],
                 row["completed_at"], row["pipeline_id"]])

    # -- existence --------------------------------------------------------------------
    def run_exists(self, s: Session, run_id: str) -> bool:
        """True when the run is in the catalog."""
        return bool(s.rows("SELECT 1 FROM runs WHERE run_id = ?", [run_id]))

    def require_run(self, s: Session, run_id: str) -> None:
        """Raise :class:`MissingParentError` unless the run exists."""
        if not isinstance(run_id, str) or not self.run_exists(s, run_id):
            raise MissingParentError("run", str(run_id))

    def pipeline_owner(self, s: Session, pipeline_id: str) -> tuple[str, str | None] | None:
        """(run_id, dataset_name) of a pipeline, or None."""
        rows = s.rows("SELECT run_id, dataset_name FROM pipelines WHERE pipeline_id = ?", [pipeline_id])
        return (rows[0][0], rows[0][1]) if rows else None

    def chain_exists(self, s: Session, chain_id: str) -> bool:
        """True when the chain is in the catalog."""
        return bool(s.rows("SELECT 1 FROM chains WHERE chain_id = ?", [chain_id]))

    def artifact_formats(self, s: Session, artifact_ids: Iterable[str]) -> dict[str, str]:
        """{artifact_id: format} for the given ids that are in the catalog."""
        ids = sorted(set(artifact_ids))
        if not ids:
            return {}
        return dict(s.rows(
            f"SELECT artifact_id, format FROM artifacts WHERE {self.in_list('artifact_id')}", [ids]))

    def existing(self, s: Session, table: str, column: str, ids: Iterable[str],
                 lock: str | None = None) -> set[str]:
        """The subset of ``ids`` present in ``table.column`` (identifiers from code only).

        With ``lock`` ("share" or "update") the rows stay locked until the transaction ends.
        """
        wanted = sorted(set(ids))
        if not wanted:
            return set()
        suffix = self.row_lock(lock) if lock else ""
        if len(wanted) == 1:  # the usual check of one commit: a plain key lookup plans fastest
            return {r[0] for r in s.rows(
                f"SELECT {column} FROM {table} WHERE {column} = ?{suffix}", wanted)}
        return {r[0] for r in s.rows(
            f"SELECT {column} FROM {table} WHERE {self.in_list(column)}{suffix}", [wanted])}

    # -- runs and pipelines -------------------------------------------------------------
    def insert_run(self, s: Session, row: dict[str, Any]) -> None:
        """Insert a new run row."""
        columns = list(row)
        s.execute(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                  [row[c] for c in columns])

    def finish_run(self, s: Session, run_id: str, status: str, summary_json: str | None,
                   error: str | None, now: datetime) -> None:
        """Set a run's final status (keeping its summary when none is given)."""
        self.require_run(s, run_id)
        s.execute("UPDATE runs SET status = ?, summary = coalesce(?, summary), error = ?, "
                  "completed_at = ? WHERE run_id = ?", [status, summary_json, error, now, run_id])

    def insert_pipeline(self, s: Session, row: dict[str, Any]) -> None:
        """Insert a new pipeline row under an existing run."""
        self.require_run(s, row["run_id"])
        s.insert("pipelines", pa.Table.from_pylist([row], schema=_subschema("pipelines", row)))

    def complete_pipeline(self, s: Session, pipeline_id: str, best_val: float | None,
                          best_test: float | None, metric: str | None, duration_ms: int | None,
                          now: datetime) -> bool:
        """Mark one pipeline completed; False when it does not exist."""
        return s.execute(
            "UPDATE pipelines SET status = 'completed', best_val = ?, best_test = ?, metric = ?, "
            "duration_ms = ?, error = NULL, completed_at = ? WHERE pipeline_id = ?",
            [best_val, best_test, metric, duration_ms, now, pipeline_id]) > 0

    def mark_pipeline_failed(self, s: Session, pipeline_id: str, error: str, now: datetime) -> None:
        """Record a pipeline's failure."""
        s.execute("UPDATE pipelines SET status = 'failed', error = ?, completed_at = ? "
                  "WHERE pipeline_id = ?", [error, now, pipeline_id])

    def run_pipeline_ids(self, s: Session, run_id: str) -> list[str]:
        """Ids of a run's pipelines."""
        return [r[0] for r in s.rows("SELECT pipeline_id FROM pipelines WHERE run_id = ?", [run_id])]

    # -- buffered rows ---------------------------------------------------------------
    def insert_rows(self, s: Session, table: str, rows: pa.Table) -> None:
        """Bulk-insert buffered rows of one table."""
        if rows.num_rows:
            s.insert(table, rows)

    # -- deletes ---------------------------------------------------------------------
    def chains_of_pipelines(self, s: Session, pipeline_ids: list[str]) -> list[dict[str, Any]]:
        """Chain rows (ids and artifact maps, JSON text) of some pipelines."""
        return s.frame(
            "SELECT chain_id, fold_artifacts, shared_artifacts, steps, model_step_idx FROM chains "
            f"WHERE {self.in_list('pipeline_id')}", [pipeline_ids]).to_dicts()

    def delete_pipeline_rows(self, s: Session, pipeline_ids: list[str],
                             keep_logs: bool) -> tuple[int, list[tuple[str, str, str | None]]]:
        """Delete predictions, chains (and logs) of pipelines.

        Returns (rows deleted, [(prediction_id, dataset_name, array_ref)] deleted).
        """
        gone = [(r[0], r[1], r[2]) for r in s.rows(
            "SELECT prediction_id, dataset_name, array_ref FROM predictions "
            f"WHERE {self.in_list('pipeline_id')}", [pipeline_ids])]
        count = s.execute(f"DELETE FROM predictions WHERE {self.in_list('pipeline_id')}", [pipeline_ids])
        count += s.execute(f"DELETE FROM chains WHERE {self.in_list('pipeline_id')}", [pipeline_ids])
        if not keep_logs:
            count += s.execute(f"DELETE FROM logs WHERE {self.in_list('pipeline_id')}", [pipeline_ids])
        return count, gone

    def delete_pipelines(self, s: Session, pipeline_ids: list[str]) -> int:
        """Delete pipeline rows; return how many."""
        return s.execute(f"DELETE FROM pipelines WHERE {self.in_list('pipeline_id')}", [pipeline_ids])

    def delete_run_row(self, s: Session, run_id: str) -> int:
        """Delete a run row (its pipelines go first)."""
        s.execute("DELETE FROM pipelines WHERE run_id = ?", [run_id])
        return s.execute("DELETE FROM runs WHERE run_id = ?", [run_id])

    def delete_prediction(self, s: Session, prediction_id: str) -> tuple[str, str, str | None] | None:
        """Delete one prediction; return (id, dataset, array_ref) or None if absent."""
        rows = s.rows("SELECT prediction_id, dataset_name, array_ref FROM predictions "
                      "WHERE prediction_id = ?", [prediction_id])
        if not rows:
            return None
        s.execute("DELETE FROM predictions WHERE prediction_id = ?", [prediction_id])
        return rows[0][0], rows[0][1], rows[0][2]

    def release_claims(self, s: Session, refs: Iterable[str]) -> None:
        """Withdraw one claim per reference (never below zero)."""
        self._update_ref_counts(s, Counter(refs), "greatest(artifacts.ref_count - d.n, 0)")

    def collect_dead_artifacts(self, s: Session, keep: set[str]) -> list[tuple[str, str]]:
        """Delete rows of artifacts with no claims and no chain naming them; return (id, format)."""
        candidates = s.rows("SELECT artifact_id, format FROM artifacts WHERE ref_count <= 0")
        candidates = [(a, f) for a, f in candidates if a not in keep]
        if not candidates:
            return []
        # ids are 64 hex digits, so containment in a chain's JSON text is exact
        named = " OR ".join(self.text_contains(f"h.{c}", "c.id")
                            for c in ("fold_artifacts", "shared_artifacts", "steps"))
        still_used = {r[0] for r in s.rows(
            f"SELECT c.id FROM (SELECT unnest({self.text_array()}) AS id) c "
            f"WHERE EXISTS (SELECT 1 FROM chains h WHERE {named})", [[a for a, _ in candidates]])}
        dead = [(a, f) for a, f in candidates if a not in still_used]
        if dead:
            s.execute(f"DELETE FROM artifacts WHERE {self.in_list('artifact_id')} AND ref_count <= 0",
                      [[a for a, _ in dead]])
        return dead

    # -- reads -------------------------------------------------------------------------
    def get_row(self, s: Session, table: str, key: str, value: str,
                with_array_ref: bool = False) -> dict[str, Any] | None:
        """One row of a table by its key column (identifiers from code only).

        ``with_array_ref`` adds a prediction's ``array_ref`` (one query for a read with arrays).
        """
        select = PREDICTION_SELECT if table == "predictions" else "*"
        if table == "predictions" and with_array_ref:
            select += ", array_ref"
        rows = s.records(f"SELECT {select} FROM {table} WHERE {key} = ?", [value])
        return rows[0] if rows else None

    def prediction_array_ref(self, s: Session, prediction_id: str) -> tuple[str, str | None] | None:
        """(dataset_name, array_ref) of a prediction, or None."""
        rows = s.rows("SELECT dataset_name, array_ref FROM predictions WHERE prediction_id = ?",
                      [prediction_id])
        return (rows[0][0], rows[0][1]) if rows else None

    def array_refs(self, s: Session, prediction_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """{prediction_id: (dataset_name, array_ref)} for predictions that exist."""
        if not prediction_ids:
            return {}
        return {r[0]: (r[1], r[2]) for r in s.rows(
            "SELECT prediction_id, dataset_name, array_ref FROM predictions "
            f"WHERE {self.in_list('prediction_id')}", [sorted(set(prediction_ids))])}

    def list_runs(self, s: Session, status: str | None, dataset: str | None,
                  limit: int | None, offset: int) -> pl.DataFrame:
        """Runs, newest first, filtered and paginated."""
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if dataset is not None:
            clauses.append(f"({self.array_has('dataset_names')} OR EXISTS (SELECT 1 FROM pipelines p "
                           "WHERE p.run_id = runs.run_id AND p.dataset_name = ?))")
            params += [dataset, dataset]
        sql = f"SELECT * FROM runs {_where(clauses)} ORDER BY created_at DESC, run_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        sql += " OFFSET ?"
        params.append(offset)
        return s.frame(sql, params)

    def list_pipelines(self, s: Session, run_id: str | None, dataset_name: str | None) -> pl.DataFrame:
        """Pipelines in creation order."""
        clauses, params = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if dataset_name is not None:
            clauses.append("dataset_name = ?")
            params.append(dataset_name)
        return s.frame(f"SELECT * FROM pipelines {_where(clauses)} ORDER BY created_at, pipeline_id",
                       params)

    def chains_for_pipeline(self, s: Session, pipeline_id: str) -> pl.DataFrame:
        """Chains of one pipeline in creation order."""
        return s.frame("SELECT * FROM chains WHERE pipeline_id = ? ORDER BY created_at, chain_id",
                       [pipeline_id])

    @staticmethod
    def prediction_where(filters: dict[str, Any]) -> tuple[list[str], list[Any]]:
        """WHERE clauses and parameters for prediction filters (names already whitelisted)."""
        clauses, params = [], []
        for name, value in filters.items():
            if value is None:
                continue
            clauses.append(f"{name} = ?")
            params.append(value)
        return clauses, params

    def query_predictions(self, s: Session, filters: dict[str, Any], limit: int | None,
                          offset: int) -> pl.DataFrame:
        """Predictions matching all filters, in creation order."""
        clauses, params = self.prediction_where(filters)
        sql = (f"SELECT {PREDICTION_SELECT} FROM predictions {_where(clauses)} "
               "ORDER BY created_at, prediction_id")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        sql += " OFFSET ?"
        params.append(offset)
        return s.frame(sql, params)

    def top_predictions(self, s: Session, n: int, column: str, ascending: bool | None,
                        filters: dict[str, Any], group_by: str | None) -> pl.DataFrame:
        """Best ``n`` predictions by ``column`` (``n`` per group with ``group_by``), NULLs last.

        ``ascending=None`` follows each row's metric (:mod:`n4a_store.ranking`); ties go
        to the smaller pipeline name, then prediction id; groups come best first.
        """
        from ..ranking import SCORE_COLUMNS

        group = None if group_by is None else check_column(group_by, GROUPABLE_COLUMNS,
                                                           "group_by column")
        clauses, params = self.prediction_where(filters)
        where = _where(clauses)
        if ascending is None and column in SCORE_COLUMNS:
            key = self._ranking_key(s, column, group, where, params)
        else:
            key = column if ascending in (None, True) else f"-{column}"
        if group is None:  # a top-N sort (no window over every row)
            bound = self._top_bound(s, column, key, clauses, params, int(n))
            if bound is not None:  # only rows as good as the n-th best meet the pipelines
                clauses, params = [*clauses, bound[0]], [*params, *bound[1]]
            qualified = ", ".join(f"p.{c}" for c in PREDICTION_COLUMNS)
            return s.frame(
                f"SELECT {qualified} FROM (SELECT {PREDICTION_SELECT}, {key} AS k FROM predictions "
                f"{_where(clauses)}) p LEFT JOIN pipelines pl ON pl.pipeline_id = p.pipeline_id "
                f"ORDER BY p.k NULLS LAST, pl.name NULLS LAST, p.prediction_id LIMIT ?",
                [*params, int(n)])
        # c.k: the score signed so that smaller is better
        source, source_params = self._group_candidates(group, key, where, params, int(n))
        sql = (f"SELECT {PREDICTION_SELECT} FROM ("
               f"SELECT p.*, row_number() OVER (PARTITION BY p.{group} ORDER BY p.k NULLS LAST, "
               f"p.pipeline_name NULLS LAST, p.prediction_id) AS rank_in_group, "
               f"min(p.k) OVER (PARTITION BY p.{group}) AS group_best FROM ("
               f"SELECT c.*, (SELECT pl.name FROM pipelines pl WHERE pl.pipeline_id = c.pipeline_id) "
               f"AS pipeline_name FROM {source} c) p) ranked WHERE rank_in_group <= ? "
               f"ORDER BY group_best NULLS LAST, {group} NULLS LAST, rank_in_group")
        return s.frame(sql, [*source_params, int(n)])

    def _group_candidates(self, group: str, key: str, where: str, params: list[Any],
                          n: int) -> tuple[str, list[Any]]:
        """The rows a top ``n`` per group ranks, as a subquery with ``k``, and its parameters.

        Where the backend allows it (:attr:`bounded_top_n`), only the rows of each group at
        least as good as its n-th best (ties kept; a group with fewer than n ranked rows
        whole) are ranked: a hash aggregate of the n best keys per group, in the same
        statement, instead of a window over every row.
        """
        rows = f"SELECT {PREDICTION_SELECT}, {key} AS k FROM predictions {where}"
        if not self.bounded_top_n or n <= 0:
            return f"({rows})", list(params)
        return (f"(WITH scored AS ({rows}), bounds AS (SELECT {group} AS g, min(k, ?) AS best "
                f"FROM scored GROUP BY {group}) SELECT scored.* FROM scored JOIN bounds "
                f"ON scored.{group} IS NOT DISTINCT FROM bounds.g "
                f"WHERE coalesce(len(bounds.best), 0) < ? OR scored.k <= list_max(bounds.best))",
                [*params, n, n])

    #: True where a top-N can be bounded first: the statements of one read session see one
    #: snapshot (the n-th best key, then the rows at least that good) and the dialect has
    #: ``min(x, n)`` and ``list_max`` (the n best keys of each group in one aggregate)
    bounded_top_n = False

    def _top_bound(self, s: Session, column: str, key: str, clauses: list[str], params: list[Any],
                   n: int) -> tuple[str, list[Any]] | None:
        """(clause, its parameters) keeping the rows at least as good as the n-th best.

        Only where a read is one snapshot (:attr:`bounded_top_n`): the n-th best key is read
        first, and the rows tied with it are kept, so ties are still broken by pipeline name;
        a plain column keeps a plain comparison (zone maps skip whole row groups). None when
        there is nothing to bound (fewer than n ranked rows) or elsewhere: PostgreSQL's own
        plan walks its score index in order (well under a millisecond at 1M predictions once
        the table is analysed), which a bound in the same statement only slows down.
        """
        # without group_by the key is the column or its negation (one direction per ranking)
        if not self.bounded_top_n or n <= 0 or key not in (column, f"-{column}"):
            return None
        found = s.rows(f"SELECT {key} AS k FROM predictions {_where(clauses)} "
                       "ORDER BY k NULLS LAST LIMIT 1 OFFSET ?", [*params, n - 1])
        if not found or found[0][0] is None:
            return None
        worst = found[0][0]
        return (f"{column} <= ?", [worst]) if key == column else (f"{column} >= ?", [-worst])

    @staticmethod
    def _ranking_key(s: Session, column: str, group: str | None, where: str,
                     params: list[Any]) -> str:
        """SQL for ``column`` signed so that ascending order is best first, per the rows' metrics.

        Each ranking (each group with ``group_by``) must hold metrics of one direction;
        groups of opposite directions are each ranked their own way (a CASE on the metric).
        """
        from .. import ranking

        select = f"{group}, metric" if group else "NULL, metric"
        pairs = s.rows(f"SELECT DISTINCT {select} FROM predictions {where}", params)
        per_group: dict[Any, set[str]] = {}
        for g, name in pairs:
            per_group.setdefault(g, set()).add(name)
        directions = {ranking.ascending_for(names) for names in per_group.values()}
        if directions == {False}:
            return f"-{column}"
        if directions <= {True}:
            return column
        lower = ", ".join(f"'{name}'" for name in sorted(ranking.LOWER_IS_BETTER))
        return f"CASE WHEN metric IN ({lower}) THEN {column} ELSE -{column} END"

    def prediction_ids_of_dataset(self, s: Session, dataset_name: str) -> set[str]:
        """Ids of all predictions of one dataset."""
        return {r[0] for r in s.rows("SELECT prediction_id FROM predictions WHERE dataset_name = ?",
                                     [dataset_name])}

    def pipeline_log(self, s: Session, pipeline_id: str) -> pl.DataFrame:
        """A pipeline's log entries in order."""
        return s.frame("SELECT * FROM logs WHERE pipeline_id = ? ORDER BY created_at, step_idx",
                       [pipeline_id])

    def run_log_summary(self, s: Session, run_id: str) -> pl.DataFrame:
        """Log entries of a run aggregated per step and operator."""
        return s.frame(
            """
            SELECT l.step_idx, l.operator_class,
                   count(*) AS n_events,
                   count(DISTINCT l.pipeline_id) AS n_pipelines,
                   sum(l.duration_ms) AS total_duration_ms,
                   avg(l.duration_ms) AS mean_duration_ms,
                   max(l.duration_ms) AS max_duration_ms,
                   count(*) FILTER (WHERE l.level = 'warning') AS n_warnings,
                   count(*) FILTER (WHERE l.level IN ('error', 'critical')) AS n_errors
            FROM logs l JOIN pipelines p ON p.pipeline_id = l.pipeline_id
            WHERE p.run_id = ?
            GROUP BY l.step_idx, l.operator_class
            ORDER BY l.step_idx NULLS LAST, l.operator_class
            """, [run_id])

    def artifact_stats(self, s: Session, artifact_ids: list[str] | None) -> dict[str, int]:
        """Counts and bytes of artifacts, in total and unreferenced."""
        where, params = (f"WHERE {self.in_list('artifact_id')}", [sorted(set(artifact_ids))]) \
            if artifact_ids is not None else ("", [])
        row = s.rows(
            "SELECT count(*), coalesce(sum(size_bytes), 0), "
            "count(*) FILTER (WHERE ref_count <= 0), "
            f"coalesce(sum(size_bytes) FILTER (WHERE ref_count <= 0), 0) FROM artifacts {where}",
            params)[0]
        return {"count": int(row[0]), "bytes": int(row[1]),
                "unreferenced_count": int(row[2]), "unreferenced_bytes": int(row[3])}

    # -- integrity (verify and repair) -------------------------------------------------
    def artifact_claim_rows(self, s: Session) -> list[tuple[str, str, int]]:
        """(artifact_id, format, ref_count) of every artifact, by id."""
        return [(r[0], r[1], int(r[2])) for r in s.rows(
            "SELECT artifact_id, format, ref_count FROM artifacts ORDER BY artifact_id")]

    def chain_reference_rows(self, s: Session) -> list[dict[str, Any]]:
        """Every chain's id, pipeline and artifact-naming columns (JSON still encoded)."""
        return s.frame("SELECT chain_id, pipeline_id, steps, model_step_idx, fold_artifacts, "
                       "shared_artifacts FROM chains ORDER BY chain_id").to_dicts()

    def prediction_array_rows(self, s: Session) -> list[tuple[str, str, bool]]:
        """(prediction_id, dataset_name, has_arrays) of every prediction."""
        return [(r[0], r[1], bool(r[2])) for r in s.rows(
            "SELECT prediction_id, dataset_name, has_arrays FROM predictions ORDER BY prediction_id")]

    def artifacts_created_since(self, s: Session, since: datetime) -> set[str]:
        """Ids of artifacts whose row was created at or after ``since`` (UTC, naive)."""
        return {r[0] for r in s.rows("SELECT artifact_id FROM artifacts WHERE created_at >= ?",
                                     [since])}

    def set_ref_counts(self, s: Session, counts: dict[str, int]) -> None:
        """Set the claim count of some artifacts (a repair recounting claims from the chains)."""
        self._update_ref_counts(s, counts, "d.n")

    def _update_ref_counts(self, s: Session, counts: Mapping[str, int], expression: str) -> None:
        """``ref_count = expression`` for each artifact in ``counts``, one statement
        (``d.n`` is the artifact's number in ``counts``)."""
        if not counts:
            return
        ids, values = zip(*sorted(counts.items()))
        s.execute(
            f"UPDATE artifacts SET ref_count = {expression} "
            f"FROM (SELECT unnest({self.text_array()}) AS id, unnest({self.bigint_array()}) AS n) d "
            "WHERE artifacts.artifact_id = d.id", [list(ids), list(values)])

    def table_counts(self, s: Session) -> dict[str, int]:
        """Row counts of the data tables (transfer checks, verify)."""
        return {t: int(s.rows(f"SELECT count(*) FROM {t}")[0][0])
                for t in ("runs", "pipelines", "chains", "predictions", "artifacts", "logs")}


def _subschema(table: str, row: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of ``table`` restricted to the keys of ``row``."""
    schema = SCHEMAS[table]
    return pa.schema([schema.field(name) for name in row])
