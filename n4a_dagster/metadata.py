"""Turning polars frames and store records into Dagster UI metadata."""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

try:  # public in some Dagster releases, only under the metadata package in others
    from dagster import TableMetadataSet  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the installed Dagster
    from dagster._core.definitions.metadata import TableMetadataSet

_TYPE_NAMES = {
    pl.Float64: "float", pl.Float32: "float", pl.Int64: "int", pl.Int32: "int", pl.Int16: "int",
    pl.Int8: "int", pl.UInt64: "int", pl.UInt32: "int", pl.Boolean: "bool", pl.Utf8: "string",
}


def _column_type(dtype: pl.DataType) -> str:
    for base, name in _TYPE_NAMES.items():
        if dtype == base:
            return name
    return str(dtype).lower()


def table_schema(frame: pl.DataFrame) -> TableSchema:
    """The Dagster table schema of a polars frame."""
    return TableSchema(columns=[
        TableColumn(name=name, type=_column_type(dtype)) for name, dtype in frame.schema.items()
    ])


def table_metadata(frame: pl.DataFrame, table_name: str | None = None) -> dict[str, Any]:
    """``dagster/column_schema`` and ``dagster/row_count`` (plus the table name) for a frame."""
    return dict(TableMetadataSet(column_schema=table_schema(frame), row_count=frame.height,
                                 table_name=table_name))


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 120 else text[:117] + "..."
    return str(value)


def frame_preview(frame: pl.DataFrame, n: int = 10) -> MetadataValue:
    """A table preview of the first ``n`` rows (nested values shown as short JSON)."""
    head = frame.head(n)
    records = [TableRecord({key: _cell(val) for key, val in row.items()})
               for row in head.iter_rows(named=True)]
    return MetadataValue.table(records=records, schema=table_schema(head))


def finite_or_none(value: Any) -> float | None:
    """A float score, or None for missing/NaN/inf (never put NaN into metadata)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def score_metadata(prefix: str, value: Any) -> dict[str, Any]:
    """``{prefix: value}`` when the score is finite, else nothing."""
    number = finite_or_none(value)
    return {} if number is None else {prefix: MetadataValue.float(number)}


def asset_link(asset_path: list[str], partition: str | None = None) -> MetadataValue:
    """A link (relative to the Dagster UI) to an asset, or to one partition of it."""
    from urllib.parse import quote

    url = "/assets/" + "/".join(quote(part, safe="") for part in asset_path)
    if partition is not None:
        url += f"?view=partitions&partition={quote(partition, safe='')}"
    return MetadataValue.url(url)


def display_board(board: pl.DataFrame, partition_keys: dict[str, str]) -> pl.DataFrame:
    """The leaderboard as people read it: rounded scores, the metric with its direction
    (``rmse ↓``), the pipeline partition key instead of the internal columns."""
    from n4a_store.ranking import arrow, round_score

    rows = []
    for row in board.iter_rows(named=True):
        metric = row.get("metric") or ""
        rows.append({
            "rank": row["rank"], "dataset": row["dataset_name"], "pipeline": row["name"],
            "val": round_score(row["best_val"]), "test": round_score(row["best_test"]),
            "metric": f"{metric} {arrow(metric)}".strip(), "status": row["status"],
            "partition": partition_keys.get(row["pipeline_id"] or "", ""),
        })
    schema = {"rank": pl.Int64, "dataset": pl.String, "pipeline": pl.String, "val": pl.Float64,
              "test": pl.Float64, "metric": pl.String, "status": pl.String,
              "partition": pl.String}
    return pl.DataFrame(rows, schema=schema)
