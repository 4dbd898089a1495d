"""Catalog schema, its version, and forward migrations.

The catalog records the schema version it was written with in
``schema_info``. Opening a workspace:

* with no catalog: the current schema is created;
* with an older version: each migration in :data:`MIGRATIONS` runs in order,
  in one transaction;
* with a newer version: :class:`~n4a_store.errors.SchemaVersionError` is raised
  and the file is not modified (it is inspected through a read-only connection).
"""

from __future__ import annotations

from typing import Callable

import duckdb

from .connection import first_row

from ..errors import SchemaVersionError

SCHEMA_VERSION = 1

_V1 = [
    """
    CREATE TABLE schema_info (
        key VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE projects (
        project_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        description VARCHAR,
        created_at TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        config VARCHAR,
        datasets VARCHAR,
        dataset_names VARCHAR[],
        summary VARCHAR,
        metadata VARCHAR,
        error VARCHAR,
        project_id VARCHAR,
        created_at TIMESTAMP NOT NULL,
        completed_at TIMESTAMP
    )
    """,
    """
    CREATE TABLE pipelines (
        pipeline_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        expanded_config VARCHAR,
        generator_choices VARCHAR,
        dataset_name VARCHAR,
        dataset_hash VARCHAR,
        best_val DOUBLE,
        best_test DOUBLE,
        metric VARCHAR,
        duration_ms BIGINT,
        error VARCHAR,
        created_at TIMESTAMP NOT NULL,
        completed_at TIMESTAMP
    )
    """,
    """
    CREATE TABLE chains (
        chain_id VARCHAR PRIMARY KEY,
        pipeline_id VARCHAR NOT NULL,
        steps VARCHAR NOT NULL,
        model_step_idx INTEGER NOT NULL,
        model_class VARCHAR NOT NULL,
        preprocessings VARCHAR,
        fold_strategy VARCHAR NOT NULL,
        fold_artifacts VARCHAR NOT NULL,
        shared_artifacts VARCHAR NOT NULL,
        branch_path VARCHAR,
        source_index INTEGER,
        created_at TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE predictions (
        prediction_id VARCHAR PRIMARY KEY,
        pipeline_id VARCHAR NOT NULL,
        chain_id VARCHAR,
        run_id VARCHAR NOT NULL,
        dataset_name VARCHAR NOT NULL,
        model_name VARCHAR,
        model_class VARCHAR,
        fold_id VARCHAR,
        partition VARCHAR,
        val_score DOUBLE,
        test_score DOUBLE,
        train_score DOUBLE,
        metric VARCHAR,
        task_type VARCHAR,
        n_samples BIGINT,
        n_features BIGINT,
        scores VARCHAR,
        best_params VARCHAR,
        branch_id BIGINT,
        branch_name VARCHAR,
        exclusion_count BIGINT,
        exclusion_rate DOUBLE,
        preprocessings VARCHAR,
        has_arrays BOOLEAN NOT NULL,
        array_file VARCHAR,
        array_row INTEGER,
        created_at TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE artifacts (
        artifact_id VARCHAR PRIMARY KEY,
        artifact_path VARCHAR NOT NULL,
        content_hash VARCHAR NOT NULL,
        operator_class VARCHAR,
        artifact_type VARCHAR,
        format VARCHAR NOT NULL,
        size_bytes BIGINT NOT NULL,
        ref_count BIGINT NOT NULL,
        created_at TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE logs (
        log_id VARCHAR NOT NULL,
        pipeline_id VARCHAR NOT NULL,
        step_idx INTEGER,
        operator_class VARCHAR,
        event VARCHAR NOT NULL,
        duration_ms BIGINT,
        message VARCHAR,
        details VARCHAR,
        level VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    )
    """,
]

#: MIGRATIONS[v] upgrades a catalog from version v to v + 1.
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {}


def read_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """Return the catalog's schema version, or None for an empty database."""
    exists = first_row(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_info'"
    ))[0]
    if not exists:
        return None
    row = first_row(con.execute("SELECT value FROM schema_info WHERE key = 'version'"))
    return int(row[0]) if row else None


def check_readable(version: int | None, where: str) -> None:
    """Refuse catalogs written by a newer n4a."""
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"workspace {where!r} uses catalog schema version {version}, but this n4a "
            f"understands versions up to {SCHEMA_VERSION}; upgrade n4a to open it "
            f"(the workspace was not modified)"
        )


def create_or_migrate(con: duckdb.DuckDBPyConnection, where: str) -> None:
    """Bring the catalog to :data:`SCHEMA_VERSION` inside one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        version = read_version(con)
        check_readable(version, where)
        if version is None:
            for ddl in _V1:
                con.execute(ddl)
            con.execute("INSERT INTO schema_info VALUES ('version', ?)", [str(SCHEMA_VERSION)])
        else:
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](con)
                version += 1
                con.execute("UPDATE schema_info SET value = ? WHERE key = 'version'", [str(version)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
