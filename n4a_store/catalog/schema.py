"""The catalog schema shared by every backend: its version, tables and the upgrade rule.

The catalog records the schema version it was written with in ``schema_info``.
Opening a catalog:

* with no tables: the current schema is created;
* with an older version: each of the backend's migrations runs in order, in one
  transaction;
* with a newer version: :class:`~n4a_store.errors.SchemaVersionError` is raised and
  nothing is modified.

Tables are written once, with type names in braces that each backend maps to its
own (``{text}`` is VARCHAR in DuckDB and TEXT in PostgreSQL).
"""

from __future__ import annotations

from typing import Callable, Mapping

from ..errors import SchemaVersionError
from .base import Session

SCHEMA_VERSION = 2

TABLES: dict[str, str] = {
    "schema_info": "key {text} PRIMARY KEY, value {text} NOT NULL",
    "projects": ("project_id {text} PRIMARY KEY, name {text} NOT NULL, description {text}, "
                 "created_at {timestamp} NOT NULL"),
    "runs": ("run_id {text} PRIMARY KEY, name {text} NOT NULL, status {text} NOT NULL, "
             "config {text}, datasets {text}, dataset_names {text_list}, summary {text}, "
             "metadata {text}, error {text}, project_id {text}, created_at {timestamp} NOT NULL, "
             "completed_at {timestamp}"),
    "pipelines": ("pipeline_id {text} PRIMARY KEY, run_id {text} NOT NULL, name {text} NOT NULL, "
                  "status {text} NOT NULL, expanded_config {text}, generator_choices {text}, "
                  "dataset_name {text}, dataset_hash {text}, best_val {double}, best_test {double}, "
                  "metric {text}, duration_ms {bigint}, error {text}, "
                  "created_at {timestamp} NOT NULL, completed_at {timestamp}"),
    "chains": ("chain_id {text} PRIMARY KEY, pipeline_id {text} NOT NULL, steps {text} NOT NULL, "
               "model_step_idx {int} NOT NULL, model_class {text} NOT NULL, preprocessings {text}, "
               "fold_strategy {text} NOT NULL, fold_artifacts {text} NOT NULL, "
               "shared_artifacts {text} NOT NULL, branch_path {text}, source_index {int}, "
               "created_at {timestamp} NOT NULL"),
    "predictions": ("prediction_id {text} PRIMARY KEY, pipeline_id {text} NOT NULL, chain_id {text}, "
                    "run_id {text} NOT NULL, dataset_name {text} NOT NULL, model_name {text}, "
                    "model_class {text}, fold_id {text}, partition {text}, val_score {double}, "
                    "test_score {double}, train_score {double}, metric {text}, task_type {text}, "
                    "n_samples {bigint}, n_features {bigint}, scores {text}, best_params {text}, "
                    "branch_id {bigint}, branch_name {text}, exclusion_count {bigint}, "
                    "exclusion_rate {double}, preprocessings {text}, has_arrays {bool} NOT NULL, "
                    "created_at {timestamp} NOT NULL, array_ref {text}"),
    "artifacts": ("artifact_id {text} PRIMARY KEY, artifact_path {text} NOT NULL, "
                  "content_hash {text} NOT NULL, operator_class {text}, artifact_type {text}, "
                  "format {text} NOT NULL, size_bytes {bigint} NOT NULL, ref_count {bigint} NOT NULL, "
                  "created_at {timestamp} NOT NULL"),
    "logs": ("log_id {text} NOT NULL, pipeline_id {text} NOT NULL, step_idx {int}, "
             "operator_class {text}, event {text} NOT NULL, duration_ms {bigint}, message {text}, "
             "details {text}, level {text} NOT NULL, created_at {timestamp} NOT NULL"),
    # dense arrays when the store's array backend is the catalog itself (seed 002's table)
    "prediction_arrays": ("prediction_id {text} PRIMARY KEY, dataset_name {text} NOT NULL, "
                          "y_true {double_list}, y_pred {double_list}, y_true_labels {text_list}, "
                          "y_pred_labels {text_list}, y_proba {double_list}, y_proba_cols {int}, "
                          "sample_indices {bigint_list}, weights {double_list}"),
}

Migration = Callable[[Session], None]


def table_ddl(name: str, types: Mapping[str, str]) -> str:
    """``CREATE TABLE`` for one table with a backend's type names."""
    return f"CREATE TABLE {name} ({TABLES[name].format(**types)})"


def check_readable(version: int | None, where: str, current: int | None = None) -> None:
    """Refuse catalogs written by a newer n4a."""
    current = SCHEMA_VERSION if current is None else current
    if version is not None and version > current:
        raise SchemaVersionError(
            f"workspace {where!r} uses catalog schema version {version}, but this n4a "
            f"understands versions up to {current}; upgrade n4a to open it "
            f"(the workspace was not modified)"
        )


def read_version(s: Session, has_table: Callable[[Session, str], bool]) -> int | None:
    """The catalog's schema version, or None for an empty catalog."""
    if not has_table(s, "schema_info"):
        return None
    rows = s.rows("SELECT value FROM schema_info WHERE key = 'version'")
    return int(rows[0][0]) if rows else None


def create_or_migrate(s: Session, where: str, types: Mapping[str, str],
                      migrations: Mapping[int, Migration], has_table: Callable[[Session, str], bool],
                      current: int | None = None, extra_ddl: tuple[str, ...] = ()) -> None:
    """Bring the catalog to ``current`` (default :data:`SCHEMA_VERSION`; the caller holds a transaction)."""
    current = SCHEMA_VERSION if current is None else current
    version = read_version(s, has_table)
    check_readable(version, where, current)
    if version is None:
        for name in TABLES:
            s.execute(table_ddl(name, types))
        for ddl in extra_ddl:
            s.execute(ddl)
        s.execute("INSERT INTO schema_info VALUES ('version', ?)", [str(current)])
        return
    while version < current:
        migrations[version](s)
        version += 1
        s.execute("UPDATE schema_info SET value = ? WHERE key = 'version'", [str(version)])
