"""Ops of the maintenance jobs: compact arrays, collect garbage artifacts, export, replay.

Each op opens the store for its own duration only and reports what it did as
output metadata; exports and replays are also recorded as asset
materializations (``n4a/exports``, ``n4a/replay_predictions``) so the UI keeps
their history.
"""


import hashlib
import time
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetMaterialization, Config, MetadataValue, OpExecutionContext, op
from pydantic import Field

from n4a_store.errors import InvalidInputError

from .keys import EXPORTS, META_CHAIN_ID, META_RUN_ID, META_WORKSPACE, REPLAY_PREDICTIONS
from .metadata import frame_preview, table_metadata
from .resources import N4AStoreResource

EXPORT_DEFAULT_FORMATS = {"chain": "n4a", "run": "yaml", "pipeline": "json", "predictions": "parquet"}
EXPORT_FORMATS = {
    "chain": ("n4a", "n4a.py"),
    "run": ("yaml", "parquet"),
    "pipeline": ("json",),
    "predictions": ("parquet",),
}
EXPORT_SUFFIXES = {"n4a": ".n4a", "n4a.py": ".n4a.py", "yaml": ".yaml", "json": ".json",
                   "parquet": ".parquet"}


class CompactConfig(Config):
    """Which datasets' array files to compact (all when empty) and whether to vacuum after."""

    datasets: list[str] = Field(default_factory=list)
    vacuum: bool = False


class GcConfig(Config):
    """Whether to vacuum the catalog after deleting unreferenced artifacts."""

    vacuum: bool = False


class VerifyConfig(Config):
    """Whether to repair, and how old a temporary file must be to count as stray."""

    repair: bool = False
    grace_seconds: float = Field(default=300.0, ge=0)


class ExportConfig(Config):
    """What to export: ``subject`` (required, so the Launchpad refuses an empty config) is a
    chain, run or pipeline id (``latest``: the newest run), or ``predictions`` for the
    predictions matching ``prediction_filter`` (``query_predictions`` filters such as
    ``{"partition": "val"}``).

    ``format``: chain ``n4a`` | ``n4a.py``; run ``yaml`` | ``parquet`` (its predictions);
    pipeline ``json``; predictions ``parquet``. Empty means the first of these.
    ``output_path``: empty means ``<workspace>/exports/<kind>_<id><suffix>``.
    """

    subject: str = Field(description="A chain, run or pipeline id, 'latest' (the newest run), "
                                     "or 'predictions' (with prediction_filter).")
    prediction_filter: dict[str, Any] = Field(default_factory=dict)
    format: str = ""
    output_path: str = ""
    with_arrays: bool = False


