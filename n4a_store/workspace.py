"""WorkspaceStore: the facade over a workspace's catalog, arrays and artifacts.

Concurrency model (see docs/architecture.md):

* Several processes may open one workspace. Access to ``store.duckdb`` goes
  through :class:`~n4a_store.catalog.connection.Catalog`, which serialises
  processes with a waitable file lock; no DuckDB lock error reaches callers.
* Run and pipeline lifecycle calls commit at once. Rows that belong to a
  pipeline (chains, predictions, arrays, logs, artifact claims) are buffered in
  the process and committed together, in one transaction, by
  ``complete_pipeline`` / ``fail_pipeline``, by any read through this store,
  by :meth:`WorkspaceStore.flush` and by :meth:`WorkspaceStore.close`.
* Artifact files and array files are written inside the exclusive lock just
  before the transaction commits, and removed again if it fails.
"""

from __future__ import annotations

import atexit
import warnings
import threading
import uuid
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .arrays.codec import normalize_record
from .arrays.store import ArrayStore
from .artifacts.files import ArtifactFiles, content_hash, serialize
from .catalog import schema
from . import ranking
from .catalog.columns import (
    GROUPABLE_COLUMNS,
    PREDICTION_COLUMNS,
    LOG_LEVELS,
    PREDICTION_FILTERS,
    RANKABLE_COLUMNS,
    check_column,
    decode_json_columns,
    finite_or_none,
    int_or_none,
    to_json,
)
from .catalog.connection import Catalog, first_row
from .catalog.lock import WorkspaceLock
from .catalog.pending import PendingArtifact, PendingWrites
from .errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    InvalidInputError,
    MissingParentError,
)

if TYPE_CHECKING:
    import duckdb

# array_file / array_row are internal location hints, not part of query results
_PREDICTION_SELECT = "* EXCLUDE (array_file, array_row)"
_ARRAY_KEYS = ("y_true", "y_pred", "y_proba", "sample_indices", "weights")
_AUTO_FLUSH_ROWS = 20_000
_OPEN_STORES: "weakref.WeakSet[WorkspaceStore]" = weakref.WeakSet()


def _frame(con: "duckdb.DuckDBPyConnection", sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    """Run a query and return its result as a polars DataFrame (via Arrow, no copy)."""
    return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _new_id() -> str:
    return str(uuid.uuid4())


def _check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{field} must be a non-empty string, got {value!r}")
    return value


def _check_page(limit: int | None, offset: int) -> None:
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 0):
        raise InvalidInputError(f"limit must be a non-negative integer or None, got {limit!r}")
    if not isinstance(offset, (int, np.integer)) or offset < 0:
        raise InvalidInputError(f"offset must be a non-negative integer, got {offset!r}")


def chain_artifact_refs(chain: dict[str, Any]) -> list[str]:
    """Artifact references a chain holds, one entry per claim it owns.

    A chain owns one claim per value of ``fold_artifacts`` and ``shared_artifacts``
    and per value of any per-step ``fold_artifacts`` mapping (per-fold
    transformers). A step's plain ``artifact_id`` mirrors ``shared_artifacts``
    and is not counted twice.
    """
    refs: list[str] = []
    for key in ("fold_artifacts", "shared_artifacts"):
        value = chain.get(key) or {}
        refs.extend(v for v in value.values() if isinstance(v, str))
    model_idx = chain.get("model_step_idx")
    for step in chain.get("steps") or []:
        if not isinstance(step, dict) or step.get("step_idx") == model_idx:
            continue
        per_fold = step.get("fold_artifacts")
        if isinstance(per_fold, dict):
            refs.extend(v for v in per_fold.values() if isinstance(v, str))
    return refs


