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
