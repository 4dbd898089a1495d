"""Deletes, garbage collection, compaction and array housekeeping of a store.

Each function takes the store's :class:`~.commit.UnitOfWork` and runs in one
catalog transaction marked as maintenance, so on backends with concurrent
writers (PostgreSQL) a file is only removed while no writer can be claiming it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..catalog.base import Session
from ..catalog.columns import decode_json_columns
from ..catalog.pending import PendingWrites
from .commit import UnitOfWork
from .writes import chain_artifact_refs, now

Deleted = list[tuple[str, str, str | None]]  # (prediction_id, dataset_name, array_ref)


def _release_chain_claims(uow: UnitOfWork, s: Session, chains: list[dict[str, Any]]) -> None:
    refs = [ref for c in chains for ref in chain_artifact_refs(decode_json_columns("chains", c))]
    uow.catalog.release_claims(s, refs)


def delete_pipeline_rows(uow: UnitOfWork, s: Session, pipeline_ids: list[str],
                         keep_logs: bool) -> tuple[int, Deleted]:
    """Delete chains, predictions (and logs) of pipelines and release their claims."""
    catalog = uow.catalog
    catalog.existing(s, "pipelines", "pipeline_id", pipeline_ids, lock="update")
    chains = catalog.chains_of_pipelines(s, pipeline_ids)
    _release_chain_claims(uow, s, chains)
    uow.chains -= {c["chain_id"] for c in chains}
    return catalog.delete_pipeline_rows(s, pipeline_ids, keep_logs)


def _dead_artifacts(uow: UnitOfWork, s: Session) -> list[tuple[str, str]]:
    return uow.catalog.collect_dead_artifacts(s, keep=set(uow.saved))


def _remove_files(uow: UnitOfWork, dead: list[tuple[str, str]]) -> None:
    for artifact_id, fmt in dead:
        uow.artifacts.remove(artifact_id, fmt)


def forget_arrays(uow: UnitOfWork, deleted: Deleted) -> None:
    """Delete the arrays of deleted predictions from the array backend."""
    ids = [pid for pid, _, _ in deleted]
    if ids:
        uow.arrays.delete(ids)


def _take_buffer(uow: UnitOfWork, pipeline_id: str) -> PendingWrites:
    """Remove and return everything buffered for one pipeline (in flight or in a batch)."""
    buf = uow.open.pop(pipeline_id, None) or PendingWrites()
    if pipeline_id in uow.ready.pipelines or pipeline_id in uow.ready.completions or any(
            r["pipeline_id"] == pipeline_id for r in uow.ready.chains + uow.ready.predictions
            + uow.ready.logs):
        taken = uow.ready.drop_pipelines({pipeline_id})
        taken.logs = [r for r in uow.ready.logs if r["pipeline_id"] == pipeline_id]
        uow.ready.logs = [r for r in uow.ready.logs if r["pipeline_id"] != pipeline_id]
        row = uow.ready.pipelines.pop(pipeline_id, None)
        if row is not None:
            taken.pipelines[pipeline_id] = row
        uow.ready.completions.pop(pipeline_id, None)
        taken.merge(buf)
        buf = taken
    uow.chains -= buf.chain_ids()
    return buf


def fail_pipeline(uow: UnitOfWork, pipeline_id: str, error: str) -> None:
    """Record a failure and roll back the pipeline's chains, predictions and arrays.

    Its logs are kept and committed with the failure. A pipeline begun in this
    process and never committed is committed now, as failed, with its logs only.
    """
    buf = _take_buffer(uow, pipeline_id)
    failed = PendingWrites(logs=buf.logs)
    begun = buf.pipelines.get(pipeline_id)
    try:
        if begun is not None:
            failed.pipelines[pipeline_id] = {**begun, "status": "failed", "error": error,
                                             "completed_at": now()}
            uow.commit(rows=failed)
            return

        def update(s: Session) -> Deleted:
            deleted = delete_pipeline_rows(uow, s, [pipeline_id], keep_logs=True)[1]
            uow.catalog.mark_pipeline_failed(s, pipeline_id, error, now())
            return deleted

        forget_arrays(uow, uow.commit(update, rows=failed))
    except BaseException:
        uow.open[pipeline_id] = buf  # nothing was committed: the pipeline is as it was
        raise


def abandon_in_flight(uow: UnitOfWork) -> None:
    """At close: record pipelines begun here and never committed as failed; drop other buffered rows.

    Rows buffered for a pipeline already in the catalog (made visible by an
    explicit ``flush()``) are discarded: closing never commits half a pipeline.
    """
    if not uow.open:
        return
    discarded = sorted(p for p, buf in uow.open.items() if buf.chains or buf.predictions)
    for pipeline_id in sorted(uow.open):
        if uow.open[pipeline_id].pipelines:  # never committed: record it, failed
            fail_pipeline(uow, pipeline_id, "not completed: the store was closed before "
                                            "complete_pipeline or fail_pipeline")
    uow.open.clear()
    if discarded:
        warnings.warn(f"closed with pipeline(s) in flight, recorded as failed and their chains and "
                      f"predictions discarded: {', '.join(discarded)}", RuntimeWarning, stacklevel=3)


def delete_pipeline(uow: UnitOfWork, pipeline_id: str, delete_artifacts: bool) -> int:
    """Delete one pipeline with everything under it; return rows deleted."""

    buf = _take_buffer(uow, pipeline_id)
    if buf.pipelines:  # begun here and never committed: nothing is in the catalog
        uow.pipelines.pop(pipeline_id, None)
        return 0

    def delete(s: Session) -> tuple[int, Deleted, list[tuple[str, str]]]:
        count, deleted = delete_pipeline_rows(uow, s, [pipeline_id], keep_logs=False)
        count += uow.catalog.delete_pipelines(s, [pipeline_id])
        dead = _dead_artifacts(uow, s) if delete_artifacts else []
        return count + len(dead), deleted, dead

    count, deleted, _ = uow.commit(delete, after=lambda r: _remove_files(uow, r[2]), maintenance=True)
    uow.pipelines.pop(pipeline_id, None)
    forget_arrays(uow, deleted)
    return count


def delete_run(uow: UnitOfWork, run_id: str, delete_artifacts: bool) -> int:
    """Delete a run with everything under it; return rows deleted."""

    def delete(s: Session) -> tuple[int, Deleted, list[tuple[str, str]], list[str]]:
        catalog = uow.catalog
        if not catalog.run_exists(s, run_id):
            return 0, [], [], []
        pipeline_ids = catalog.run_pipeline_ids(s, run_id)
        count, deleted = 0, []
        if pipeline_ids:
            count, deleted = delete_pipeline_rows(uow, s, pipeline_ids, keep_logs=False)
            count += catalog.delete_pipelines(s, pipeline_ids)
        count += catalog.delete_run_row(s, run_id)
        dead = _dead_artifacts(uow, s) if delete_artifacts else []
        return count + len(dead), deleted, dead, pipeline_ids

    count, deleted, _, pipeline_ids = uow.commit(
        delete, after=lambda r: _remove_files(uow, r[2]), maintenance=True)
    for pid in pipeline_ids:
        uow.pipelines.pop(pid, None)
    for pid, (owner, _) in list(uow.pipelines.items()):  # begun here, never committed
        if owner == run_id:
            _take_buffer(uow, pid)
            uow.pipelines.pop(pid, None)
    uow.runs.discard(run_id)
    forget_arrays(uow, deleted)
    return count


def delete_prediction(uow: UnitOfWork, prediction_id: str) -> bool:
    """Delete one prediction and its arrays; False if it did not exist."""
    deleted = uow.commit(lambda s: uow.catalog.delete_prediction(s, prediction_id))
    if deleted is None:
        return False
    forget_arrays(uow, [deleted])
    return True


def stranded_artifact_files(uow: UnitOfWork, s: Session) -> list[Path]:
    """Files under ``artifacts/`` no catalog row owns: a dead writer's files and ``.tmp`` files.

    Only commits write there, so inside a maintenance transaction (no commit in
    flight, none starting) every such file belongs to a writer that died before COMMIT.
    """
    from ..integrity.scan import artifact_files, tmp_files

    root = getattr(uow.artifacts, "root", None)
    if root is None:
        return []
    files, others = artifact_files(root)
    if not files and not others:
        return []
    known = uow.catalog.existing(s, "artifacts", "artifact_id", set(files)) if files else set()
    known |= set(uow.saved)
    stranded = [p for a, (_, p) in files.items() if a not in known] + [o.path for o in others]
    return stranded + [f.path for f in tmp_files(root)]


def gc_artifacts(uow: UnitOfWork) -> int:
    """Remove artifacts no chain names and nobody claims, and stranded files; return files removed."""
    from ..integrity.scan import remove_file

    def collect(s: Session) -> tuple[list[tuple[str, str]], list[Path]]:
        stranded = stranded_artifact_files(uow, s)  # before the dead rows go
        return _dead_artifacts(uow, s), stranded

    def remove(result: tuple[list[tuple[str, str]], list[Path]]) -> None:
        _remove_files(uow, result[0])
        for path in result[1]:
            remove_file(path)

    dead, stranded = uow.commit(collect, after=remove, maintenance=True)
    return len(dead) + len(stranded)


def tombstone_orphans(uow: UnitOfWork, dataset_name: str | None) -> list[str]:
    """Tombstone array rows that no catalog prediction owns; return their ids.

    Runs as a maintenance transaction: it waits for writers in flight (whose
    staged arrays are not committed yet) and holds new ones off, so every row it
    sees without a catalog record belongs to a writer that died before COMMIT.
    """
    arrays = uow.arrays

    def scan(s: Session) -> list[str]:
        datasets = [dataset_name] if dataset_name is not None else arrays.list_datasets()
        orphans: list[str] = []
        for dataset in datasets:
            ids = arrays.list_keys(dataset)
            if not ids:
                continue
            known = uow.catalog.prediction_ids_of_dataset(s, dataset)
            orphans.extend(i for i in ids if i not in known)
        if orphans:
            arrays.delete(orphans)
        return orphans

    return uow.commit(scan, maintenance=True) or []


def compact_arrays(uow: UnitOfWork, dataset_name: str | None) -> int:
    """Tombstone array rows with no catalog record, then compact; return rows removed.

    Orphan rows come from a process that died between writing its arrays and
    committing its transaction.
    """
    uow.commit_ready()
    tombstone_orphans(uow, dataset_name)
    return uow.arrays.compact(dataset_name)
