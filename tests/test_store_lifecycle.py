"""Runs, pipelines, chains, logs: lifecycle, queries and bad input."""

from __future__ import annotations

import hashlib

import duckdb
import pytest

RUN_ON_ALL_BACKENDS = True  # a contract module: every test runs on each catalog backend

from n4a_store import InvalidInputError, MissingParentError, SchemaVersionError, WorkspaceStore
from n4a_store.catalog.schema import SCHEMA_VERSION

from conftest import write_pipeline


def test_creates_layout(workspace):
    with WorkspaceStore(workspace) as store:
        assert (workspace / "store.duckdb").is_file()
        assert (workspace / "artifacts").is_dir()
        assert (workspace / "arrays").is_dir()
        assert store.array_store.root == workspace / "arrays"
    con = duckdb.connect(str(workspace / "store.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    con.close()
    assert {"runs", "pipelines", "chains", "predictions", "artifacts", "logs", "projects"} <= tables


def test_run_lifecycle(store):
    run_id = store.begin_run("exp", {"seed": 1}, [{"name": "wheat", "hash": "h"}],
                             metadata={"dagster_run_id": "abc"})
    run = store.get_run(run_id)
    assert run["status"] == "running" and run["config"] == {"seed": 1}
    assert run["metadata"] == {"dagster_run_id": "abc"}
    store.complete_run(run_id, {"total_pipelines": 5})
    run = store.get_run(run_id)
    assert run["status"] == "completed" and run["summary"] == {"total_pipelines": 5}
    assert run["completed_at"] is not None
    other = store.begin_run("bad", {}, [])
    store.fail_run(other, "boom")
    assert store.get_run(other)["error"] == "boom"
    assert store.list_runs(status="failed")["run_id"].to_list() == [other]
    assert store.list_runs(dataset="wheat")["run_id"].to_list() == [run_id]
    assert store.list_runs(limit=1).height == 1
    assert store.list_runs(limit=1, offset=1).height == 1
    assert store.list_runs(offset=2).height == 0
    assert store.get_run("nope") is None


def test_pipeline_lifecycle_and_logs(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [{"name": "wheat"}])
    ids = write_pipeline(store, run_id, fitted, regression_data)
    pipeline = store.get_pipeline(ids["pipeline_id"])
    assert pipeline["status"] == "completed"
    assert pipeline["best_val"] == pytest.approx(0.1)
    assert pipeline["expanded_config"] == {"steps": ["StandardScaler", "PLS"]}
    assert store.list_pipelines(run_id=run_id).height == 1
    assert store.list_pipelines(dataset_name="corn").height == 0
    log = store.get_pipeline_log(ids["pipeline_id"])
    assert log["event"].to_list() == ["fit", "fit"]
    summary = store.get_run_log_summary(run_id)
    assert summary["total_duration_ms"].to_list() == [4, 9]
    chains = store.get_chains_for_pipeline(ids["pipeline_id"])
    assert chains["chain_id"].to_list() == [ids["chain_id"]]
    chain = store.get_chain(ids["chain_id"])
    assert chain["fold_artifacts"] == ids["model_ids"]
    assert chain["steps"][0]["artifact_id"] == ids["scaler_id"]
    assert store.get_chain("missing") is None


def test_fail_pipeline_rolls_back_its_data(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [])
    kept = write_pipeline(store, run_id, fitted, regression_data, name="kept")
    failed = write_pipeline(store, run_id, fitted, regression_data, name="failed", complete=False)
    store.flush()  # part of it committed already: fail must remove committed rows too
    store.fail_pipeline(failed["pipeline_id"], "ValueError: bad params")
    pipeline = store.get_pipeline(failed["pipeline_id"])
    assert pipeline["status"] == "failed" and "bad params" in pipeline["error"]
    assert store.query_predictions(pipeline_id=failed["pipeline_id"]).height == 0
    assert store.get_chains_for_pipeline(failed["pipeline_id"]).height == 0
    assert store.get_prediction(failed["prediction_ids"][0], load_arrays=True) is None
    assert store.array_store.load(failed["prediction_ids"][0], "wheat") is None
    assert store.get_pipeline_log(failed["pipeline_id"]).height == 2  # logs explain the failure
    assert store.query_predictions(pipeline_id=kept["pipeline_id"]).height == 9
    # the kept chain still holds its claims; the failed one released its own
    assert store.get_artifact(kept["scaler_id"])["ref_count"] == 1


def test_fail_pipeline_before_flush_discards_buffer(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [])
    ids = write_pipeline(store, run_id, fitted, regression_data, complete=False)
    store.fail_pipeline(ids["pipeline_id"], "boom")
    assert store.query_predictions(run_id=run_id).height == 0
    assert store.array_store.stats() == {}


def test_missing_parents_raise_key_error(store, fitted, regression_data):
    with pytest.raises(KeyError, match="run 'nope'"):
        store.begin_pipeline("nope", "p", {}, [], "wheat", "h")
    run_id = store.begin_run("exp", {}, [])
    with pytest.raises(MissingParentError, match="pipeline 'ghost'"):
        store.save_prediction("ghost", None, "wheat", "m", "c", "0", "val", 1, 1, 1, "rmse",
                              "regression", 1, 1, {}, {}, None, None, 0, 0.0)
    with pytest.raises(KeyError, match="pipeline 'ghost'"):
        store.complete_pipeline("ghost", 0.1, 0.1, "rmse", 1)
    with pytest.raises(KeyError):
        store.complete_run("ghost", {})
    pid = store.begin_pipeline(run_id, "p", {}, [], "wheat", "h")
    with pytest.raises(KeyError, match="chain 'ghost-chain'"):
        store.save_prediction(pid, "ghost-chain", "wheat", "m", "c", "0", "val", 1, 1, 1, "rmse",
                              "regression", 1, 1, {}, {}, None, None, 0, 0.0)
    with pytest.raises(KeyError, match="artifact"):
        store.save_chain(pid, [{"step_idx": 0, "operator_class": "X", "params": {}}], 0, "X", "",
                         "per_fold", {"0": "f" * 64}, {})
    with pytest.raises(KeyError):
        store.log_step("ghost", 0, "X", "fit")
    assert store.query_predictions().height == 0
    assert store.get_chains_for_pipeline(pid).height == 0


def test_bad_arguments_are_refused(store):
    run_id = store.begin_run("exp", {}, [])
    with pytest.raises(InvalidInputError, match="run name"):
        store.begin_run("", {}, [])
    with pytest.raises(InvalidInputError, match="JSON"):
        store.begin_run("x", {"obj": object()}, [])
    pid = store.begin_pipeline(run_id, "p", {}, [], "wheat", "h")
    with pytest.raises(InvalidInputError, match="model_step_idx"):
        store.save_chain(pid, [{"step_idx": 0}], 3, "X", "", "per_fold", {}, {})
    with pytest.raises(InvalidInputError, match="log level"):
        store.log_step(pid, 0, "X", "fit", level="loud")
    with pytest.raises(InvalidInputError, match="limit"):
        store.list_runs(limit=-1)
    assert store.list_runs().height == 1  # the refused run was never written


def test_delete_run_cascades_and_counts(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [])
    ids = write_pipeline(store, run_id, fitted, regression_data)
    other = store.begin_run("other", {}, [])
    write_pipeline(store, other, fitted, regression_data)
    artifacts_before = store.artifact_stats()["count"]
    # 9 predictions + 1 chain + 2 logs + 1 pipeline + 1 run; artifacts still used by `other`
    assert store.delete_run(run_id) == 14
    assert store.get_run(run_id) is None
    assert store.get_pipeline(ids["pipeline_id"]) is None
    assert store.query_predictions(run_id=run_id).height == 0
    assert store.get_prediction(ids["prediction_ids"][0]) is None
    assert store.artifact_stats()["count"] == artifacts_before
    assert store.delete_run(run_id) == 0


def test_delete_pipeline(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [])
    ids = write_pipeline(store, run_id, fitted, regression_data)
    # 9 predictions + 1 chain + 2 logs + 1 pipeline + 4 artifacts (scaler + 3 models)
    assert store.delete_pipeline(ids["pipeline_id"]) == 17
    assert store.get_pipeline(ids["pipeline_id"]) is None
    assert store.artifact_stats()["count"] == 0
    assert not list((store.workspace_path / "artifacts").rglob("*.joblib"))
    assert store.delete_pipeline(ids["pipeline_id"]) == 0  # idempotent, like delete_run


def test_two_processes_deleting_one_pipeline_both_succeed(workspace, fitted, regression_data):
    first, second = WorkspaceStore(workspace), WorkspaceStore(workspace)
    run_id = first.begin_run("exp", {}, [])
    pid = write_pipeline(first, run_id, fitted, regression_data)["pipeline_id"]
    assert second.get_pipeline(pid) is not None  # the second store knows (and caches) it
    assert first.delete_pipeline(pid) == 17
    assert second.delete_pipeline(pid) == 0
    assert second.query_predictions().height == 0
    first.close()
    second.close()


def _catalog_digest(workspace):
    return hashlib.sha256((workspace / "store.duckdb").read_bytes()).hexdigest()


def test_newer_schema_is_refused_and_left_untouched(workspace):
    WorkspaceStore(workspace).close()
    con = duckdb.connect(str(workspace / "store.duckdb"))
    con.execute("UPDATE schema_info SET value = ? WHERE key = 'version'", [str(SCHEMA_VERSION + 1)])
    con.execute("CHECKPOINT")
    con.close()
    before = _catalog_digest(workspace)
    with pytest.raises(SchemaVersionError, match="upgrade n4a"):
        WorkspaceStore(workspace)
    assert _catalog_digest(workspace) == before


def test_older_schema_is_migrated(workspace, monkeypatch):
    from n4a_store.catalog import schema
    from n4a_store.catalog.duckdb import schema as duckdb_schema

    WorkspaceStore(workspace).close()
    calls = []

    def to_next(session):
        calls.append(1)
        session.execute("ALTER TABLE runs ADD COLUMN tags VARCHAR")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(duckdb_schema.MIGRATIONS, SCHEMA_VERSION, to_next)
    with WorkspaceStore(workspace) as store:
        assert store.list_runs().columns[-1] == "tags"
    with WorkspaceStore(workspace):
        pass
    assert calls == [1]


def test_a_pipeline_is_visible_only_once_complete_and_close_fails_one_in_flight(
        workspace, fitted, regression_data):
    store = WorkspaceStore(workspace)
    run_id = store.begin_run("exp", {}, [])
    done = write_pipeline(store, run_id, fitted, regression_data, name="done")
    ids = write_pipeline(store, run_id, fitted, regression_data, complete=False)
    assert store.get_prediction(ids["prediction_ids"][0]) is not None  # read-your-writes by id
    assert store.query_predictions(pipeline_id=ids["pipeline_id"]).height == 0  # reads commit nothing
    with WorkspaceStore(workspace) as other:
        assert other.get_prediction(done["prediction_ids"][0]) is not None
        assert other.get_prediction(ids["prediction_ids"][0]) is None  # in flight elsewhere
        assert other.get_pipeline(ids["pipeline_id"]) is None
    with pytest.warns(RuntimeWarning, match=ids["pipeline_id"]):
        store.close()
    with WorkspaceStore(workspace) as again:
        failed = again.get_pipeline(ids["pipeline_id"])
        assert failed["status"] == "failed" and "closed before complete_pipeline" in failed["error"]
        assert again.query_predictions(pipeline_id=ids["pipeline_id"]).height == 0
        assert again.get_pipeline_log(ids["pipeline_id"]).height == 2  # logs explain it
        assert again.query_predictions(pipeline_id=done["pipeline_id"]).height == 9
        # claims are the references committed chains hold: only the completed chain's
        assert again.get_artifact(done["scaler_id"])["ref_count"] == 1
    with pytest.raises(InvalidInputError, match="closed"):
        store.begin_run("late", {}, [])


def test_batch_groups_commits(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [])
    with store.batch():
        first = write_pipeline(store, run_id, fitted, regression_data, name="a")
        second = write_pipeline(store, run_id, fitted, regression_data, name="b")
        assert store._pending.predictions  # nothing committed yet
    assert store._pending.is_empty()
    assert store.get_pipeline(first["pipeline_id"])["status"] == "completed"
    assert store.query_predictions(pipeline_id=second["pipeline_id"]).height == 9


def test_pipeline_deleted_elsewhere_drops_buffer_and_claims(workspace, fitted, regression_data):
    writer = WorkspaceStore(workspace)
    other = WorkspaceStore(workspace)
    run_id = writer.begin_run("exp", {}, [])
    first = write_pipeline(writer, run_id, fitted, regression_data)
    # more rows for the committed pipeline, then another process deletes it
    chain = writer.save_chain(first["pipeline_id"], [{"step_idx": 0, "operator_class": "m"}], 0,
                              "m", "", "per_fold", {"0": first["scaler_id"]}, {})
    writer.save_prediction(first["pipeline_id"], chain, "wheat", "m", "c", "0", "val", 1, 1, 1,
                           "rmse", "regression", 1, 1, {}, {}, None, None, 0, 0.0)
    other.delete_pipeline(first["pipeline_id"], delete_artifacts=False)
    with pytest.warns(RuntimeWarning, match=first["pipeline_id"]), pytest.raises(KeyError):
        writer.complete_pipeline(first["pipeline_id"], 0.1, 0.1, "rmse", 1)
    assert writer.query_predictions().height == 0
    assert writer.artifact_stats()["unreferenced_count"] == writer.artifact_stats()["count"] == 4
    assert writer.gc_artifacts() == 4
    writer.close()
    other.close()


@pytest.mark.parametrize("batched", [False, True])
def test_run_deleted_elsewhere_drops_its_pipelines_and_keeps_the_others(location, fitted, regression_data,
                                                                        batched):
    """A run deleted by another process while a pipeline of it is buffered: that pipeline is
    dropped at commit, a pipeline of another run in the same commit is kept whole, and
    nothing is left behind."""
    writer = WorkspaceStore(location)
    other = WorkspaceStore(location)
    doomed = writer.begin_run("doomed", {}, [])
    kept_run = writer.begin_run("kept", {}, [])
    if batched:
        with pytest.warns(RuntimeWarning, match="deleted by another process"):
            with writer.batch():
                lost = write_pipeline(writer, doomed, fitted, regression_data, name="lost")
                kept = write_pipeline(writer, kept_run, fitted, regression_data, name="kept")
                other.delete_run(doomed)  # nothing of the run but its row is committed yet
    else:
        lost = write_pipeline(writer, doomed, fitted, regression_data, name="lost", complete=False)
        other.delete_run(doomed)
        with pytest.warns(RuntimeWarning, match=lost["pipeline_id"]), \
                pytest.raises(MissingParentError, match=lost["pipeline_id"]):
            writer.complete_pipeline(lost["pipeline_id"], 0.1, 0.1, "rmse", 1)
        kept = write_pipeline(writer, kept_run, fitted, regression_data, name="kept")
    assert writer.get_pipeline(lost["pipeline_id"]) is None
    assert writer.query_predictions(pipeline_id=lost["pipeline_id"]).height == 0
    assert writer.get_pipeline(kept["pipeline_id"])["status"] == "completed"
    assert writer.query_predictions(pipeline_id=kept["pipeline_id"]).height == 9
    assert all(writer.get_prediction(p, load_arrays=True)["y_pred"] is not None
               for p in kept["prediction_ids"])
    writer.close()
    other.close()
    with WorkspaceStore(location) as fresh:
        report = fresh.verify(repair=True, grace=0)
        assert fresh.verify(grace=0).ok, report.findings
        assert fresh.query_predictions().height == 9