class ReplayConfig(Config):
    """Replay chain ``chain_id`` on the spectra of ``input_path`` (CSV or Parquet).

    Feature columns are the columns named by a wavelength (a number); every other column
    (sample ids, reference values) is copied to the output next to ``y_pred``.
    ``output_path``: ``.csv`` or ``.parquet``; empty means
    ``<workspace>/exports/replay_<chain>_<input stem>.parquet``.
    """

    chain_id: str
    input_path: str
    output_path: str = ""


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sum_stats(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    totals = {"files": 0, "rows": 0, "tombstoned": 0}
    for entry in stats.values():
        for key in totals:
            totals[key] += int(entry.get(key, 0))
    return totals


@op(description="Rewrite prediction-array Parquet files, dropping tombstoned rows.")
def compact_arrays_op(
    context: OpExecutionContext, config: CompactConfig, n4a_store: N4AStoreResource
) -> int:
    """Compact the configured datasets (all when none) and report rows removed."""
    started = time.perf_counter()
    with n4a_store.open_store() as store:
        before = store.array_stats()
        targets = config.datasets or [None]
        unknown = [d for d in config.datasets if d not in before]
        if unknown:
            raise InvalidInputError(
                f"cannot compact unknown dataset(s) {unknown}; datasets with arrays: {sorted(before)}"
            )
        removed = sum(store.compact_arrays(dataset) for dataset in targets)
        if config.vacuum:
            store.vacuum()
        after = store.array_stats()
    b, a = _sum_stats(before), _sum_stats(after)
    context.add_output_metadata({
        "rows_removed": removed,
        "files_before": b["files"], "files_after": a["files"],
        "tombstoned_before": b["tombstoned"], "tombstoned_after": a["tombstoned"],
        "datasets": MetadataValue.json(sorted(config.datasets) or sorted(before)),
        "duration_s": round(time.perf_counter() - started, 3),
        META_WORKSPACE: n4a_store.display_uri(),
    })
    context.log.info(f"compacted arrays: {removed} rows removed, files {b['files']} -> {a['files']}")
    return removed


@op(description="Delete artifacts no chain references any more (ref_count == 0).")
def gc_artifacts_op(context: OpExecutionContext, config: GcConfig, n4a_store: N4AStoreResource) -> int:
    """Garbage-collect unreferenced artifacts and report counts and bytes."""
    with n4a_store.open_store() as store:
        before = store.artifact_stats()
        removed = store.gc_artifacts()
        if config.vacuum:
            store.vacuum()
        after = store.artifact_stats()
    context.add_output_metadata({
        "artifacts_removed": removed,
        "bytes_freed": int(before["bytes"]) - int(after["bytes"]),
        "artifacts_before": int(before["count"]), "artifacts_after": int(after["count"]),
        "unreferenced_after": int(after["unreferenced_count"]),
        META_WORKSPACE: n4a_store.display_uri(),
    })
    context.log.info(f"gc: {removed} unreferenced artifacts removed")
    return removed


@op(description="Verify the workspace's integrity (n4a verify); repair what can be repaired if asked.")
def verify_op(context: OpExecutionContext, config: VerifyConfig, n4a_store: N4AStoreResource) -> dict:
    """Run ``store.verify(repair=...)``, record the report as metadata; fail if problems remain."""
    from dagster import Failure

    from .checks import report_outcome

    with n4a_store.open_store() as store:
        report = store.verify(repair=config.repair, grace=config.grace_seconds)
    outcome = report_outcome(report)
    context.add_output_metadata({**outcome.metadata, META_WORKSPACE: n4a_store.display_uri()})
    context.log.info(report.summary())
    if not outcome.passed:
        raise Failure(description=outcome.description, metadata=outcome.metadata)
    return report.to_dict()


def export_subject(store: Any, subject: str) -> tuple[str, str]:
    """``(kind, id)`` of an export subject: ``predictions``, ``latest`` or an id in the store.

    Raises:
        InvalidInputError: an empty subject or an id the store does not hold.
    """
    subject = subject.strip()
    if not subject:
        raise InvalidInputError("export subject is empty: give a chain, run or pipeline id, "
                                "'latest' or 'predictions'")
    if subject == "predictions":
        return "predictions", "filtered"
    if subject == "latest":
        runs = store.list_runs(limit=1)
        if runs.height == 0:
            raise InvalidInputError("export subject 'latest': the workspace has no runs")
        return "run", runs["run_id"][0]
    for kind, getter in (("chain", store.get_chain), ("run", store.get_run),
                         ("pipeline", store.get_pipeline)):
        if getter(subject) is not None:
            return kind, subject
    raise InvalidInputError(f"export subject {subject!r} is no chain, run or pipeline id in "
                            f"the workspace")


def resolve_export(config: ExportConfig, workspace: Path, kind: str,
                   subject: str) -> tuple[str, Path]:
    """The format and output path of an export of ``kind``.

    Raises:
        InvalidInputError: a format the subject cannot take.
    """
    fmt = config.format or EXPORT_DEFAULT_FORMATS[kind]
    if fmt not in EXPORT_FORMATS[kind]:
        raise InvalidInputError(
            f"cannot export a {kind} as {fmt!r}; formats for a {kind}: {list(EXPORT_FORMATS[kind])}"
        )
    if config.output_path:
        output = Path(config.output_path).expanduser().resolve()
    else:
        label = subject if kind != "predictions" else time.strftime("%Y%m%dT%H%M%S")
        output = workspace / "exports" / f"{kind}_{label}{EXPORT_SUFFIXES[fmt]}"
    return fmt, output


@op(description="Export a chain (bundle or script), a run, a pipeline config or predictions.")
def export_op(context: OpExecutionContext, config: ExportConfig, n4a_store: N4AStoreResource) -> str:
    """Write the requested export file and record it as a materialization of ``n4a/exports``."""
    with n4a_store.open_store() as store:
        kind, subject = export_subject(store, config.subject)
        fmt, output = resolve_export(config, n4a_store.workspace_path(), kind, subject)
        output.parent.mkdir(parents=True, exist_ok=True)
        if kind == "chain":
            written = store.export_chain(subject, output, format=fmt)
        elif kind == "run" and fmt == "yaml":
            written = store.export_run(subject, output)
        elif kind == "run":
            written = store.export_predictions_parquet(
                output, run_id=subject, **_arrays_kw(config.with_arrays))
        elif kind == "pipeline":
            written = store.export_pipeline_config(subject, output)
        else:
            written = store.export_predictions_parquet(
                output, **config.prediction_filter, **_arrays_kw(config.with_arrays))
    path = Path(written)
    metadata: dict[str, Any] = {
        "kind": kind, "format": fmt, "path": MetadataValue.path(str(path)),
        "size_bytes": path.stat().st_size, "sha256": file_sha256(path),
        META_WORKSPACE: n4a_store.display_uri(),
    }
    if kind == "chain":
        metadata[META_CHAIN_ID] = subject
    elif kind == "run":
        metadata[META_RUN_ID] = subject
    elif kind == "pipeline":
        metadata["n4a/pipeline_id"] = subject
    else:
        metadata["filter"] = MetadataValue.json(config.prediction_filter)
    if fmt == "parquet":
        frame = pl.read_parquet(path)
        metadata.update(table_metadata(frame))
    context.log_event(AssetMaterialization(asset_key=EXPORTS, description=f"{kind} export",
                                           metadata=metadata))
    context.add_output_metadata({"path": MetadataValue.path(str(path))})
    return str(path)


def _arrays_kw(with_arrays: bool) -> dict[str, Any]:
    return {"with_arrays": True} if with_arrays else {}


def read_replay_input(path: Path) -> tuple[pl.DataFrame, Any, Any]:
    """Read spectra for replay: (passthrough columns, X, wavelengths).

    Feature columns are those named by a number (the wavelength); the others pass through.

    Raises:
        InvalidInputError: missing file, unknown suffix, or no wavelength-named column.
    """
    import numpy as np

    if not path.is_file():
        raise InvalidInputError(f"replay input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pl.read_parquet(path)
    elif suffix in (".csv", ".txt"):
        frame = pl.read_csv(path)
    else:
        raise InvalidInputError(f"replay input {path.name}: use a .csv or .parquet file")
    features, wavelengths = [], []
    for column in frame.columns:
        try:
            wavelengths.append(float(column))
        except ValueError:
            continue
        features.append(column)
    if not features:
        raise InvalidInputError(
            f"replay input {path.name}: no spectral columns (feature columns are named by wavelength)"
        )
    X = frame.select(features).to_numpy().astype(np.float64)
    passthrough = frame.drop(features)
    return passthrough, X, np.asarray(wavelengths, dtype=np.float64)


@op(description="Replay a stored chain on a CSV/Parquet file of spectra into a predictions file.")
def replay_op(context: OpExecutionContext, config: ReplayConfig, n4a_store: N4AStoreResource) -> str:
    """Write predictions of ``chain_id`` for ``input_path``; record an ``n4a/replay_predictions``
    materialization."""
    import numpy as np

    source = Path(config.input_path).expanduser().resolve()
    passthrough, X, wavelengths = read_replay_input(source)
    if config.output_path:
        output = Path(config.output_path).expanduser().resolve()
    else:
        output = (n4a_store.workspace_path() / "exports"
                  / f"replay_{config.chain_id[:12]}_{source.stem}.parquet")
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise InvalidInputError(f"replay output {output.name}: use a .csv or .parquet file")
    started = time.perf_counter()
    with n4a_store.open_store() as store:
        if store.get_chain(config.chain_id) is None:
            raise InvalidInputError(f"chain {config.chain_id!r} does not exist in the workspace")
        y_pred = np.asarray(store.replay_chain(config.chain_id, X, wavelengths=wavelengths))
    elapsed = time.perf_counter() - started
    result = passthrough.with_columns(pl.Series("y_pred", y_pred.reshape(len(X), -1)[:, 0]
                                                if y_pred.ndim > 1 else y_pred))
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".csv":
        result.write_csv(output)
    else:
        result.write_parquet(output)
    metadata = {
        META_CHAIN_ID: config.chain_id,
        "input_path": MetadataValue.path(str(source)),
        "path": MetadataValue.path(str(output)),
        "sha256": file_sha256(output),
        "replay_s": round(elapsed, 4),
        "preview": frame_preview(result),
        META_WORKSPACE: n4a_store.display_uri(),
        **table_metadata(result),
    }
    context.log_event(AssetMaterialization(
        asset_key=REPLAY_PREDICTIONS, description=f"replay of chain {config.chain_id}",
        metadata=metadata))
    context.add_output_metadata({"path": MetadataValue.path(str(output)), "rows": len(result)})
    return str(output)
