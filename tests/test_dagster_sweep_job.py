"""The n4a_sweep job: in process, and on the multiprocess executor with 4 concurrent steps."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DefaultScheduleStatus,
    build_hook_context,
    build_reconstructable_job,
    execute_job,
    instance_for_test,
)

from n4a_dagster.checks import verify_prediction_arrays, verify_run_artifacts
from n4a_dagster.definitions import build_definitions
from n4a_dagster.jobs import (
    SWEEP_JOB,
    fail_store_run_hook,
    fail_store_runs_of,
    multiprocess_run_config,
)
from n4a_dagster.keys import CHAIN, LEADERBOARD, PIPELINE, PREDICTION_ARRAYS, SWEEP_RUN
from n4a_dagster.resources import N4AStoreResource
from n4a_dagster.testing import tiny_sweep_config
from n4a_store import WorkspaceStore

pytestmark = [
    pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated"),
    pytest.mark.filterwarnings("ignore:Parameter `owners`"),  # Dagster re-creating the sensors
]

# (none | SNV) x PLS(2 | 3 | 40): 6 pipelines; 40 components cannot fit ~10 samples, so 2 fail.
N_PIPELINES, N_FAILED = 6, 2


def _materializations(instance, key: AssetKey, run_id: str) -> list:
    records = instance.fetch_materializations(key, limit=1000).records
    return [r.event_log_entry.asset_materialization for r in records
            if r.event_log_entry.run_id == run_id]


def _assert_exact_store_contents(workspace, dagster_run_id: str) -> str:
    with WorkspaceStore(workspace) as store:
        runs = store.list_runs()
        assert runs.height == 1
        run = store.get_run(runs["run_id"][0])
        assert run["status"] == "completed"
        assert run["metadata"]["dagster_run_id"] == dagster_run_id
        pipelines = store.list_pipelines(run_id=run["run_id"])
        assert pipelines.height == N_PIPELINES
        assert pipelines.filter(pl.col("status") == "failed").height == N_FAILED
        completed = pipelines.filter(pl.col("status") == "completed")["pipeline_id"].to_list()
        per_pipeline = [store.query_predictions(pipeline_id=p).height for p in completed]
        assert len(set(per_pipeline)) == 1 and per_pipeline[0] > 0
        assert store.query_predictions(run_id=run["run_id"]).height == sum(per_pipeline)
        assert sum(store.get_chains_for_pipeline(p).height for p in completed) == len(completed)
        assert verify_prediction_arrays(store, run["run_id"]).passed
        assert verify_run_artifacts(store, run["run_id"]).passed
        summary = run["summary"]
        assert (summary["n_pipelines"], summary["n_failed"]) == (N_PIPELINES, N_FAILED)
        return run["run_id"]


@pytest.mark.parametrize("per_step", [1, 4, None])
def test_sweep_job_in_process(tmp_path, monkeypatch, per_step):
    config = tiny_sweep_config(tmp_path, n_components=(2, 3, 40))
    workspace = tmp_path / "ws"
    defs = build_definitions(workspace=str(workspace), sweep_config=str(config))
    plan_config = {} if per_step is None else {"pipelines_per_step": per_step}
    if per_step is None:  # automatic: 1 slot -> 3 steps for the 6 pipelines, 2 in each
        monkeypatch.setenv("N4A_MAX_CONCURRENT", "1")
    with instance_for_test() as instance:
        result = defs.resolve_job_def(SWEEP_JOB).execute_in_process(
            instance=instance, run_config={"ops": {"plan_sweep_op": {"config": plan_config}}})
        assert result.success
        train_steps = {e.step_key for e in result.all_events
                       if e.event_type == DagsterEventType.STEP_START
                       and e.step_key.startswith("train_pipeline_op")}
        expected_size = 2 if per_step is None else per_step
        assert len(train_steps) == -(-N_PIPELINES // expected_size)  # 6 steps, 4 + 2, or 3 x 2
        store_run_id = _assert_exact_store_contents(workspace, result.run_id)
        pipelines = _materializations(instance, PIPELINE, result.run_id)
        statuses = sorted(m.metadata["n4a/status"].value for m in pipelines)
        assert statuses == ["completed"] * (N_PIPELINES - N_FAILED) + ["failed"] * N_FAILED
        assert len(_materializations(instance, CHAIN, result.run_id)) == N_PIPELINES - N_FAILED
        assert len(_materializations(instance, PREDICTION_ARRAYS, result.run_id)) == N_PIPELINES - N_FAILED
        failed = [m for m in pipelines if m.metadata["n4a/status"].value == "failed"]
        assert all("n_components" in m.metadata["error"].value for m in failed)
        [run_mat] = _materializations(instance, SWEEP_RUN, result.run_id)
        assert run_mat.metadata["n4a/run_id"].value == store_run_id
        [board] = _materializations(instance, LEADERBOARD, result.run_id)
        assert board.metadata["n_failed"].value == N_FAILED
        checks = result.get_asset_check_evaluations()  # both checks on each completed partition
        completed = {m.partition for m in pipelines if m.metadata["n4a/status"].value == "completed"}
        assert sorted(c.check_name for c in checks) == (
            ["artifacts_intact"] * len(completed) + ["predictions_have_arrays"] * len(completed))
        assert {c.partition for c in checks} == completed and all(c.passed for c in checks)
        assert result.output_for_node("finish_sweep_op")["run_id"] == store_run_id
        if per_step == 1:
            _rematerialize_one_partition(defs, instance, workspace, pipelines, store_run_id)


def _rematerialize_one_partition(defs, instance, workspace, pipelines, store_run_id):
    """The asset path replaces a partition the sweep job wrote, inside the same store run."""
    from dagster import materialize

    from n4a_dagster.assets import pipeline_partition, sweep_run

    target = next(m for m in pipelines if m.metadata["n4a/status"].value == "completed")
    result = materialize([sweep_run, pipeline_partition], selection=[pipeline_partition],
                         partition_key=target.partition, instance=instance,
                         resources=defs.resources)
    assert result.success
    [new] = [e.materialization for e in result.get_asset_materialization_events()
             if e.materialization.asset_key == PIPELINE]
    old_id = target.metadata["n4a/pipeline_id"].value
    assert new.metadata["replaced_pipeline_ids"].value == [old_id]
    with WorkspaceStore(workspace) as store:
        assert store.get_pipeline(old_id) is None
        assert store.list_pipelines(run_id=store_run_id).height == N_PIPELINES
        assert store.get_pipeline(new.metadata["n4a/pipeline_id"].value)["run_id"] == store_run_id


def test_sweep_job_multiprocess_four_concurrent_steps(tmp_path):
    config = tiny_sweep_config(tmp_path, n_components=(2, 3, 40))
    workspace = tmp_path / "ws"
    job = build_reconstructable_job(
        "n4a_dagster.jobs", "sweep_job_for",
        reconstructable_kwargs={"workspace": str(workspace), "sweep_config": str(config),
                                "max_concurrent": 4})
    with instance_for_test() as instance:
        with execute_job(job, instance=instance, run_config=multiprocess_run_config(4)) as result:
            assert result.success
            assert not [e for e in result.all_events if e.is_failure]
            dagster_run_id = result.run_id
        logs = instance.all_logs(dagster_run_id, of_type={DagsterEventType.STEP_START,
                                                          DagsterEventType.STEP_SUCCESS})
        starts = {e.step_key: e.timestamp for e in logs
                  if e.dagster_event.event_type == DagsterEventType.STEP_START}
        ends = {e.step_key: e.timestamp for e in logs
                if e.dagster_event.event_type == DagsterEventType.STEP_SUCCESS}
        pids = {e.dagster_event.pid for e in logs
                if e.dagster_event.event_type == DagsterEventType.STEP_START}
        train_steps = [k for k in starts if k.startswith("train_pipeline_op")]
        assert len(train_steps) == N_PIPELINES
        assert len(pids) == N_PIPELINES + 2  # one process per step
        overlap = max(sum(starts[o] <= starts[k] < ends[o] for o in train_steps) for k in train_steps)
        print(f"max concurrent train steps: {overlap}")
        assert overlap >= 2, f"train steps never ran concurrently (max overlap {overlap})"
        _assert_exact_store_contents(workspace, dagster_run_id)
        assert len(_materializations(instance, PIPELINE, dagster_run_id)) == N_PIPELINES


def test_failure_hook_fails_the_store_run_of_the_dagster_run(tmp_path):
    workspace = tmp_path / "ws"
    with WorkspaceStore(workspace) as store:
        mine = store.begin_run("mine", {}, [], metadata={"dagster_run_id": "dagster-1"})
        other = store.begin_run("other", {}, [], metadata={"dagster_run_id": "dagster-2"})
        assert fail_store_runs_of(store, {"dagster-x"}, "boom") == []
    resource = N4AStoreResource(workspace=str(workspace))
    with instance_for_test() as instance:
        context = build_hook_context(resources={"n4a_store": resource}, run_id="dagster-1",
                                     op_exception=RuntimeError("lock timed out"),
                                     instance=instance)
        fail_store_run_hook(context)
    with WorkspaceStore(workspace) as store:
        assert store.get_run(mine)["status"] == "failed"
        assert "lock timed out" in store.get_run(mine)["error"]
        assert store.get_run(other)["status"] == "running"


def test_definitions_configuration_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("N4A_WORKSPACE", str(tmp_path / "from_env"))
    monkeypatch.setenv("N4A_SWEEP_CONFIG", "builtin:nirs-classification")
    monkeypatch.setenv("N4A_SWEEP_CRON", "30 3 * * 1")
    monkeypatch.setenv("N4A_MAX_CONCURRENT", "6")
    defs = build_definitions()
    assert defs.resources["n4a_store"].workspace == str(tmp_path / "from_env")
    assert defs.resources["n4a_sweep"].config == "builtin:nirs-classification"
    schedule = defs.resolve_schedule_def("n4a_nightly_sweep")
    assert schedule.cron_schedule == "30 3 * * 1"
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    job = defs.resolve_job_def(SWEEP_JOB)
    assert job.executor_def.name == "n4a_executor"  # multiprocess unless run config says celery
    assert job.run_config["execution"]["config"]["multiprocess"]["max_concurrent"] == 6
    explicit = build_definitions(workspace="ws", sweep_config="s.yaml", sweep_cron="0 4 * * *")
    assert explicit.resolve_schedule_def("n4a_nightly_sweep").cron_schedule == "0 4 * * *"
    assert {j for j in ("n4a_compact", "n4a_gc", "n4a_export", "n4a_replay", "n4a_model_bundle")
            if explicit.resolve_job_def(j)} == {"n4a_compact", "n4a_gc", "n4a_export", "n4a_replay",
                                                "n4a_model_bundle"}


def test_automatic_pipelines_per_step_follows_sweep_size_and_slots(monkeypatch):
    monkeypatch.delenv("N4A_MAX_CONCURRENT", raising=False)
    from n4a_dagster.jobs import auto_pipelines_per_step, step_slots

    assert [auto_pipelines_per_step(n, 4) for n in (0, 1, 12, 13, 20, 50, 120, 121, 10_000)] == [
        1, 1, 1, 2, 2, 5, 10, 10, 10]
    assert auto_pipelines_per_step(6, 1) == 2
    assert step_slots(multiprocess_run_config(3)) == 3
    assert step_slots({"execution": {"config": {"in_process": {}}}}) == 1
    assert step_slots({}) == 4
