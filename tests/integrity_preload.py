"""Imported by the harnesses' forkserver: load every module a writer uses (not a test module).

A writer forked from a warm server starts in milliseconds instead of importing
scikit-learn, pyarrow and the store's lazily imported modules after each fork.
"""

from __future__ import annotations

import n4a_store.arrays.store  # noqa: F401
import n4a_store.bundles.export  # noqa: F401
import n4a_store.catalog.duckdb.catalog  # noqa: F401
import n4a_store.exports  # noqa: F401
import n4a_store.integrity  # noqa: F401
import pyarrow.parquet  # noqa: F401
import sklearn.linear_model  # noqa: F401
import sklearn.preprocessing  # noqa: F401

import integrity_writer  # noqa: F401

PRELOAD = ["integrity_preload"]
