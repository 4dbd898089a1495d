"""export_store between real DuckDB workspaces with fitted scikit-learn objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from n4a_store import WorkspaceStore
from n4a_store.errors import N4AError
from n4a_store.transfer import export_store

from conftest import write_pipeline


def _source(path: Path, fitted: dict, data: tuple) -> tuple[list[str], list[dict]]:
    written = []
    runs = []
    with WorkspaceStore(path) as s:
        for r in range(2):
            run_id = s.begin_run(f"run{r}", {}, [])
            runs.append(run_id)
            for p in range(2):
                written.append(write_pipeline(s, run_id, fitted, data, name=f"{r}_{p}_pls"))
            s.complete_run(run_id, {})
    return runs, written


def test_full_copy_preserves_ids_replays_and_reruns_as_no_op(tmp_path, fitted, regression_data):
    runs, written = _source(tmp_path / "src", fitted, regression_data)
    report = export_store(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert report.copied["runs"] == 2 and report.copied["pipelines"] == 4
    X, _ = regression_data
    with WorkspaceStore(tmp_path / "src") as src, WorkspaceStore(tmp_path / "dst") as dst:
        assert dst.table_counts() == src.table_counts()
        assert dst.artifact_stats() == src.artifact_stats()
        for w in written:
            np.testing.assert_array_equal(dst.replay_chain(w["chain_id"], X),
                                          src.replay_chain(w["chain_id"], X))
            for pid in w["prediction_ids"]:
                a, b = src.get_prediction(pid, load_arrays=True), dst.get_prediction(pid, load_arrays=True)
                np.testing.assert_array_equal(a["y_pred"], b["y_pred"])
                np.testing.assert_array_equal(a["y_true"], b["y_true"])
    again = export_store(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert sum(again.copied.values()) == 0 and again.arrays_copied == 0
    assert again.skipped["runs"] == 2


def test_selected_runs_only(tmp_path, fitted, regression_data):
    runs, _ = _source(tmp_path / "src", fitted, regression_data)
    export_store(str(tmp_path / "src"), str(tmp_path / "dst"), [runs[1]])
    with WorkspaceStore(tmp_path / "dst") as dst:
        assert [r["run_id"] for r in dst.list_runs().to_dicts()] == [runs[1]]
        assert dst.table_counts()["pipelines"] == 2


def test_corrupted_source_artifact_is_refused(tmp_path, fitted, regression_data):
    _, written = _source(tmp_path / "src", fitted, regression_data)
    with WorkspaceStore(tmp_path / "src") as src:
        path = src.get_artifact_path(written[0]["scaler_id"])
    path.write_bytes(b"not the scaler")
    with pytest.raises(N4AError, match=written[0]["scaler_id"]):
        export_store(str(tmp_path / "src"), str(tmp_path / "dst"))


def test_duckdb_to_postgresql_and_back(tmp_path, fitted, regression_data):
    """A workspace moved onto PostgreSQL and back is the same workspace (ids, replay, arrays)."""
    from pg_support import postgres_database

    runs, written = _source(tmp_path / "src", fitted, regression_data)
    X, _ = regression_data
    with postgres_database() as url:
        pg = f"{url}?file_root={tmp_path / 'pg'}"
        first = export_store(str(tmp_path / "src"), pg)
        assert first.copied["pipelines"] == 4
        assert export_store(str(tmp_path / "src"), pg).copied["pipelines"] == 0
        export_store(pg, str(tmp_path / "back"))
        with WorkspaceStore(tmp_path / "src") as src, WorkspaceStore(pg) as mid, \
                WorkspaceStore(tmp_path / "back") as back:
            assert mid.backend == "postgresql"
            assert mid.table_counts() == src.table_counts() == back.table_counts()
            assert back.artifact_stats() == src.artifact_stats()
            for w in written:
                expected = src.replay_chain(w["chain_id"], X)
                np.testing.assert_array_equal(mid.replay_chain(w["chain_id"], X), expected)
                np.testing.assert_array_equal(back.replay_chain(w["chain_id"], X), expected)
                pid = w["prediction_ids"][0]
                np.testing.assert_array_equal(mid.get_prediction(pid, load_arrays=True)["y_pred"],
                                              src.get_prediction(pid, load_arrays=True)["y_pred"])


def test_store_export_command(tmp_path, fitted, regression_data):
    from click.testing import CliRunner

    from n4a_store.cli import main

    _source(tmp_path / "src", fitted, regression_data)
    result = CliRunner().invoke(main, ["store", "export", "--from", str(tmp_path / "src"),
                                       "--to", str(tmp_path / "dst"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"pipelines"' in result.output
    with WorkspaceStore(tmp_path / "dst") as dst:
        assert dst.list_pipelines().height == 4
    bad = CliRunner().invoke(main, ["store", "export", "--from", str(tmp_path / "src"),
                                    "--to", str(tmp_path / "dst2"), "--run", "nosuch"])
    assert bad.exit_code == 1 and "nosuch" in bad.output


_KILLED_TRANSFER = """
import os, signal, sys
from n4a_store.transfer import export_store

def die_after_first(run_id, done, total):
    if done == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a real crash, right after the first run committed

export_store(sys.argv[1], sys.argv[2], progress=die_after_first)
"""


def test_a_killed_transfer_completes_when_run_again(tmp_path, fitted, regression_data):
    import signal
    import subprocess
    import sys

    runs, _ = _source(tmp_path / "src", fitted, regression_data)
    done = subprocess.run([sys.executable, "-c", _KILLED_TRANSFER, str(tmp_path / "src"),
                           str(tmp_path / "dst")], timeout=120)
    assert done.returncode == -signal.SIGKILL
    with WorkspaceStore(tmp_path / "dst") as dst:
        assert dst.list_runs().height == 1  # whole runs only
        assert dst.list_pipelines().height == 2
    report = export_store(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert report.copied["runs"] == 1 and report.skipped["runs"] == 1
    with WorkspaceStore(tmp_path / "src") as src, WorkspaceStore(tmp_path / "dst") as dst:
        assert dst.table_counts() == src.table_counts()
        assert dst.artifact_stats() == src.artifact_stats()
