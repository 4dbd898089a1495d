"""WorkspaceStore: the facade over a workspace's catalog, arrays and artifacts.

Concurrency model (see docs/architecture.md):

* Several processes (and, on PostgreSQL, several hosts) may open one store. The
  catalog backend arbitrates: DuckDB with a waitable file lock, PostgreSQL with
  transactions, row locks and an advisory lock between writers and gc.
* Run lifecycle calls commit at once. A pipeline's rows (its own row, chains,
  predictions, arrays, logs) are buffered per pipeline and committed together,
  in one transaction, by its ``complete_pipeline`` (or, failed, by
  ``fail_pipeline``): another process sees all of a pipeline or nothing of it,
  and nothing done to one pipeline commits or loses another's rows. Artifact
  claims are the references committed chains hold, counted at that commit.
* The facade only validates (:mod:`.writes`), buffers and commits
  (:mod:`.commit`) and delegates maintenance (:mod:`.maintenance`); all SQL lives
  in the catalog backend.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import polars as pl

from ..arrays.codec import ARRAY_KEYS
from ..artifacts.codec import content_hash, deserialize, serialize
from ..catalog.base import Session
from ..catalog.columns import (
    PREDICTION_FILTERS,
    RANKABLE_COLUMNS,
    check_column,
    check_id,
    check_ids,
    check_row,
    decode_json_columns,
    filter_value,
    text_or_none,
)
from ..catalog.pending import PendingArtifact, PendingWrites
from ..errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    InvalidInputError,
    MissingParentError,
)
from . import maintenance, writes
from .arrays_view import StoreArrays
from .commit import REFS_KEY, UnitOfWork

if TYPE_CHECKING:
    from ..config import StoreConfig
    from ..integrity import VerifyReport

_OPEN_STORES: "weakref.WeakSet[WorkspaceStore]" = weakref.WeakSet()


class WorkspaceStore:
    """Database-backed workspace storage.

    Central storage facade for all workspace data: runs, pipelines, chains,
    predictions, artifacts, and structured execution logs, over three backends:
    a catalog (``store.duckdb`` or PostgreSQL), prediction arrays and artifacts.
    """

    def __init__(
        self,
        workspace_path: "Path | str | StoreConfig",
        *,
        lock_timeout: float = 60.0,
        idle_release: float = 0.2,
    ) -> None:
        """Open (creating if needed) the store at ``workspace_path``.

        Args:
            workspace_path: A workspace directory, a store URI (``file://``,
                ``postgresql://…?file_root=…``) or a :class:`~n4a_store.config.StoreConfig`.
            lock_timeout: Longest wait, in seconds, for another process holding the
                catalog before :class:`WorkspaceLockTimeout` is raised.
            idle_release: Seconds of inactivity after which this process hands the
                DuckDB catalog back so other processes can use it.
        """
        from ..config import parse_to_config

        if not isinstance(lock_timeout, (int, float)) or lock_timeout <= 0:
            raise InvalidInputError(f"lock_timeout must be a positive number, got {lock_timeout!r}")
        self.config = parse_to_config(workspace_path)
        backends = self.config.open_backends(lock_timeout=float(lock_timeout),
                                             idle_release=idle_release)
        self.workspace_path = backends.file_root
        self.array_store = StoreArrays(backends.arrays, self)
        self._catalog = backends.catalog
        self._artifact_files = backends.artifacts
        self._uow = UnitOfWork(backends.catalog, backends.arrays, backends.artifacts)
        self._lock = threading.RLock()
        self._closed = False
        try:
            self._catalog.open_schema()
        except BaseException:
            self._catalog.close()
            raise
        _OPEN_STORES.add(self)

    @property
    def _pending(self) -> Any:
        """Rows of finished pipelines waiting for the end of a ``batch()``."""
        return self._uow.ready

    @property
    def uri(self) -> str:
        """Where the store lives, without any password."""
        return self.config.display_uri()

    @property
    def backend(self) -> str:
        """The catalog backend's name: ``duckdb`` or ``postgresql``."""
        return self._catalog.kind

    def __enter__(self) -> "WorkspaceStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WorkspaceStore({self.uri!r})"

    # -- transaction plumbing -----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError(f"workspace store {self.uri!r} is closed")

    def flush(self) -> None:
        """Commit everything this store buffers now, in one transaction.

        An explicit request: pipelines still in flight are committed as they are
        (status ``running``), for a caller that hands a chain to another process
        before the pipeline completes (the Dagster IO managers). Nothing else
        commits a pipeline in flight: reads, other pipelines' calls, ``close()``
        and the exit hook leave it buffered, so without ``flush()`` a pipeline
        becomes visible all at once at its ``complete_pipeline``. Artifacts saved
        but not named by a committed chain are stored without claims
        (``gc_artifacts`` may collect them until a chain names them).
        """
        with self._lock:
            self._check_open()
            self._uow.commit_all()

    def _read(self) -> Any:
        """Commit finished pipelines a batch deferred, then return a read session context."""
        self._check_open()
        if not self._uow.ready.is_empty():
            self._uow.commit_ready()
        return self._catalog.reading()

    def batch(self) -> "_Batch":
        """Group the commits of many pipelines into one transaction.

        Inside ``with store.batch():``, ``complete_pipeline`` does not commit;
        the pipelines completed in the block are committed together when it exits
        (or earlier, by a read, ``flush()`` or when they buffer more than 20,000
        rows). Each pipeline's rows still commit atomically; pipelines still in
        flight when the block exits stay buffered. Use it for bulk ingest; leave it out when other processes
        should see each pipeline as soon as it completes.
        """
        return _Batch(self)

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
        row = writes.run_row(name, config, datasets, metadata)
        with self._lock:
            self._check_open()
            self._uow.commit(lambda s: self._catalog.insert_run(s, row))
            self._uow.runs.add(row["run_id"])
        return row["run_id"]

    def _finish_run(self, run_id: str, status: str, summary: Any, error: str | None) -> None:
        from ..catalog.columns import to_json

        summary_json = to_json(summary, "summary") if summary is not None else None
        with self._lock:
            self._check_open()
            self._uow.commit(lambda s: self._catalog.finish_run(
                s, run_id, status, summary_json, error, writes.now()))

    def complete_run(self, run_id: str, summary: dict) -> None:
        """Mark a run as successfully completed (commits this process's buffered writes too)."""
        self._finish_run(run_id, "completed", summary, None)

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run as failed with an error message."""
        self._finish_run(run_id, "failed", None, text_or_none(str(error), "error"))

    # -- pipeline lifecycle -------------------------------------------------------------
    def begin_pipeline(
        self, run_id: str, name: str, expanded_config: Any,
        generator_choices: list, dataset_name: str, dataset_hash: str,
    ) -> str:
        """Register a new pipeline execution under a run and return its id.

        The pipeline's row is committed with the rest of it, by ``complete_pipeline``
        or ``fail_pipeline``; until then no other process sees it.
        """
        _parent_id(run_id, "run_id")
        row = writes.pipeline_row(run_id, name, expanded_config, generator_choices, dataset_name,
                                  dataset_hash)
        with self._lock:
            self._check_open()
            self._uow.require_run(run_id)
            self._uow.buffer(row["pipeline_id"]).pipelines[row["pipeline_id"]] = row
            self._uow.pipelines[row["pipeline_id"]] = (run_id, dataset_name)
        return row["pipeline_id"]

    def complete_pipeline(
        self, pipeline_id: str, best_val: float, best_test: float,
        metric: str, duration_ms: int,
    ) -> None:
        """Mark a pipeline as completed with scores; commits its buffered rows in the same transaction."""
        done = writes.completion(best_val, best_test, metric, duration_ms)
        with self._lock:
            self._check_open()
            self._uow.pipeline_owner(_parent_id(pipeline_id, "pipeline_id"))
            uow = self._uow
            buf = uow.open.pop(pipeline_id, None) or PendingWrites()
            begun = buf.pipelines.get(pipeline_id)
            before = dict(begun) if begun is not None else None
            if begun is not None:
                begun.update(done, status="completed", completed_at=writes.now())
            else:
                buf.completions[pipeline_id] = {"pipeline_id": pipeline_id, **done,
                                                "completed_at": writes.now()}
            if uow.batch_depth:
                uow.ready.merge(buf)
                uow.maybe_autoflush()
                return
            try:
                uow.commit(rows=buf)
            except BaseException:
                if begun is not None and before is not None:
                    begun.clear()
                    begun.update(before)
                buf.completions.pop(pipeline_id, None)
                uow.open[pipeline_id] = buf
                raise
            if pipeline_id in uow.lost:
                uow.lost.discard(pipeline_id)
                raise MissingParentError("pipeline", pipeline_id)

    def fail_pipeline(self, pipeline_id: str, error: str) -> None:
        """Mark a pipeline as failed, rolling back its chains, predictions and arrays.

        Artifact references held by its chains are released; logs are kept.
        """
        with self._lock:
            self._check_open()
            self._uow.pipeline_owner(_parent_id(pipeline_id, "pipeline_id"))
            maintenance.fail_pipeline(self._uow, pipeline_id, text_or_none(str(error), "error") or "")

    def delete_pipeline(self, pipeline_id: str, delete_artifacts: bool = True) -> int:
        """Delete one pipeline and its chains, predictions, arrays and logs; return rows deleted.

        Deleting is idempotent, as ``delete_run`` and ``delete_prediction`` are: a pipeline
        that does not exist (another process deleted it first) deletes nothing and returns 0.
        """
        with self._lock:
            self._check_open()
            try:
                self._uow.pipeline_owner(_parent_id(pipeline_id, "pipeline_id"))
            except MissingParentError:
                return 0
            return maintenance.delete_pipeline(self._uow, pipeline_id, delete_artifacts)

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
        (``KeyError`` otherwise). The chain is committed with its pipeline, and
        then holds one claim per reference (see :func:`~.writes.chain_artifact_refs`).
        """
        row, referenced = writes.chain_row(pipeline_id, steps, model_step_idx, model_class,
                                           preprocessings, fold_strategy, fold_artifacts,
                                           shared_artifacts, branch_path, source_index)
        with self._lock:
            self._check_open()
            self._uow.pipeline_owner(_parent_id(pipeline_id, "pipeline_id"))
            missing = self._uow.unknown_artifacts(referenced)
            if missing:
                raise MissingParentError("artifact", missing[0])
            row[REFS_KEY] = writes.chain_artifact_refs(decode_json_columns("chains", dict(row)))
            self._uow.buffer(pipeline_id).chains.append(row)
            self._uow.chains.add(row["chain_id"])
            self._uow.maybe_autoflush(pipeline_id)
        return row["chain_id"]

    def get_chain(self, chain_id: str) -> dict | None:
        """Retrieve a chain by its identifier (JSON fields decoded), or None."""
        check_id(chain_id, "chain_id")
        return self._decoded_row("chains", "chain_id", chain_id)

    def get_chains_for_pipeline(self, pipeline_id: str) -> pl.DataFrame:
        """List all chains belonging to a pipeline (those of its buffer too, in this process)."""
        check_id(pipeline_id, "pipeline_id")
        with self._lock:
            with self._read() as s:
                frame = self._catalog.chains_for_pipeline(s, pipeline_id)
            buf = self._uow.open.get(pipeline_id)
            if buf is None or not buf.chains:
                return frame
            mine = pl.from_arrow(buf.table("chains"))
            assert isinstance(mine, pl.DataFrame)
            return pl.concat([frame, mine.select(frame.columns)], how="vertical_relaxed")

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
        """Store a prediction record (scores in the catalog, optional arrays in the array backend).

        Non-finite scores (NaN, +/-inf) are stored as NULL: they never rank.
        Arrays, when given, must include ``y_true`` and ``y_pred`` of equal
        length; they are validated before anything is buffered.
        """
        arrays = {"y_true": y_true, "y_pred": y_pred, "y_proba": y_proba,
                  "sample_indices": sample_indices, "weights": weights}
        row, record = writes.prediction_row(
            pipeline_id, chain_id, dataset_name, model_name, model_class, fold_id, partition,
            val_score, test_score, train_score, metric, task_type, n_samples, n_features, scores,
            best_params, branch_id, branch_name, exclusion_count, exclusion_rate, preprocessings,
            arrays)
        with self._lock:
            self._check_open()
            # a pipeline this store begun or looked up was checked then: no id check again
            owner = self._uow.pipelines.get(pipeline_id) if type(pipeline_id) is str else None
            run_id, _ = owner or self._uow.pipeline_owner(_parent_id(pipeline_id, "pipeline_id"))
            if chain_id is not None:
                self._uow.require_chain(_parent_id(chain_id, "chain_id"))
            row["run_id"] = run_id
            buf = self._uow.buffer(pipeline_id)
            buf.predictions.append(row)
            if record is not None:
                buf.arrays.append(record)
            self._uow.maybe_autoflush(pipeline_id)
        return row["prediction_id"]

    # -- artifacts ----------------------------------------------------------------------
    def save_artifact(
        self, obj: Any, operator_class: str,
        artifact_type: str, format: str = "joblib",
    ) -> str:
        """Persist a binary artifact with content-addressed deduplication.

        Returns the SHA-256 of the serialised bytes; saving identical content
        again returns the same id. Claims (``ref_count``) are the references
        committed chains hold: an artifact saved but not yet named by one holds
        none. The process keeps its bytes until a chain of its own names it, and
        stores it with that chain's commit (or at ``flush()``/``close()``,
        unclaimed), so gc in between can never lose it.
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
        check_row("artifacts", {"operator_class": operator_class, "artifact_type": artifact_type,
                                "format": format})
        artifact_id = content_hash(data)
        relative = self._artifact_files.relative_path(artifact_id, format)
        with self._lock:
            self._check_open()
            saved = self._uow.saved
            item = saved.get(artifact_id)
            if item is not None:
                item.saves += 1
            else:
                saved[artifact_id] = PendingArtifact(
                    row=writes.artifact_row(artifact_id, relative, operator_class, artifact_type,
                                            format, len(data)),
                    data=data)
        return artifact_id

    def get_artifact(self, artifact_id: str) -> dict | None:
        """The catalog row of an artifact, or None.

        An artifact saved by this process and not stored yet is shown as it will be
        stored, with the claims it holds so far: none.
        """
        check_id(artifact_id, "artifact_id")
        with self._lock:
            with self._read() as s:
                row = self._catalog.get_row(s, "artifacts", "artifact_id", artifact_id)
            item = self._uow.saved.get(artifact_id)
            if row is None and item is not None:
                return {**item.row, "ref_count": 0}
            return row

    def _artifact_format(self, artifact_id: str) -> str:
        item = self._uow.saved.get(artifact_id)
        if item is not None:
            return item.row["format"]
        with self._catalog.reading() as s:
            fmt = self._catalog.artifact_formats(s, [artifact_id]).get(artifact_id)
        if fmt is None:
            raise ArtifactNotFoundError(f"artifact {artifact_id!r} is not in the workspace catalog")
        return fmt

    def load_artifact(self, artifact_id: str) -> Any:
        """Load a binary artifact, verifying its SHA-256 before unpickling."""
        check_id(artifact_id, "artifact_id")
        with self._lock:
            self._check_open()
            item = self._uow.saved.get(artifact_id)
            if item is not None and not item.stored:  # once stored, the file is what counts
                return deserialize(item.data, item.row["format"])
            fmt = self._artifact_format(artifact_id)
        return self._artifact_files.load(artifact_id, fmt)

    def read_artifact_bytes(self, artifact_id: str) -> bytes:
        """An artifact's serialised bytes, verified against its id."""
        check_id(artifact_id, "artifact_id")
        with self._lock:
            self._check_open()
            item = self._uow.saved.get(artifact_id)
            if item is not None and not item.stored:
                return item.data
            fmt = self._artifact_format(artifact_id)
        return self._artifact_files.read_verified(artifact_id, fmt)

    def verify_artifacts(self, artifact_ids: list[str]) -> dict[str, str]:
        """Check that artifacts are cataloged, stored and hash to their ids.

        Returns ``{artifact_id: problem}`` for the bad ones (empty when all are intact).
        """
        check_ids(artifact_ids, "artifact_ids")
        ids = sorted(set(artifact_ids))
        with self._lock, self._read() as s:
            formats = self._catalog.artifact_formats(s, ids)
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
        check_id(artifact_id, "artifact_id")
        with self._lock:
            self._check_open()
            item = self._uow.saved.get(artifact_id)
            if item is not None and not item.stored:
                self._uow.commit_ready(unnamed=True)
            fmt = self._artifact_format(artifact_id)
        return self.workspace_path / self._artifact_files.relative_path(artifact_id, fmt)

    # -- logs ---------------------------------------------------------------------------
    def log_step(
        self, pipeline_id: str, step_idx: int, operator_class: str,
        event: str, duration_ms: int | None = None,
        message: str | None = None, details: dict | None = None,
        level: str = "info",
    ) -> None:
        """Record a structured log entry for a pipeline step."""
        row = writes.log_row(pipeline_id, step_idx, operator_class, event, duration_ms, message,
                             details, level)
        with self._lock:
            self._check_open()
            self._uow.pipeline_owner(_parent_id(pipeline_id, "pipeline_id"))
            self._uow.buffer(pipeline_id).logs.append(row)
            self._uow.maybe_autoflush(pipeline_id)

    # -- queries ------------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict | None:
        """Retrieve a single run record (JSON fields decoded), or None."""
        check_id(run_id, "run_id")
        with self._lock, self._read() as s:
            row = self._catalog.get_row(s, "runs", "run_id", run_id)
        return decode_json_columns("runs", row) if row else None

    def list_runs(
        self, status: str | None = None, dataset: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> pl.DataFrame:
        """List runs, newest first, with optional filtering and pagination."""
        text_or_none(status, "status")
        text_or_none(dataset, "dataset")
        writes.check_page(limit, offset)
        with self._lock, self._read() as s:
            return self._catalog.list_runs(s, status, dataset, limit, offset)

    def get_pipeline(self, pipeline_id: str) -> dict | None:
        """Retrieve a single pipeline record (JSON fields decoded), or None."""
        check_id(pipeline_id, "pipeline_id")
        return self._decoded_row("pipelines", "pipeline_id", pipeline_id)

    def _decoded_row(self, table: str, key: str, value: str) -> dict | None:
        """One row by id, this process's buffered rows first (read-your-writes), JSON decoded."""
        with self._lock:
            row = self._uow.buffered_row(table, key, value)
            if row is None:
                with self._read() as s:
                    row = self._catalog.get_row(s, table, key, value)
        return decode_json_columns(table, row) if row else None

    def list_pipelines(
        self, run_id: str | None = None, dataset_name: str | None = None,
    ) -> pl.DataFrame:
        """List pipelines in creation order with optional filtering."""
        if run_id is not None:
            check_id(run_id, "run_id")
        text_or_none(dataset_name, "dataset_name")
        with self._lock, self._read() as s:
            return self._catalog.list_pipelines(s, run_id, dataset_name)

    def get_prediction(self, prediction_id: str, load_arrays: bool = False) -> dict | None:
        """Retrieve a prediction (optionally with its y_true/y_pred/... arrays), or None.

        Arrays saved separately through ``store.array_store.save_batch`` (the seed's
        two-step path) are found too.
        """
        check_id(prediction_id, "prediction_id")
        if not isinstance(load_arrays, bool):
            raise InvalidInputError(f"load_arrays must be True or False, got {load_arrays!r}")
        buffered: dict | None = None
        with self._lock:
            row = self._uow.buffered_row("predictions", "prediction_id", prediction_id)
            if row is not None:
                buffered = self._uow.buffered_row("arrays", "prediction_id", prediction_id) or {}
                ref = None
            else:
                with self._read() as s:
                    row = self._catalog.get_row(s, "predictions", "prediction_id", prediction_id,
                                                with_array_ref=load_arrays)
                if row is None:
                    return None
                ref = (row["dataset_name"], row.pop("array_ref", None))
        if buffered is not None:
            record = decode_json_columns("predictions", {k: v for k, v in row.items()
                                                          if not k.startswith("_") and k != "array_ref"})
            if load_arrays:
                for key in ARRAY_KEYS:
                    record[key] = buffered.get(key)
            return record
        record = decode_json_columns("predictions", row)
        if load_arrays:
            dataset, array_ref = ref
            arrays = self.array_store.load_ref(prediction_id, dataset, array_ref, arrays_only=True)
            for key in ARRAY_KEYS:
                record[key] = None if arrays is None else arrays[key]
        return record

    def load_arrays(self, prediction_ids: list[str]) -> dict[str, dict]:
        """Arrays of many predictions at once: ``{prediction_id: record}`` for those that have them."""
        check_ids(prediction_ids, "prediction_ids")
        ids = list(dict.fromkeys(prediction_ids))
        with self._lock, self._read() as s:
            refs = self._catalog.array_refs(s, ids)
        by_dataset: dict[str, list[str]] = {}
        for pid in ids:
            if pid in refs:
                by_dataset.setdefault(refs[pid][0], []).append(pid)
        out: dict[str, dict] = {}
        for dataset, members in by_dataset.items():
            for record in self.array_store.load_batch(members, dataset):
                out[record["prediction_id"]] = record
        return out

    def lazy_arrays(self, predictions: "pl.DataFrame | list[str]") -> dict[str, Any]:
        """``{prediction_id: LazyArrays}`` for predictions in the catalog; nothing is read yet.

        ``predictions`` is a list of ids or a frame with a ``prediction_id`` column (as
        returned by :meth:`query_predictions`). Read one with ``lazy[pid]["y_pred"]`` or
        all at once with :func:`n4a_store.arrays.lazy.materialize_all`.
        """
        from ..arrays.lazy import LazyArrays

        if isinstance(predictions, pl.DataFrame):
            ids = predictions.get_column("prediction_id").to_list()
        else:
            ids = list(predictions)
        check_ids(ids, "predictions")
        ids = list(dict.fromkeys(ids))
        with self._lock, self._read() as s:
            refs = self._catalog.array_refs(s, ids)
        return {pid: LazyArrays(self.array_store, pid, refs[pid][0], refs[pid][1])
                for pid in ids if pid in refs}

    def array_stats(self) -> dict[str, dict[str, int]]:
        """Per dataset: array ``files``, ``rows`` and ``tombstoned`` rows awaiting compaction."""
        with self._lock:
            self._check_open()
            return self.array_store.stats()

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
        writes.check_page(limit, offset)
        all_filters = dict(
            dataset_name=dataset_name, model_class=model_class, partition=partition,
            fold_id=fold_id, branch_id=branch_id, pipeline_id=pipeline_id, run_id=run_id,
        )
        all_filters.update(filters)
        for name in all_filters:
            check_column(name, PREDICTION_FILTERS, "prediction filter")
        all_filters = {name: filter_value(name, value) for name, value in all_filters.items()}
        with self._lock, self._read() as s:
            return self._catalog.query_predictions(s, all_filters, limit, offset)

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
        filters = {"partition": partition, "dataset_name": dataset_name, "fold_id": fold_id,
                   "run_id": run_id}
        filters = {name: filter_value(name, value) for name, value in filters.items()}
        if ascending is not None and not isinstance(ascending, bool):
            raise InvalidInputError(f"ascending must be True, False or None, got {ascending!r}")
        with self._lock, self._read() as s:
            return self._catalog.top_predictions(s, int(n), column, ascending, filters, group_by)

    def get_pipeline_log(self, pipeline_id: str) -> pl.DataFrame:
        """Retrieve all log entries for a pipeline, in order."""
        check_id(pipeline_id, "pipeline_id")
        with self._lock, self._read() as s:
            return self._catalog.pipeline_log(s, pipeline_id)

    def get_run_log_summary(self, run_id: str) -> pl.DataFrame:
        """Aggregate log entries across all pipelines of a run, per step and operator."""
        check_id(run_id, "run_id")
        with self._lock, self._read() as s:
            return self._catalog.run_log_summary(s, run_id)

    # -- exports and replay (implemented in n4a_store.chains / bundles / exports) ---------
    def replay_chain(
        self, chain_id: str, X: np.ndarray, wavelengths: np.ndarray | None = None, **kwargs: Any,
    ) -> np.ndarray:
        """Replay a stored chain on new data (see :func:`n4a_store.chains.replay.replay_chain`)."""
        check_id(chain_id, "chain_id")
        from ..chains.replay import replay_chain

        return replay_chain(self, chain_id, X, wavelengths, **kwargs)

    def export_chain(self, chain_id: str, output_path: Path, format: str = "n4a", *,
                     key: str | bytes | None = None) -> Path:
        """Export a chain as a standalone .n4a bundle (signed if a key is set) or .n4a.py script."""
        check_id(chain_id, "chain_id")
        from ..bundles.export import export_chain

        return export_chain(self, chain_id, output_path, format, key=key)

    def import_bundle(self, bundle_path: Path, *, expected_sha256: str | None = None,
                      key: str | bytes | None = None) -> str:
        """Import a .n4a bundle into this workspace as a chain; return the chain id."""
        from ..bundles.importer import import_bundle

        return import_bundle(self, bundle_path, expected_sha256=expected_sha256, key=key)

    def export_pipeline_config(self, pipeline_id: str, output_path: Path) -> Path:
        """Export a pipeline's expanded configuration as JSON."""
        check_id(pipeline_id, "pipeline_id")
        from ..exports import export_pipeline_config

        return export_pipeline_config(self, pipeline_id, output_path)

    def export_run(self, run_id: str, output_path: Path) -> Path:
        """Export full run metadata (run + pipelines + chains) as YAML."""
        check_id(run_id, "run_id")
        from ..exports import export_run

        return export_run(self, run_id, output_path)

    def export_predictions_parquet(self, output_path: Path, **filters: Any) -> Path:
        """Export prediction records to a Parquet file (filters as in query_predictions)."""
        from ..exports import export_predictions_parquet

        return export_predictions_parquet(self, output_path, **filters)

    # -- deletion and cleanup ---------------------------------------------------------------
    def delete_run(self, run_id: str, delete_artifacts: bool = True) -> int:
        """Delete a run and cascade to all descendant data.

        Releases the artifact claims of the run's chains; with
        ``delete_artifacts`` the artifacts left unclaimed are removed too (rows
        and files). Returns the total number of database rows deleted.
        """
        check_id(run_id, "run_id")
        if not isinstance(delete_artifacts, bool):
            raise InvalidInputError(f"delete_artifacts must be True or False, got {delete_artifacts!r}")
        with self._lock:
            self._check_open()
            return maintenance.delete_run(self._uow, run_id, delete_artifacts)

    def delete_prediction(self, prediction_id: str) -> bool:
        """Delete a single prediction and its arrays; False if it did not exist."""
        check_id(prediction_id, "prediction_id")
        with self._lock:
            self._check_open()
            return maintenance.delete_prediction(self._uow, prediction_id)

    def gc_artifacts(self) -> int:
        """Garbage-collect unreferenced artifacts (ref_count == 0); return files removed."""
        with self._lock:
            self._check_open()
            return maintenance.gc_artifacts(self._uow)

    def artifact_stats(self, artifact_ids: list[str] | None = None) -> dict[str, int]:
        """Artifact counts and bytes, in total and for unreferenced (collectable) artifacts.

        With ``artifact_ids``, only those artifacts are counted.
        """
        if artifact_ids is not None:
            check_ids(artifact_ids, "artifact_ids")
        with self._lock, self._read() as s:
            return self._catalog.artifact_stats(s, None if artifact_ids is None else list(artifact_ids))

    def table_counts(self) -> dict[str, int]:
        """Row counts of the catalog's data tables."""
        with self._lock, self._read() as s:
            return self._catalog.table_counts(s)

    def compact_arrays(self, dataset_name: str | None = None) -> int:
        """Compact array files, first tombstoning rows that have no catalog record.

        Orphan rows come from a process that died between writing its array file
        and committing its transaction. Returns the rows removed.
        """
        if dataset_name is not None:
            from ..arrays.layout import dataset_dirname

            dataset_dirname(dataset_name)  # InvalidInputError for names no dataset can have
        with self._lock:
            self._check_open()
            return maintenance.compact_arrays(self._uow, dataset_name)

    def verify(self, repair: bool = False, *, grace: float = 300.0,
               progress: "Callable[[str, int, int], None] | None" = None) -> "VerifyReport":
        """Check the workspace's integrity; with ``repair``, fix what can be fixed first.

        Checks that every artifact file exists and hashes to its id, that each
        ``ref_count`` equals the references the chains hold, that every chain's
        artifacts are cataloged, that predictions recorded with arrays have them,
        and that there are no orphaned arrays, unreferenced artifact files or
        temporary files older than ``grace`` seconds (younger ones may belong to
        a write in flight). ``repair`` recounts claims, collects artifacts nothing
        claims or names, removes unreferenced and stray files, tombstones orphaned
        arrays and compacts; it never removes anything a chain or prediction still
        references. Returns a :class:`~n4a_store.integrity.VerifyReport` (after a
        repair: of the repaired workspace, with ``repaired`` counts).
        ``progress(phase, done, total)`` is called while artifacts are hashed.
        """
        from ..integrity import repair_store, verify_store

        if not isinstance(repair, bool):
            raise InvalidInputError(f"repair must be True or False, got {repair!r}")
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
            raise InvalidInputError(f"grace must be a non-negative number of seconds, got {grace!r}")
        with self._lock:
            self._check_open()
            if repair:
                return repair_store(self, grace=float(grace), progress=progress)
            return verify_store(self, grace=float(grace), progress=progress)

    def backup(self, destination: Path | str) -> Path:
        """Copy the workspace to ``destination`` (a new or empty directory), consistently.

        Buffered writes are committed first; the catalog is then held under the
        shared lock for the whole copy, so no writer commits meanwhile (readers
        go on). A PostgreSQL store is copied into a DuckDB workspace there (see
        :func:`n4a_store.transfer.export_store`). Returns the destination path.
        """
        from ..maintenance import copy_workspace

        target = Path(destination).expanduser().resolve()
        if target.exists() and any(target.iterdir()):
            raise InvalidInputError(f"backup destination {str(target)!r} is not empty")
        if target == self.workspace_path or self.workspace_path in target.parents:
            raise InvalidInputError("backup destination must be outside the workspace")
        with self._lock:
            self._check_open()
            self._uow.commit_ready(unnamed=True)
            if self.backend != "duckdb":
                from ..transfer import export_store

                export_store(self, str(target))
                return target
            with self._catalog.reading():
                copy_workspace(self.workspace_path, target)
        return target

    def vacuum(self) -> None:
        """Reclaim unused space in the catalog (DuckDB: VACUUM + CHECKPOINT; PostgreSQL: VACUUM)."""
        with self._lock:
            self._check_open()
            self._uow.commit_ready(unnamed=True)
            self._catalog.vacuum()

    def close(self) -> None:
        """Commit what :meth:`flush` commits, then release the catalog connection and lock.

        Pipelines begun here and still in flight are recorded as failed (their
        logs kept, their other rows discarded) with a ``RuntimeWarning``: a
        pipeline is committed whole by ``complete_pipeline`` or not at all.
        """
        with self._lock:
            if self._closed:
                return
            try:
                self._uow.commit_ready(unnamed=True)
                maintenance.abandon_in_flight(self._uow)
            finally:
                self._closed = True
                self._catalog.close()
                _OPEN_STORES.discard(self)


def _parent_id(value: Any, field: str) -> Any:
    """Check an id naming a parent: text that could be an id (a non-string is a missing parent)."""
    if isinstance(value, str):
        check_id(value, field)
    return value


class _Batch:
    """Context manager returned by :meth:`WorkspaceStore.batch`."""

    def __init__(self, store: WorkspaceStore) -> None:
        self.store = store

    def __enter__(self) -> WorkspaceStore:
        with self.store._lock:
            self.store._check_open()
            self.store._uow.batch_depth += 1
        return self.store

    def __exit__(self, *exc: Any) -> None:
        with self.store._lock:
            self.store._uow.batch_depth -= 1
            if self.store._uow.batch_depth == 0 and not self.store._closed:
                self.store._uow.commit_ready()


@atexit.register
def _close_open_stores() -> None:
    """Commit what open stores still buffer when the interpreter exits."""
    for store in list(_OPEN_STORES):
        try:
            store.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
