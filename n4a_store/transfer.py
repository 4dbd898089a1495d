"""Copy runs, with everything under them, from one store to another, ids preserved.

:func:`export_store` works between any two store locations through the catalog
protocol (:class:`~n4a_store.catalog.base.Session`) only. Each run is copied in
its own destination transaction: artifact files first (hash-checked), then the
run's rows, arrays and artifact rows, so a killed transfer leaves each run whole
or absent and can be run again; rows whose ids the destination holds are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

from .arrays.codec import normalize_record
from .artifacts.codec import content_hash
from .config import StoreConfig
from .errors import ArtifactIntegrityError, N4AError
from .workspace import WorkspaceStore
from .workspace.writes import chain_artifact_refs

TABLES = ("runs", "pipelines", "chains", "predictions", "logs")
_KEYS = {"runs": "run_id", "pipelines": "pipeline_id", "chains": "chain_id",
         "predictions": "prediction_id", "logs": "log_id", "artifacts": "artifact_id"}


@dataclass
class TransferReport:
    """What :func:`export_store` copied and skipped, per table."""

    copied: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    bytes_copied: int = 0
    arrays_copied: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"copied": dict(self.copied), "skipped": dict(self.skipped),
                "bytes_copied": self.bytes_copied, "arrays_copied": self.arrays_copied}


def _open(location: Any) -> tuple[WorkspaceStore, bool]:
    if isinstance(location, WorkspaceStore):
        return location, False
    if isinstance(location, StoreConfig):
        return location.connect(), True
    return WorkspaceStore(location), True


def _frame(store: WorkspaceStore, table: str, column: str, ids: list[str]) -> pa.Table:
    marks = ", ".join("?" for _ in ids)
    with store._catalog.reading() as s:
        return s.frame(f"SELECT * FROM {table} WHERE {column} IN ({marks})", ids).to_arrow()


def _existing(s: Any, table: str, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    key = _KEYS[table]
    marks = ", ".join("?" for _ in ids)
    return {r[0] for r in s.rows(f"SELECT {key} FROM {table} WHERE {key} IN ({marks})", ids)}


def _claims(chains: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in chains.to_pylist():
        decoded = {k: (json.loads(v) if isinstance(v, str) and k in (
            "steps", "fold_artifacts", "shared_artifacts") else v) for k, v in row.items()}
        for ref in chain_artifact_refs(decoded):
            counts[ref] = counts.get(ref, 0) + 1
    return counts


def _copy_run(src: WorkspaceStore, dst: WorkspaceStore, run_id: str, report: TransferReport) -> None:
    pipelines = _frame(src, "pipelines", "run_id", [run_id])
    pids = pipelines.column("pipeline_id").to_pylist()
    tables = {"runs": _frame(src, "runs", "run_id", [run_id]), "pipelines": pipelines}
    for name in ("chains", "predictions", "logs"):
        tables[name] = _frame(src, name, "pipeline_id", pids) if pids else None
    claims = _claims(tables["chains"]) if tables["chains"] is not None else {}
    artifacts = _frame(src, "artifacts", "artifact_id", sorted(claims)) if claims else None
    formats = {} if artifacts is None else dict(zip(artifacts.column("artifact_id").to_pylist(),
                                                    artifacts.column("format").to_pylist()))
    payloads: dict[str, bytes] = {}
    for artifact_id in sorted(claims):
        data = src.read_artifact_bytes(artifact_id)
        if content_hash(data) != artifact_id:
            raise ArtifactIntegrityError(
                f"source artifact {artifact_id} is corrupted (its bytes hash differently); "
                f"nothing of run {run_id} was copied")
        payloads[artifact_id] = data
    with dst._catalog.writing() as s:
        # files are written inside the transaction, as a commit does: a repair or gc of
        # the destination (maintenance) never sees them without their rows
        for artifact_id, data in payloads.items():
            if dst._artifact_files.write(artifact_id, formats[artifact_id], data):
                report.bytes_copied += len(data)
        new_chains = None
        for name in TABLES:
            table = tables[name]
            if table is None or table.num_rows == 0:
                continue
            ids = table.column(_KEYS[name]).to_pylist()
            have = _existing(s, name, ids)
            keep = [i not in have for i in ids]
            table = table.filter(pa.array(keep))
            report.skipped[name] = report.skipped.get(name, 0) + len(have)
            report.copied[name] = report.copied.get(name, 0) + table.num_rows
            if name == "predictions" and table.num_rows:
                table = _stage_arrays(src, dst, s, table, report)
            if table.num_rows:
                s.insert(name, table)
            if name == "chains":
                new_chains = table
        _claim_artifacts(s, artifacts, _claims(new_chains) if new_chains is not None else {}, report)


def _stage_arrays(src: WorkspaceStore, dst: WorkspaceStore, s: Any, table: pa.Table,
                  report: TransferReport) -> pa.Table:
    rows = table.to_pylist()
    with_arrays = [r["prediction_id"] for r in rows if r.get("has_arrays")]
    loaded = src.load_arrays(with_arrays) if with_arrays else {}
    records = []
    by_id = {r["prediction_id"]: r for r in rows}
    for pid, arrays in loaded.items():
        record = {k: arrays.get(k) for k in ("y_true", "y_pred", "y_proba", "sample_indices", "weights")}
        record.update(prediction_id=pid, dataset_name=by_id[pid]["dataset_name"])
        records.append(normalize_record(record))
    if not records:
        return table
    staged = dst.array_store.stage(records, s)
    report.arrays_copied += len(records)
    refs = [staged.refs.get(r["prediction_id"], r.get("array_ref")) for r in rows]
    idx = table.schema.get_field_index("array_ref")
    return table.set_column(idx, "array_ref", pa.array(refs, pa.string()))


def _claim_artifacts(s: Any, artifacts: pa.Table | None, claims: dict[str, int],
                     report: TransferReport) -> None:
    if artifacts is None or not claims:
        return
    have = _existing(s, "artifacts", sorted(claims))
    for artifact_id in sorted(have):
        s.execute("UPDATE artifacts SET ref_count = ref_count + ? WHERE artifact_id = ?",
                  [claims[artifact_id], artifact_id])
    report.skipped["artifacts"] = report.skipped.get("artifacts", 0) + len(have)
    new = artifacts.filter(pa.array([a in claims and a not in have
                                     for a in artifacts.column("artifact_id").to_pylist()]))
    if new.num_rows:
        counts = [claims[a] for a in new.column("artifact_id").to_pylist()]
        idx = new.schema.get_field_index("ref_count")
        new = new.set_column(idx, "ref_count", pa.array(counts, pa.int64()))
        s.insert("artifacts", new)
    report.copied["artifacts"] = report.copied.get("artifacts", 0) + new.num_rows


def _check_counts(src: WorkspaceStore, dst: WorkspaceStore, run_ids: list[str]) -> None:
    """Every copied run has as many pipelines, predictions and arrays in ``dst`` as in ``src``."""
    for run_id in run_ids:
        for what, count in (
            ("pipelines", lambda st: st.list_pipelines(run_id=run_id).height),
            ("predictions", lambda st: st.query_predictions(run_id=run_id).height),
            ("arrays", lambda st: len(st.load_arrays(
                st.query_predictions(run_id=run_id)["prediction_id"].to_list()))),
        ):
            have, want = count(dst), count(src)
            if have != want:
                raise N4AError(f"transfer check failed: run {run_id!r} has {have} {what} in the "
                               f"destination but {want} in the source")


def export_store(source: Any, destination: Any, run_ids: list[str] | None = None, *,
                 progress: Callable[[str, int, int], None] | None = None) -> TransferReport:
    """Copy ``run_ids`` (default: every run) from ``source`` to ``destination``.

    Both may be a location string, a :class:`~n4a_store.config.StoreConfig` or an
    open :class:`~n4a_store.WorkspaceStore`. ``progress(run_id, done, total)`` is
    called after each run. Returns a :class:`TransferReport`.
    """
    src, close_src = _open(source)
    dst, close_dst = _open(destination)
    try:
        src.flush()
        if run_ids is None:
            with src._catalog.reading() as s:
                run_ids = [r[0] for r in s.rows("SELECT run_id FROM runs ORDER BY run_id")]
        missing = [r for r in run_ids if src.get_run(r) is None]
        if missing:
            raise N4AError(f"run(s) not in the source store: {', '.join(missing)}")
        report = TransferReport()
        for done, run_id in enumerate(run_ids, 1):
            _copy_run(src, dst, run_id, report)
            if progress is not None:
                progress(run_id, done, len(run_ids))
        _check_counts(src, dst, run_ids)
        return report
    finally:
        if close_src:
            src.close()
        if close_dst:
            dst.close()
