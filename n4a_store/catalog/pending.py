"""Writes buffered in a process until they are committed in one transaction.

Rows that belong to a pipeline (its own row, chains, predictions and their
arrays, logs) accumulate in one :class:`PendingWrites` per pipeline in flight;
artifacts saved by the process wait as :class:`PendingArtifact`. Both are
turned into Arrow tables for bulk inserts when a pipeline commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..columnar import transpose

_TS = pa.timestamp("us")

SCHEMAS: dict[str, pa.Schema] = {
    "pipelines": pa.schema([
        ("pipeline_id", pa.string()), ("run_id", pa.string()), ("name", pa.string()),
        ("status", pa.string()), ("expanded_config", pa.string()),
        ("generator_choices", pa.string()), ("dataset_name", pa.string()),
        ("dataset_hash", pa.string()), ("best_val", pa.float64()), ("best_test", pa.float64()),
        ("metric", pa.string()), ("duration_ms", pa.int64()), ("error", pa.string()),
        ("created_at", _TS), ("completed_at", _TS),
    ]),
    "completions": pa.schema([
        ("pipeline_id", pa.string()), ("best_val", pa.float64()), ("best_test", pa.float64()),
        ("metric", pa.string()), ("duration_ms", pa.int64()), ("completed_at", _TS),
    ]),
    "chains": pa.schema([
        ("chain_id", pa.string()), ("pipeline_id", pa.string()), ("steps", pa.string()),
        ("model_step_idx", pa.int32()), ("model_class", pa.string()),
        ("preprocessings", pa.string()), ("fold_strategy", pa.string()),
        ("fold_artifacts", pa.string()), ("shared_artifacts", pa.string()),
        ("branch_path", pa.string()), ("source_index", pa.int32()), ("created_at", _TS),
    ]),
    "predictions": pa.schema([
        ("prediction_id", pa.string()), ("pipeline_id", pa.string()), ("chain_id", pa.string()),
        ("run_id", pa.string()), ("dataset_name", pa.string()), ("model_name", pa.string()),
        ("model_class", pa.string()), ("fold_id", pa.string()), ("partition", pa.string()),
        ("val_score", pa.float64()), ("test_score", pa.float64()), ("train_score", pa.float64()),
        ("metric", pa.string()), ("task_type", pa.string()), ("n_samples", pa.int64()),
        ("n_features", pa.int64()), ("scores", pa.string()), ("best_params", pa.string()),
        ("branch_id", pa.int64()), ("branch_name", pa.string()), ("exclusion_count", pa.int64()),
        ("exclusion_rate", pa.float64()), ("preprocessings", pa.string()),
        ("has_arrays", pa.bool_()), ("created_at", _TS), ("array_ref", pa.string()),
    ]),
    "logs": pa.schema([
        ("log_id", pa.string()), ("pipeline_id", pa.string()), ("step_idx", pa.int32()),
        ("operator_class", pa.string()), ("event", pa.string()), ("duration_ms", pa.int64()),
        ("message", pa.string()), ("details", pa.string()), ("level", pa.string()),
        ("created_at", _TS),
    ]),
    "artifacts": pa.schema([
        ("artifact_id", pa.string()), ("artifact_path", pa.string()),
        ("content_hash", pa.string()), ("operator_class", pa.string()),
        ("artifact_type", pa.string()), ("format", pa.string()), ("size_bytes", pa.int64()),
        ("ref_count", pa.int64()), ("created_at", _TS),
    ]),
}


@dataclass
class PendingArtifact:
    """An artifact saved in this process whose bytes it still keeps.

    ``saves`` counts the ``save_artifact`` calls that returned this id and
    ``named`` the references committed chains of this process took to it: while
    ``named < saves`` a pipeline of this process may still name it, so the bytes
    are kept and a commit naming it stores it again if gc removed it meanwhile.
    ``stored`` is true once a commit wrote its row and file.
    """

    row: dict[str, Any]
    data: bytes
    saves: int = 1
    named: int = 0
    stored: bool = False


@dataclass
class PendingWrites:
    """Buffered rows of one pipeline in flight, or of finished pipelines awaiting one commit."""

    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    completions: dict[str, dict[str, Any]] = field(default_factory=dict)
    chains: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    arrays: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    def is_empty(self) -> bool:
        """True when nothing waits to be committed."""
        return not (self.pipelines or self.completions or self.chains
                    or self.predictions or self.arrays or self.logs)

    def size(self) -> int:
        """Rough number of buffered rows (used to bound memory)."""
        return len(self.chains) + len(self.predictions) + len(self.logs)

    def chain_ids(self) -> set[str]:
        """Ids of buffered chains."""
        return {c["chain_id"] for c in self.chains}

    def merge(self, other: "PendingWrites") -> None:
        """Append everything ``other`` buffers (another pipeline's rows) to this one."""
        self.pipelines.update(other.pipelines)
        self.completions.update(other.completions)
        self.chains.extend(other.chains)
        self.predictions.extend(other.predictions)
        self.arrays.extend(other.arrays)
        self.logs.extend(other.logs)

    def drop_pipelines(self, pipeline_ids: set[str]) -> "PendingWrites":
        """Remove and return the buffered chains, predictions and arrays of some pipelines.

        Logs are kept: a failed pipeline's log is what explains the failure.
        """
        dropped = PendingWrites()
        dropped.chains = [c for c in self.chains if c["pipeline_id"] in pipeline_ids]
        dropped.predictions = [p for p in self.predictions if p["pipeline_id"] in pipeline_ids]
        gone = {p["prediction_id"] for p in dropped.predictions}
        dropped.arrays = [a for a in self.arrays if a["prediction_id"] in gone]
        self.chains = [c for c in self.chains if c["pipeline_id"] not in pipeline_ids]
        self.predictions = [p for p in self.predictions if p["pipeline_id"] not in pipeline_ids]
        self.arrays = [a for a in self.arrays if a["prediction_id"] not in gone]
        return dropped

    def table(self, name: str) -> pa.Table:
        """The buffered rows of one catalog table as Arrow."""
        schema = SCHEMAS[name]
        if name in ("pipelines", "completions"):
            rows = list(getattr(self, name).values())
        else:
            rows = getattr(self, name)
        return rows_table(rows, name)


def rows_table(rows: list[dict[str, Any]], table: str) -> pa.Table:
    """Buffered rows of ``table`` as Arrow, a column absent from a row being null."""
    schema = SCHEMAS[table]
    columns = transpose(rows, tuple(schema.names))
    return pa.Table.from_arrays([pa.array(values, type=f.type) for values, f in zip(columns, schema)],
                                schema=schema)


def artifact_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows of the ``artifacts`` table (with ``ref_count``) as Arrow."""
    return rows_table(rows, "artifacts")