class WorkspaceStore:
    """Database-backed workspace storage.

    Central storage facade for all workspace data: runs, pipelines, chains,
    predictions, artifacts, and structured execution logs, over three on-disk
    resources: ``store.duckdb``, ``arrays/`` and ``artifacts/``.
    """

    def __init__(
        self,
        workspace_path: Path | str,
        *,
        lock_timeout: float = 60.0,
        idle_release: float = 0.2,
    ) -> None:
        """Open (creating if needed) the workspace at ``workspace_path``.

        Args:
            workspace_path: Root directory of the workspace.
            lock_timeout: Longest wait, in seconds, for another process to hand
                over the catalog before :class:`WorkspaceLockTimeout` is raised.
            idle_release: Seconds of inactivity after which this process hands the
                catalog back so other processes can use it.
        """
        if not isinstance(lock_timeout, (int, float)) or lock_timeout <= 0:
            raise InvalidInputError(f"lock_timeout must be a positive number, got {lock_timeout!r}")
        self.workspace_path = Path(workspace_path).expanduser().resolve()
        if self.workspace_path.exists() and not self.workspace_path.is_dir():
            raise InvalidInputError(f"workspace path {str(self.workspace_path)!r} is not a directory")
        self.workspace_path.mkdir(parents=True, exist_ok=True)
        self.db_path = self.workspace_path / "store.duckdb"
        self._artifact_files = ArtifactFiles(self.workspace_path / "artifacts")
        self.array_store = ArrayStore(self.workspace_path)
        self._catalog = Catalog(
            self.db_path, WorkspaceLock(self.workspace_path), lock_timeout, idle_release
        )
        self._lock = threading.RLock()
        self._pending = PendingWrites()
        self._pipelines: dict[str, tuple[str, str | None]] = {}
        self._chains: set[str] = set()
        self._runs: set[str] = set()
        self._closed = False
        self._batch_depth = 0
        self._open_schema()
        _OPEN_STORES.add(self)

    # -- setup ---------------------------------------------------------------------
    def _open_schema(self) -> None:
        where = str(self.workspace_path)
        if self.db_path.exists():
            with self._catalog.reading() as con:
                version = schema.read_version(con)
            schema.check_readable(version, where)
            if version == schema.SCHEMA_VERSION:
                return
        with self._catalog.exclusive() as con:
            schema.create_or_migrate(con, where)

    def __enter__(self) -> "WorkspaceStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WorkspaceStore({str(self.workspace_path)!r})"

    # -- transaction plumbing -----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError(f"workspace store {str(self.workspace_path)!r} is closed")

    def flush(self) -> None:
        """Commit every buffered write of this process in one transaction."""
        with self._lock:
            self._check_open()
            self._commit()

    def _commit(self, extra: Any = None, after: Any = None) -> Any:
        """Commit buffered rows plus an optional ``extra(con)`` in one transaction.

        ``after(result)`` runs once the transaction committed, still under the
        exclusive lock. If anything fails, the buffer is kept for a retry and
        the files written for this attempt are removed.
        """
        pending = self._pending
        if pending.is_empty() and extra is None:
            return None
        self._pending = PendingWrites()
        written: list[Path] = []
        created: list[tuple[str, str]] = []
        box: dict[str, Any] = {}
        on_commit = (lambda: after(box.get("result"))) if after is not None else None
        try:
            with self._catalog.writing(after_commit=on_commit) as con:
                self._drop_orphans(con, pending)
                for artifact_id, item in pending.artifacts.items():
                    if self._artifact_files.write(artifact_id, item.row["format"], item.data):
                        created.append((artifact_id, item.row["format"]))
                if pending.arrays:
                    written = self.array_store.write_batch(pending.arrays)
                    located = {a["prediction_id"]: a.pop("_location") for a in pending.arrays}
                    for row in pending.predictions:
                        if row["prediction_id"] in located:
                            row["array_file"], row["array_row"] = located[row["prediction_id"]]
                for name in ("pipelines", "chains", "predictions", "logs"):
                    if getattr(pending, name):
                        self._insert(con, name, pending.table(name))
                if pending.completions:
                    con.register("_n4a_pending_completions", pending.table("completions"))
                    try:
                        con.execute(
                            "UPDATE pipelines SET status = 'completed', best_val = c.best_val, "
                            "best_test = c.best_test, metric = c.metric, duration_ms = c.duration_ms, "
                            "error = NULL, completed_at = c.completed_at "
                            "FROM _n4a_pending_completions c WHERE pipelines.pipeline_id = c.pipeline_id")
                    finally:
                        con.unregister("_n4a_pending_completions")
                if pending.artifacts:
                    self._upsert_artifacts(con, pending.table("artifacts"))
                box["result"] = extra(con) if extra is not None else None
        except BaseException:
            self.array_store.discard_files(written)
            for artifact_id, fmt in created:
                self._artifact_files.remove(artifact_id, fmt)
            self._pending = pending  # nothing was committed: keep it all for a retry
            raise
        return box["result"]

    @staticmethod
    def _upsert_artifacts(con: "duckdb.DuckDBPyConnection", table: Any) -> None:
        """Add claims to known artifacts, insert new ones (cheaper than ON CONFLICT in DuckDB)."""
        pending_artifacts = table  # noqa: F841 - read by DuckDB's replacement scan
        con.execute(
            "UPDATE artifacts SET ref_count = artifacts.ref_count + p.ref_count "
            "FROM pending_artifacts p WHERE artifacts.artifact_id = p.artifact_id")
        con.execute(
            "INSERT INTO artifacts SELECT * FROM pending_artifacts p "
            "WHERE NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.artifact_id = p.artifact_id)")

    @staticmethod
    def _insert(con: "duckdb.DuckDBPyConnection", name: str, table: Any, conflict: str = "") -> None:
        # ``pending_rows`` is found by DuckDB's replacement scan of this frame's locals;
        # its Arrow schema has the table's columns in table order (catalog/pending.py).
        pending_rows = table  # noqa: F841
        con.execute(f"INSERT INTO {name} SELECT * FROM pending_rows {conflict}")

    def _drop_orphans(self, con: "duckdb.DuckDBPyConnection", pending: PendingWrites) -> None:
        """Drop buffered rows whose pipeline or chain another process deleted meanwhile.

        They can never be committed. Their artifact claims are withdrawn, and a
        warning names what was dropped (the call that triggered the commit may be
        about something else).
        """
        pipeline_ids = {r["pipeline_id"] for r in pending.chains + pending.predictions + pending.logs}
        pipeline_ids |= set(pending.completions)
        pipeline_ids -= set(pending.pipelines)
        if not pipeline_ids:
            return
        found = {
            row[0]
            for row in con.execute(
                "SELECT pipeline_id FROM pipelines WHERE list_contains(?, pipeline_id)",
                [sorted(pipeline_ids)],
            ).fetchall()
        }
        lost = pipeline_ids - found
        chain_ids = {r["chain_id"] for r in pending.predictions if r["chain_id"]} - pending.chain_ids()
        gone: set[str] = set()
        if chain_ids:
            present = {
                row[0]
                for row in con.execute(
                    "SELECT chain_id FROM chains WHERE list_contains(?, chain_id)", [sorted(chain_ids)]
                ).fetchall()
            }
            gone = chain_ids - present
            lost |= {r["pipeline_id"] for r in pending.predictions if r["chain_id"] in gone}
        if not lost:
            return
        dropped = pending.drop_pipelines(lost)
        pending.logs = [r for r in pending.logs if r["pipeline_id"] not in lost]
        for pid in lost:
            pending.completions.pop(pid, None)
            self._pipelines.pop(pid, None)
        self._chains -= gone | dropped.chain_ids()
        for chain in dropped.chains:
            for ref in chain_artifact_refs(decode_json_columns("chains", chain)):
                item = pending.artifacts.get(ref)
                if item is not None:
                    item.claims -= 1
        warnings.warn(
            f"dropped buffered rows of pipeline(s) {', '.join(sorted(lost))}: deleted by another "
            f"process before they could be committed",
            RuntimeWarning, stacklevel=4,
        )

    def _read(self) -> Any:
        """Flush buffered writes, then return a read context for the catalog."""
        self._check_open()
        if not self._pending.is_empty():
            self._commit()
        return self._catalog.reading()

    def batch(self) -> "_Batch":
        """Group the commits of many pipelines into one transaction.

        Inside ``with store.batch():``, ``begin_pipeline`` and
        ``complete_pipeline`` do not commit; everything is committed together
        when the block exits (or earlier, by a read, ``flush()`` or when the
        buffer grows past 20,000 rows). Each pipeline's rows still commit
        atomically. Use it for bulk ingest; leave it out when other processes
        should see each pipeline as soon as it completes.
        """
        return _Batch(self)

    def _maybe_autoflush(self) -> None:
        if self._pending.size() >= _AUTO_FLUSH_ROWS:
            self._commit()

    # -- existence checks -------------------------------------------------------------
    def _pipeline_info(self, pipeline_id: str) -> tuple[str, str | None]:
        info = self._pipelines.get(pipeline_id)
        if info is not None:
            return info
        if not isinstance(pipeline_id, str):
            raise MissingParentError("pipeline", str(pipeline_id))
        with self._catalog.reading() as con:
            row = first_row(con.execute(
                "SELECT run_id, dataset_name FROM pipelines WHERE pipeline_id = ?", [pipeline_id]
            ))
        if row is None:
            raise MissingParentError("pipeline", pipeline_id)
        self._pipelines[pipeline_id] = (row[0], row[1])
        return row[0], row[1]

    def _require_chain(self, chain_id: str) -> None:
        if chain_id in self._chains:
            return
        with self._catalog.reading() as con:
            row = first_row(con.execute("SELECT 1 FROM chains WHERE chain_id = ?", [chain_id]))
        if row is None:
            raise MissingParentError("chain", str(chain_id))
        self._chains.add(chain_id)

    def _require_run(self, con: "duckdb.DuckDBPyConnection", run_id: str) -> None:
        if first_row(con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id])) is None:
            raise MissingParentError("run", str(run_id))

    def _artifact_known(self, artifact_id: str) -> bool:
        if artifact_id in self._pending.artifacts:
            return True
        with self._catalog.reading() as con:
            return (
                first_row(con.execute("SELECT 1 FROM artifacts WHERE artifact_id = ?", [artifact_id]))
                is not None
            )

    # -- run lifecycle ------------------------------------------------------------------
    def begin_run(
        self, name: str, config: Any, datasets: list[dict], *, metadata: dict | None = None
    ) -> str:
        """Create a new run and return its unique identifier.

        Args:
            name: Human-readable name for the run.
            config: Serializable run-level configuration (stored as JSON).
            datasets: List of dataset metadata dicts (name, path, hash, ...).
            metadata: Extra JSON metadata, e.g. ``{"dagster_run_id": ...}``.
        """
        _check_name(name, "run name")
        if datasets is None:
            datasets = []
        if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
            raise InvalidInputError("datasets must be a list of dicts (name, path, hash, ...)")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidInputError("metadata must be a dict or None")
        names = [str(d["name"]) for d in datasets if d.get("name") is not None]
        row = [
            _new_id(), name, "running", to_json(config, "config"), to_json(datasets, "datasets"),
            names, to_json(metadata or {}, "metadata"), _now(),
        ]
        with self._lock:
            self._check_open()
            self._commit(lambda con: con.execute(
                "INSERT INTO runs (run_id, name, status, config, datasets, dataset_names, "
                "metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row))
        return row[0]

    def _finish_run(self, run_id: str, status: str, summary: Any, error: str | None) -> None:
        summary_json = to_json(summary, "summary") if summary is not None else None

        def update(con: "duckdb.DuckDBPyConnection") -> None:
            self._require_run(con, run_id)
            con.execute(
                "UPDATE runs SET status = ?, summary = coalesce(?, summary), error = ?, "
                "completed_at = ? WHERE run_id = ?",
                [status, summary_json, error, _now(), run_id],
            )

        with self._lock:
            self._check_open()
            self._commit(update)

    def complete_run(self, run_id: str, summary: dict) -> None:
        """Mark a run as successfully completed (commits this process's buffered writes too)."""
        self._finish_run(run_id, "completed", summary, None)

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run as failed with an error message."""
        self._finish_run(run_id, "failed", None, str(error))

    # -- pipeline lifecycle -------------------------------------------------------------
    def begin_pipeline(
        self, run_id: str, name: str, expanded_config: Any,
        generator_choices: list, dataset_name: str, dataset_hash: str,
    ) -> str:
        """Register a new pipeline execution under a run and return its id."""
        _check_name(name, "pipeline name")
        _check_name(dataset_name, "dataset_name")
        row = [
            _new_id(), run_id, name, "running", to_json(expanded_config, "expanded_config"),
            to_json(list(generator_choices or []), "generator_choices"), dataset_name,
            None if dataset_hash is None else str(dataset_hash), _now(),
        ]

        def insert(con: "duckdb.DuckDBPyConnection") -> None:
            self._require_run(con, run_id)
            con.execute(
                "INSERT INTO pipelines (pipeline_id, run_id, name, status, expanded_config, "
                "generator_choices, dataset_name, dataset_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

        with self._lock:
            self._check_open()
            if self._batch_depth:
                if run_id not in self._runs:
                    with self._catalog.reading() as con:
                        self._require_run(con, run_id)
                    self._runs.add(run_id)
                keys = ("pipeline_id", "run_id", "name", "status", "expanded_config",
                        "generator_choices", "dataset_name", "dataset_hash", "created_at")
                self._pending.pipelines[row[0]] = dict(zip(keys, row))
            else:
                self._commit(insert)
            self._pipelines[row[0]] = (run_id, dataset_name)
        return row[0]

    def complete_pipeline(
        self, pipeline_id: str, best_val: float, best_test: float,
        metric: str, duration_ms: int,
    ) -> None:
        """Mark a pipeline as completed with scores; commits its buffered rows in the same transaction."""
        values = [
            finite_or_none(best_val, "best_val"), finite_or_none(best_test, "best_test"),
            None if metric is None else str(metric), int_or_none(duration_ms, "duration_ms"),
        ]
        with self._lock:
            self._check_open()
            self._pipeline_info(pipeline_id)
            if self._batch_depth:
                done = dict(zip(("best_val", "best_test", "metric", "duration_ms"), values))
                begun = self._pending.pipelines.get(pipeline_id)
                if begun is not None:
                    begun.update(done, status="completed", completed_at=_now())
                else:
                    self._pending.completions[pipeline_id] = {
                        "pipeline_id": pipeline_id, **done, "completed_at": _now()}
                self._maybe_autoflush()
                return

            def update(con: "duckdb.DuckDBPyConnection") -> None:
                if first_row(con.execute(
                        "SELECT 1 FROM pipelines WHERE pipeline_id = ?", [pipeline_id])) is None:
                    self._pipelines.pop(pipeline_id, None)
                    raise MissingParentError("pipeline", pipeline_id)
                con.execute(
                    "UPDATE pipelines SET status = 'completed', best_val = ?, best_test = ?, "
                    "metric = ?, duration_ms = ?, error = NULL, completed_at = ? WHERE pipeline_id = ?",
                    [*values, _now(), pipeline_id],
                )

            self._commit(update)

    def fail_pipeline(self, pipeline_id: str, error: str) -> None:
        """Mark a pipeline as failed, rolling back its chains, predictions and arrays.

        Artifact references held by its chains are released; logs are kept.
        """
        with self._lock:
            self._check_open()
            self._pipeline_info(pipeline_id)
            dropped = self._pending.drop_pipelines({pipeline_id})
            self._pending.completions.pop(pipeline_id, None)
            self._chains -= dropped.chain_ids()

            def update(con: "duckdb.DuckDBPyConnection") -> list[str]:
                ids = self._delete_pipeline_rows(con, [pipeline_id], keep_logs=True)[1]
                self._release_refs(con, [chain_artifact_refs(decode_json_columns("chains", c)) for c in dropped.chains])
                con.execute(
                    "UPDATE pipelines SET status = 'failed', error = ?, completed_at = ? "
                    "WHERE pipeline_id = ?", [str(error), _now(), pipeline_id])
                return ids

            deleted_ids = self._commit(update)
            self.array_store.delete(deleted_ids)

    def delete_pipeline(self, pipeline_id: str, delete_artifacts: bool = True) -> int:
        """Delete one pipeline and its chains, predictions, arrays and logs; return rows deleted."""
        with self._lock:
            self._check_open()
            self._pipeline_info(pipeline_id)

            def delete(con: "duckdb.DuckDBPyConnection") -> tuple[int, list[str], list[tuple[str, str]]]:
                count, ids = self._delete_pipeline_rows(con, [pipeline_id], keep_logs=False)
                count += first_row(con.execute(
                    "DELETE FROM pipelines WHERE pipeline_id = ?", [pipeline_id]))[0]
                dead = self._collect_dead_artifacts(con) if delete_artifacts else []
                return count + len(dead), ids, dead

            count, ids, _ = self._commit(delete, after=lambda r: self._remove_artifact_files(r[2]))
            self._pipelines.pop(pipeline_id, None)
            self.array_store.delete(ids)
            return count

    def _delete_pipeline_rows(
        self, con: "duckdb.DuckDBPyConnection", pipeline_ids: list[str], keep_logs: bool
    ) -> tuple[int, list[str]]:
        """Delete chains/predictions (and logs) of pipelines; release refs; return (rows, prediction ids)."""
        chains = _frame(con, "SELECT chain_id, fold_artifacts, shared_artifacts, steps, model_step_idx "
                        "FROM chains WHERE list_contains(?, pipeline_id)", [pipeline_ids]).to_dicts()
        self._release_refs(con, [chain_artifact_refs(decode_json_columns("chains", c)) for c in chains])
        self._chains -= {c["chain_id"] for c in chains}
        ids = [r[0] for r in con.execute(
            "SELECT prediction_id FROM predictions WHERE list_contains(?, pipeline_id)",
            [pipeline_ids]).fetchall()]
        count = first_row(con.execute(
            "DELETE FROM predictions WHERE list_contains(?, pipeline_id)", [pipeline_ids]))[0]
        count += first_row(con.execute(
            "DELETE FROM chains WHERE list_contains(?, pipeline_id)", [pipeline_ids]))[0]
        if not keep_logs:
            count += first_row(con.execute(
                "DELETE FROM logs WHERE list_contains(?, pipeline_id)", [pipeline_ids]))[0]
        return count, ids

    @staticmethod
    def _release_refs(con: "duckdb.DuckDBPyConnection", refs_per_chain: list[list[str]]) -> None:
        counts: dict[str, int] = {}
        for refs in refs_per_chain:
            for ref in refs:
                counts[ref] = counts.get(ref, 0) + 1
        if counts:
            ids, decrements = zip(*sorted(counts.items()))
            con.execute(
                "UPDATE artifacts SET ref_count = greatest(artifacts.ref_count - d.n, 0) "
                "FROM (SELECT unnest(?) AS id, unnest(?) AS n) d WHERE artifacts.artifact_id = d.id",
                [list(ids), list(decrements)],
            )

    # -- chains -------------------------------------------------------------------------
    def save_chain(
        self, pipeline_id: str, steps: list[dict], model_step_idx: int,
        model_class: str, preprocessings: str, fold_strategy: str,
        fold_artifacts: dict, shared_artifacts: dict,
        branch_path: list[int] | None = None,
        source_index: int | None = None,
    ) -> str:
        """Store a preprocessing-to-model chain and return its id.

        Every artifact id the chain names must have been saved first
        (``KeyError`` otherwise). The chain is committed with its pipeline.
        """
        if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
            raise InvalidInputError("steps must be a non-empty list of step dicts")
        idx = int_or_none(model_step_idx, "model_step_idx")
        if idx is None or not 0 <= idx < len(steps):
            raise InvalidInputError(
                f"model_step_idx {model_step_idx!r} is outside the {len(steps)} steps")
        _check_name(model_class, "model_class")
        _check_name(fold_strategy, "fold_strategy")
        if not isinstance(fold_artifacts, dict) or not isinstance(shared_artifacts, dict):
            raise InvalidInputError("fold_artifacts and shared_artifacts must be dicts")
        chain = {
            "fold_artifacts": {str(k): v for k, v in fold_artifacts.items()},
            "shared_artifacts": {str(k): v for k, v in shared_artifacts.items()},
            "steps": steps, "model_step_idx": idx,
        }
        with self._lock:
            self._check_open()
            self._pipeline_info(pipeline_id)
            referenced = set(chain_artifact_refs(chain)) | {
                s["artifact_id"] for s in steps if isinstance(s.get("artifact_id"), str)}
            for artifact_id in sorted(referenced):
                if not self._artifact_known(artifact_id):
                    raise MissingParentError("artifact", artifact_id)
            chain_id = _new_id()
            self._pending.chains.append({
                "chain_id": chain_id, "pipeline_id": pipeline_id,
                "steps": to_json(steps, "steps"), "model_step_idx": idx,
                "model_class": model_class, "preprocessings": preprocessings or "",
                "fold_strategy": fold_strategy,
                "fold_artifacts": to_json(chain["fold_artifacts"], "fold_artifacts"),
                "shared_artifacts": to_json(chain["shared_artifacts"], "shared_artifacts"),
                "branch_path": to_json(branch_path, "branch_path"),
                "source_index": int_or_none(source_index, "source_index"),
                "created_at": _now(),
            })
            self._chains.add(chain_id)
            self._maybe_autoflush()
        return chain_id

    def get_chain(self, chain_id: str) -> dict | None:
        """Retrieve a chain by its identifier (JSON fields decoded), or None."""
        with self._lock, self._read() as con:
            rows = _frame(con, "SELECT * FROM chains WHERE chain_id = ?", [chain_id]).to_dicts()
        return decode_json_columns("chains", rows[0]) if rows else None

    def get_chains_for_pipeline(self, pipeline_id: str) -> pl.DataFrame:
        """List all chains belonging to a pipeline."""
        with self._lock, self._read() as con:
            return _frame(con, 
                "SELECT * FROM chains WHERE pipeline_id = ? ORDER BY created_at, chain_id",
                [pipeline_id])

    # -- predictions --------------------------------------------------------------------
    def save_prediction(
        self, pipeline_id: str, chain_id: str, dataset_name: str,
        model_name: str, model_class: str, fold_id: str, partition: str,
        val_score: float, test_score: float, train_score: float,
        metric: str, task_type: str, n_samples: int, n_features: int,
        scores: dict, best_params: dict,
        branch_id: int | None, branch_name: str | None,
        exclusion_count: int, exclusion_rate: float,
        preprocessings: str = "",
        *,
        y_true: Any = None, y_pred: Any = None, y_proba: Any = None,
        sample_indices: Any = None, weights: Any = None,
    ) -> str:
        """Store a prediction record (scores in DuckDB, optional arrays in Parquet).

        Non-finite scores (NaN, +/-inf) are stored as NULL: they never rank.
        Arrays, when given, must include ``y_true`` and ``y_pred`` of equal
        length; they are validated before anything is buffered.
        """
        _check_name(dataset_name, "dataset_name")
        _check_name(partition, "partition")
        prediction_id = _new_id()
        arrays = {"y_true": y_true, "y_pred": y_pred, "y_proba": y_proba,
                  "sample_indices": sample_indices, "weights": weights}
        record = None
        if any(v is not None for v in arrays.values()):
            record = normalize_record({
                "prediction_id": prediction_id, "dataset_name": dataset_name, **arrays,
                "model_name": model_name, "fold_id": None if fold_id is None else str(fold_id),
                "partition": partition, "metric": metric, "task_type": task_type,
                "val_score": finite_or_none(val_score, "val_score"),
            })
        row = {
            "prediction_id": prediction_id, "pipeline_id": pipeline_id, "chain_id": chain_id,
            "dataset_name": dataset_name, "model_name": model_name, "model_class": model_class,
            "fold_id": None if fold_id is None else str(fold_id), "partition": partition,
            "val_score": finite_or_none(val_score, "val_score"),
            "test_score": finite_or_none(test_score, "test_score"),
            "train_score": finite_or_none(train_score, "train_score"),
            "metric": metric, "task_type": task_type,
            "n_samples": int_or_none(n_samples, "n_samples"),
            "n_features": int_or_none(n_features, "n_features"),
            "scores": to_json(scores, "scores"), "best_params": to_json(best_params, "best_params"),
            "branch_id": int_or_none(branch_id, "branch_id"), "branch_name": branch_name,
            "exclusion_count": int_or_none(exclusion_count, "exclusion_count"),
            "exclusion_rate": finite_or_none(exclusion_rate, "exclusion_rate"),
            "preprocessings": preprocessings or "", "has_arrays": record is not None,
            "created_at": _now(),
        }
        with self._lock:
            self._check_open()
            run_id, _ = self._pipeline_info(pipeline_id)
            if chain_id is not None:
                self._require_chain(chain_id)
            row["run_id"] = run_id
            self._pending.predictions.append(row)
            if record is not None:
                self._pending.arrays.append(record)
            self._maybe_autoflush()
        return prediction_id

    # -- artifacts ----------------------------------------------------------------------
    def save_artifact(
        self, obj: Any, operator_class: str,
        artifact_type: str, format: str = "joblib",
    ) -> str:
        """Persist a binary artifact with content-addressed deduplication.

        Returns the SHA-256 of the serialised bytes; saving identical content
        again returns the same id and adds one to its ``ref_count``.
        """
        return self.save_artifact_bytes(serialize(obj, format), operator_class, artifact_type, format)

    def save_artifact_bytes(
        self, data: bytes, operator_class: str, artifact_type: str, format: str = "joblib",
    ) -> str:
        """Store already-serialised artifact bytes (e.g. from a bundle) unchanged.

        The id is the SHA-256 of ``data``, as for :meth:`save_artifact`; the
        bytes must be a valid ``format`` payload (they are not unpickled here).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInputError("artifact data must be bytes")
        data = bytes(data)
        artifact_id = content_hash(data)
        relative = self._artifact_files.relative_path(artifact_id, format)
        with self._lock:
            self._check_open()
            item = self._pending.artifacts.get(artifact_id)
            if item is not None:
                item.claims += 1
            else:
                self._pending.artifacts[artifact_id] = PendingArtifact(
                    row={
                        "artifact_id": artifact_id, "artifact_path": relative,
                        "content_hash": artifact_id, "operator_class": operator_class,
                        "artifact_type": artifact_type, "format": format,
                        "size_bytes": len(data), "created_at": _now(),
                    },
                    data=data,
                )
            self._maybe_autoflush()
        return artifact_id

    def get_artifact(self, artifact_id: str) -> dict | None:
        """The catalog row of an artifact, or None."""
        with self._lock, self._read() as con:
            rows = _frame(con, 
                "SELECT * FROM artifacts WHERE artifact_id = ?", [artifact_id]).to_dicts()
        return rows[0] if rows else None

    def _artifact_format(self, artifact_id: str) -> str:
        item = self._pending.artifacts.get(artifact_id)
        if item is not None:
            return item.row["format"]
        with self._catalog.reading() as con:
            row = first_row(con.execute(
                "SELECT format FROM artifacts WHERE artifact_id = ?", [artifact_id]))
        if row is None:
            raise ArtifactNotFoundError(f"artifact {artifact_id!r} is not in the workspace catalog")
        return row[0]

    def load_artifact(self, artifact_id: str) -> Any:
        """Load a binary artifact, verifying its SHA-256 before unpickling."""
        from .artifacts.files import deserialize

        with self._lock:
            self._check_open()
            item = self._pending.artifacts.get(artifact_id)
            if item is not None:
                return deserialize(item.data, item.row["format"])
            fmt = self._artifact_format(artifact_id)
        return self._artifact_files.load(artifact_id, fmt)

    def verify_artifacts(self, artifact_ids: list[str]) -> dict[str, str]:
        """Check that artifacts are cataloged, on disk and hash to their ids.

        Returns ``{artifact_id: problem}`` for the bad ones (empty when all are intact).
        """
        ids = sorted(set(artifact_ids))
        with self._lock, self._read() as con:
            formats = dict(con.execute(
                "SELECT artifact_id, format FROM artifacts WHERE list_contains(?, artifact_id)",
                [ids]).fetchall())
        problems: dict[str, str] = {}
        for artifact_id in ids:
            fmt = formats.get(artifact_id)
            if fmt is None:
                problems[artifact_id] = "not in the catalog"
                continue
            try:
                self._artifact_files.read_verified(artifact_id, fmt)
            except (ArtifactNotFoundError, ArtifactIntegrityError) as error:
                problems[artifact_id] = str(error)
        return problems

    def get_artifact_path(self, artifact_id: str) -> Path:
        """Return the filesystem path of a stored artifact (committing it first if buffered)."""
        with self._lock:
            self._check_open()
            if artifact_id in self._pending.artifacts:
                self._commit()
            return self._artifact_files.path(artifact_id, self._artifact_format(artifact_id))

    # -- logs ---------------------------------------------------------------------------
    def log_step(
        self, pipeline_id: str, step_idx: int, operator_class: str,
        event: str, duration_ms: int | None = None,
        message: str | None = None, details: dict | None = None,
        level: str = "info",
    ) -> None:
        """Record a structured log entry for a pipeline step."""
        if level not in LOG_LEVELS:
            raise InvalidInputError(f"unknown log level {level!r}; expected one of: {', '.join(sorted(LOG_LEVELS))}")
        _check_name(event, "event")
        row = {
            "log_id": _new_id(), "pipeline_id": pipeline_id,
            "step_idx": int_or_none(step_idx, "step_idx"), "operator_class": operator_class,
            "event": event, "duration_ms": int_or_none(duration_ms, "duration_ms"),
            "message": message, "details": to_json(details, "details"), "level": level,
            "created_at": _now(),
        }
        with self._lock:
            self._check_open()
            self._pipeline_info(pipeline_id)
            self._pending.logs.append(row)
            self._maybe_autoflush()

    # -- queries ------------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict | None:
        """Retrieve a single run record (JSON fields decoded), or None."""
        with self._lock, self._read() as con:
            rows = _frame(con, "SELECT * FROM runs WHERE run_id = ?", [run_id]).to_dicts()
        return decode_json_columns("runs", rows[0]) if rows else None

    def list_runs(
        self, status: str | None = None, dataset: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> pl.DataFrame:
        """List runs, newest first, with optional filtering and pagination."""
        _check_page(limit, offset)
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if dataset is not None:
            clauses.append("(list_contains(dataset_names, ?) OR EXISTS (SELECT 1 FROM pipelines p "
                           "WHERE p.run_id = runs.run_id AND p.dataset_name = ?))")
            params += [dataset, dataset]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM runs {where} ORDER BY created_at DESC, run_id"
        sql += " LIMIT ? OFFSET ?" if limit is not None else " OFFSET ?"
        params += [limit, offset] if limit is not None else [offset]
        with self._lock, self._read() as con:
            return _frame(con, sql, params)

    def get_pipeline(self, pipeline_id: str) -> dict | None:
        """Retrieve a single pipeline record (JSON fields decoded), or None."""
        with self._lock, self._read() as con:
            rows = _frame(con, 
                "SELECT * FROM pipelines WHERE pipeline_id = ?", [pipeline_id]).to_dicts()
        return decode_json_columns("pipelines", rows[0]) if rows else None

    def list_pipelines(
        self, run_id: str | None = None, dataset_name: str | None = None,
    ) -> pl.DataFrame:
        """List pipelines in creation order with optional filtering."""
        clauses, params = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if dataset_name is not None:
            clauses.append("dataset_name = ?")
            params.append(dataset_name)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock, self._read() as con:
            return _frame(con, 
                f"SELECT * FROM pipelines {where} ORDER BY created_at, pipeline_id", params)

    def get_prediction(self, prediction_id: str, load_arrays: bool = False) -> dict | None:
        """Retrieve a prediction (optionally with its y_true/y_pred/... arrays), or None."""
        with self._lock, self._read() as con:
            rows = con.execute(
                f"SELECT {_PREDICTION_SELECT}, array_file, array_row FROM predictions "
                "WHERE prediction_id = ?", [prediction_id]).fetchall()
            columns = [d[0] for d in con.description]
        if not rows:
            return None
        record = decode_json_columns("predictions", dict(zip(columns, rows[0])))
        file_name, row = record.pop("array_file"), record.pop("array_row")
        if load_arrays:
            arrays = (self.array_store.load_at(prediction_id, record["dataset_name"], file_name, row)
                      if record["has_arrays"] else None)
            for key in _ARRAY_KEYS:
                record[key] = None if arrays is None else arrays[key]
        return record

    @staticmethod
    def _prediction_where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for name, value in filters.items():
            check_column(name, PREDICTION_FILTERS, "prediction filter")
            if value is None:
                continue
            clauses.append(f"{name} = ?")
            params.append(value)
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params

    def query_predictions(
        self, dataset_name: str | None = None,
        model_class: str | None = None, partition: str | None = None,
        fold_id: str | None = None, branch_id: int | None = None,
        pipeline_id: str | None = None, run_id: str | None = None,
        limit: int | None = None, offset: int = 0,
        **filters: Any,
    ) -> pl.DataFrame:
        """Query predictions with flexible filtering (AND semantics), in creation order.

        Extra keyword filters: model_name, chain_id, task_type, metric.
        """
        _check_page(limit, offset)
        all_filters = dict(
            dataset_name=dataset_name, model_class=model_class, partition=partition,
            fold_id=fold_id, branch_id=branch_id, pipeline_id=pipeline_id, run_id=run_id,
        )
        all_filters.update(filters)
        where, params = self._prediction_where(all_filters)
        sql = f"SELECT {_PREDICTION_SELECT} FROM predictions {where} ORDER BY created_at, prediction_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        sql += " OFFSET ?"
        params.append(offset)
        with self._lock, self._read() as con:
            return _frame(con, sql, params)

    def top_predictions(
        self, n: int, metric: str = "val_score", ascending: bool | None = None,
        partition: str | None = "val", dataset_name: str | None = None,
        group_by: str | None = None, fold_id: str | None = None, run_id: str | None = None,
    ) -> pl.DataFrame:
        """Return the top-``n`` predictions ranked by a score column (top ``n`` per group).

        Args:
            n: rows to return (per group with ``group_by``).
            metric: the column ranked on (``val_score``, ``test_score``, ``train_score``, ...).
            ascending: sort direction; ``None`` (default) follows each row's ``metric``
                (rmse/mae ascending, r2/accuracy/balanced_accuracy/f1 descending, see
                :mod:`n4a_store.ranking`). Other columns default to ascending.
            partition, dataset_name, fold_id, run_id: filters (``None``: any). The best
                *model* of a dataset is ``top_predictions(1, dataset_name=ds,
                fold_id="avg")``: the pooled out-of-fold validation prediction.
            group_by: rank within each group of this column and keep its top ``n`` rows;
                groups come best first, rows best first within a group.

        NULL scores (including ones given as NaN or inf) always rank last; ties go to the
        smaller pipeline name, then prediction id.

        Raises:
            InvalidInputError: unknown column, or (``ascending=None``) a ranking whose rows
                mix metrics of opposite directions (e.g. rmse and accuracy) or of unknown
                direction.
        """
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
        column = check_column(metric, RANKABLE_COLUMNS, "ranking metric")
        group = None if group_by is None else check_column(group_by, GROUPABLE_COLUMNS,
                                                           "group_by column")
        where, params = self._prediction_where({"partition": partition, "dataset_name": dataset_name,
                                                "fold_id": fold_id, "run_id": run_id})
        columns = ", ".join(PREDICTION_COLUMNS)
        with self._lock, self._read() as con:
            if ascending is None and column in ranking.SCORE_COLUMNS:
                key = self._ranking_key(con, column, group, where, params)
            else:
                key = column if ascending in (None, True) else f"-{column}"
            partition_by = f"PARTITION BY p.{group} " if group else ""
            # p.key: the score signed so that smaller is better; ties by pipeline name, then id
            sql = (f"SELECT {columns} FROM ("
                   f"SELECT p.*, row_number() OVER ({partition_by}ORDER BY p.k NULLS LAST, "
                   f"p.pipeline_name NULLS LAST, p.prediction_id) AS rank_in_group, "
                   f"min(p.k) OVER ({partition_by.strip()}) AS group_best FROM ("
                   f"SELECT {columns}, {key} AS k, (SELECT pl.name FROM pipelines pl "
                   f"WHERE pl.pipeline_id = predictions.pipeline_id) AS pipeline_name "
                   f"FROM predictions {where}) p) ranked WHERE rank_in_group <= ? "
                   f"ORDER BY group_best NULLS LAST, "
                   f"{f'{group} NULLS LAST, ' if group else ''}rank_in_group")
            return _frame(con, sql, [*params, int(n)])

    @staticmethod
    def _ranking_key(con: "duckdb.DuckDBPyConnection", column: str, group: str | None,
                     where: str, params: list[Any]) -> str:
        """SQL for ``column`` signed so that ascending order is best first, per the rows' metrics.

        Each ranking (each group with ``group_by``) must hold metrics of one direction; groups of
        opposite directions are each ranked their own way (a CASE on the metric name).
        """
        select = f"{group}, metric" if group else "NULL, metric"
        pairs = con.execute(f"SELECT DISTINCT {select} FROM predictions {where}", params).fetchall()
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

    def get_pipeline_log(self, pipeline_id: str) -> pl.DataFrame:
        """Retrieve all log entries for a pipeline, in order."""
        with self._lock, self._read() as con:
            return _frame(con, 
                "SELECT * FROM logs WHERE pipeline_id = ? ORDER BY created_at, step_idx",
                [pipeline_id])

    def get_run_log_summary(self, run_id: str) -> pl.DataFrame:
        """Aggregate log entries across all pipelines of a run, per step and operator."""
        with self._lock, self._read() as con:
            return _frame(con, 
                """
                SELECT l.step_idx, l.operator_class,
                       count(*) AS n_events,
                       count(DISTINCT l.pipeline_id) AS n_pipelines,
                       sum(l.duration_ms) AS total_duration_ms,
                       avg(l.duration_ms) AS mean_duration_ms,
                       max(l.duration_ms) AS max_duration_ms,
                       count(*) FILTER (WHERE l.level = 'warning') AS n_warnings,
                       count(*) FILTER (WHERE l.level IN ('error', 'critical')) AS n_errors
                FROM logs l JOIN pipelines p USING (pipeline_id)
                WHERE p.run_id = ?
                GROUP BY l.step_idx, l.operator_class
                ORDER BY l.step_idx NULLS LAST, l.operator_class
                """, [run_id])

    # -- exports and replay (implemented in n4a_store.chains / bundles / exports) ---------
    def replay_chain(
        self, chain_id: str, X: np.ndarray, wavelengths: np.ndarray | None = None, **kwargs: Any,
    ) -> np.ndarray:
        """Replay a stored chain on new data (see :func:`n4a_store.chains.replay.replay_chain`)."""
        from .chains.replay import replay_chain

        return replay_chain(self, chain_id, X, wavelengths, **kwargs)

    def export_chain(self, chain_id: str, output_path: Path, format: str = "n4a", *,
                     key: str | bytes | None = None) -> Path:
        """Export a chain as a standalone .n4a bundle (signed if a key is set) or .n4a.py script."""
        from .bundles.export import export_chain

        return export_chain(self, chain_id, output_path, format, key=key)

    def import_bundle(self, bundle_path: Path, *, expected_sha256: str | None = None,
                      key: str | bytes | None = None) -> str:
        """Import a .n4a bundle into this workspace as a chain; return the chain id."""
        from .bundles.importer import import_bundle

        return import_bundle(self, bundle_path, expected_sha256=expected_sha256, key=key)

    def export_pipeline_config(self, pipeline_id: str, output_path: Path) -> Path:
        """Export a pipeline's expanded configuration as JSON."""
        from .exports import export_pipeline_config

        return export_pipeline_config(self, pipeline_id, output_path)

    def export_run(self, run_id: str, output_path: Path) -> Path:
        """Export full run metadata (run + pipelines + chains) as YAML."""
        from .exports import export_run

        return export_run(self, run_id, output_path)

    def export_predictions_parquet(self, output_path: Path, **filters: Any) -> Path:
        """Export prediction records to a Parquet file (filters as in query_predictions)."""
        from .exports import export_predictions_parquet

        return export_predictions_parquet(self, output_path, **filters)

    # -- deletion and cleanup ---------------------------------------------------------------
    def _collect_dead_artifacts(self, con: "duckdb.DuckDBPyConnection") -> list[tuple[str, str]]:
        """Delete catalog rows of artifacts with no claims left and no chain naming them."""
        candidates = con.execute(
            "SELECT artifact_id, format FROM artifacts WHERE ref_count <= 0").fetchall()
        if not candidates:
            return []
        # ids are 64 hex digits, so containment in the chain's JSON text is exact
        still_used = {r[0] for r in con.execute(
            "SELECT c.id FROM (SELECT unnest(?) AS id) c WHERE EXISTS (SELECT 1 FROM chains h "
            "WHERE contains(h.fold_artifacts, c.id) OR contains(h.shared_artifacts, c.id) "
            "OR contains(h.steps, c.id))", [[a for a, _ in candidates]]).fetchall()}
        dead = [(a, f) for a, f in candidates if a not in still_used and a not in self._pending.artifacts]
        if dead:
            con.execute("DELETE FROM artifacts WHERE list_contains(?, artifact_id)", [[a for a, _ in dead]])
        return dead

    def _remove_artifact_files(self, dead: list[tuple[str, str]]) -> None:
        for artifact_id, fmt in dead:
            self._artifact_files.remove(artifact_id, fmt)

    def delete_run(self, run_id: str, delete_artifacts: bool = True) -> int:
        """Delete a run and cascade to all descendant data.

        Releases the artifact claims of the run's chains; with
        ``delete_artifacts`` the artifacts left unclaimed are removed too (rows
        and files). Returns the total number of database rows deleted.
        """
        with self._lock:
            self._check_open()

            def delete(con: "duckdb.DuckDBPyConnection") -> tuple[int, list[str], list[tuple[str, str]]]:
                if first_row(con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id])) is None:
                    return 0, [], []
                pipeline_ids = [r[0] for r in con.execute(
                    "SELECT pipeline_id FROM pipelines WHERE run_id = ?", [run_id]).fetchall()]
                count, ids = 0, []
                if pipeline_ids:
                    count, ids = self._delete_pipeline_rows(con, pipeline_ids, keep_logs=False)
                count += first_row(con.execute("DELETE FROM pipelines WHERE run_id = ?", [run_id]))[0]
                count += first_row(con.execute("DELETE FROM runs WHERE run_id = ?", [run_id]))[0]
                dead = self._collect_dead_artifacts(con) if delete_artifacts else []
                for pid in pipeline_ids:
                    self._pipelines.pop(pid, None)
                return count + len(dead), ids, dead

            count, ids, _ = self._commit(delete, after=lambda r: self._remove_artifact_files(r[2]))
        self.array_store.delete(ids)
        return count

    def delete_prediction(self, prediction_id: str) -> bool:
        """Delete a single prediction and its arrays; False if it did not exist."""
        with self._lock:
            self._check_open()
            deleted = self._commit(lambda con: first_row(con.execute(
                "DELETE FROM predictions WHERE prediction_id = ?", [prediction_id]))[0])
        if deleted:
            self.array_store.delete([prediction_id])
        return bool(deleted)

    def gc_artifacts(self) -> int:
        """Garbage-collect unreferenced artifacts (ref_count == 0); return files removed."""
        with self._lock:
            self._check_open()
            dead = self._commit(self._collect_dead_artifacts, after=self._remove_artifact_files)
        return len(dead)

    def artifact_stats(self, artifact_ids: list[str] | None = None) -> dict[str, int]:
        """Artifact counts and bytes, in total and for unreferenced (collectable) artifacts.

        With ``artifact_ids``, only those artifacts are counted.
        """
        where, params = ("WHERE list_contains(?, artifact_id)", [list(artifact_ids)]) \
            if artifact_ids is not None else ("", [])
        with self._lock, self._read() as con:
            row = first_row(con.execute(
                "SELECT count(*), coalesce(sum(size_bytes), 0), "
                "count(*) FILTER (WHERE ref_count <= 0), "
                f"coalesce(sum(size_bytes) FILTER (WHERE ref_count <= 0), 0) FROM artifacts {where}",
                params))
        return {"count": int(row[0]), "bytes": int(row[1]),
                "unreferenced_count": int(row[2]), "unreferenced_bytes": int(row[3])}

    def compact_arrays(self, dataset_name: str | None = None) -> int:
        """Compact array files, first tombstoning rows that have no catalog record.

        Orphan rows come from a process that died between writing its array file
        and committing its transaction. Returns the rows removed.
        """
        with self._lock:
            self._check_open()
            self._commit()
            datasets = [dataset_name] if dataset_name is not None else self.array_store.list_datasets()
            for dataset in datasets:
                ids = self.array_store.all_ids(dataset)
                if not ids:
                    continue
                with self._catalog.reading() as con:
                    known = {r[0] for r in con.execute(
                        "SELECT prediction_id FROM predictions WHERE dataset_name = ?",
                        [dataset]).fetchall()}
                orphans = [i for i in ids if i not in known]
                if orphans:
                    self.array_store.delete(orphans)
        return self.array_store.compact(dataset_name)

    def backup(self, destination: Path | str) -> Path:
        """Copy the workspace to ``destination`` (a new or empty directory), consistently.

        Buffered writes are committed first; the catalog is then held under the
        shared lock for the whole copy, so no writer commits meanwhile (readers
        go on). Returns the destination path.
        """
        from .maintenance import copy_workspace

        target = Path(destination).expanduser().resolve()
        if target.exists() and any(target.iterdir()):
            raise InvalidInputError(f"backup destination {str(target)!r} is not empty")
        if target == self.workspace_path or self.workspace_path in target.parents:
            raise InvalidInputError("backup destination must be outside the workspace")
        with self._lock:
            self._check_open()
            self._commit()
            with self._catalog.reading():
                copy_workspace(self.workspace_path, target)
        return target

    def vacuum(self) -> None:
        """Reclaim unused space in the DuckDB database file (checkpoint + vacuum)."""
        with self._lock:
            self._check_open()
            self._commit()
            with self._catalog.exclusive() as con:
                con.execute("VACUUM")
                con.execute("CHECKPOINT")

    def close(self) -> None:
        """Commit buffered writes and release the DuckDB connection and lock."""
        with self._lock:
            if self._closed:
                return
            try:
                self._commit()
            finally:
                self._closed = True
                self._catalog.close()
                _OPEN_STORES.discard(self)


class _Batch:
    """Context manager returned by :meth:`WorkspaceStore.batch`."""

    def __init__(self, store: WorkspaceStore) -> None:
        self.store = store

    def __enter__(self) -> WorkspaceStore:
        with self.store._lock:
            self.store._check_open()
            self.store._batch_depth += 1
        return self.store

    def __exit__(self, *exc: Any) -> None:
        with self.store._lock:
            self.store._batch_depth -= 1
            if self.store._batch_depth == 0 and not self.store._closed:
                self.store._commit()


@atexit.register
def _close_open_stores() -> None:
    """Commit what open stores still buffer when the interpreter exits."""
    for store in list(_OPEN_STORES):
        try:
            store.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
