"""The sweep job's executor is chosen by run config: multiprocess, in-process or celery."""

from __future__ import annotations

import pytest
from dagster._core.system_config.objects import ResolvedRunConfig

from n4a_dagster.executors import BROKER_ENV, QUEUE_ENV, n4a_executor
from n4a_dagster.jobs import build_sweep_job, celery_run_config, run_config_for


def _executor(job, run_config):
    """The executor Dagster would create for ``job`` with ``run_config``."""
    from dagster import DagsterInstance, InitExecutorContext
    from dagster._core.definitions.job_base import InMemoryJob

    resolved = ResolvedRunConfig.build(job, run_config)
    with DagsterInstance.ephemeral() as instance:
        context = InitExecutorContext(job=InMemoryJob(job), executor_def=n4a_executor,
                                      executor_config=resolved.execution.execution_engine_config,
                                      instance=instance)
        return n4a_executor.executor_creation_fn(context)


@pytest.mark.parametrize("kind, class_name", [("multiprocess", "MultiprocessExecutor"),
                                              ("in_process", "InProcessExecutor"),
                                              ("celery", "CeleryExecutor")])
def test_each_executor_from_run_config_alone(kind, class_name):
    pytest.importorskip("dagster_celery")
    job = build_sweep_job(3)
    executor = _executor(job, run_config_for(kind, 3))
    assert type(executor).__name__ == class_name
    if kind == "multiprocess":
        assert executor._max_concurrent == 3
    if kind == "celery":  # n4a's settings: late acknowledgement, one reserved task per process
        assert executor.config_source.task_acks_late is True
        assert executor.config_source.worker_prefetch_multiplier == 1


def test_default_is_multiprocess():
    assert type(_executor(build_sweep_job(2), {})).__name__ == "MultiprocessExecutor"


def test_celery_config_names_the_broker_by_variable(monkeypatch):
    pytest.importorskip("dagster_celery")
    monkeypatch.setenv(BROKER_ENV, "pyamqp://n4a:secret@broker:5672//")
    monkeypatch.setenv(QUEUE_ENV, "lab_a")
    config = celery_run_config()["execution"]["config"]["celery"]
    assert config["broker"] == {"env": BROKER_ENV}  # no URL, no password in run storage
    assert config["config_source"] == {"task_default_queue": "lab_a"}
    executor = _executor(build_sweep_job(2), celery_run_config())
    assert executor.broker == "pyamqp://n4a:secret@broker:5672//"
    assert executor.config_source.task_default_queue == "lab_a"


def test_unknown_executor_is_refused():
    with pytest.raises(ValueError, match="unknown executor 'k8s'"):
        run_config_for("k8s", 2)


@pytest.mark.slow
def test_pool_limit_holds_the_training_steps_to_one_at_a_time(tmp_path):
    """The instance's limit on pool ``n4a_train`` overrides the executor's 4 parallel steps."""
    from dagster import DagsterEventType, build_reconstructable_job, execute_job, instance_for_test

    from n4a_dagster.jobs import TRAIN_POOL, multiprocess_run_config
    from n4a_dagster.testing import tiny_sweep_config

    config = tiny_sweep_config(tmp_path, n_components=(2,))  # 2 pipelines: (none | SNV) x PLS
    job = build_reconstructable_job(
        "n4a_dagster.jobs", "sweep_job_for",
        reconstructable_kwargs={"workspace": str(tmp_path / "ws"), "sweep_config": str(config),
                                "max_concurrent": 4})
    with instance_for_test(overrides={"concurrency": {"pools": {"granularity": "op"}}}) as instance:
        instance.event_log_storage.set_concurrency_slots(TRAIN_POOL, 1)
        with execute_job(job, instance=instance, run_config=multiprocess_run_config(4)) as result:
            assert result.success
            run_id = result.run_id
        logs = instance.all_logs(run_id, of_type={DagsterEventType.STEP_START,
                                                  DagsterEventType.STEP_SUCCESS})
    spans: dict[str, list[float]] = {}
    for entry in logs:
        if entry.step_key.startswith("train_pipeline_op"):
            spans.setdefault(entry.step_key, []).append(entry.timestamp)
    intervals = sorted(tuple(v) for v in spans.values())
    assert len(intervals) == 2
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert start >= end, f"two training steps overlapped under a pool limit of 1: {intervals}"
