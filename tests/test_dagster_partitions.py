"""Partitions without phantoms, that follow the store: two sweeps on two datasets register
exactly their pipelines (readable keys), the leaderboard is fresh, deleting a run from the
store removes its partitions, and a sweep run outside Dagster is registered and reported."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from dagster import (
    DeleteDynamicPartitionsRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from n4a_dagster.definitions import build_definitions
from n4a_dagster.jobs import SWEEP_JOB
from n4a_dagster.keys import (
    CHAIN,
    LEADERBOARD,
    PIPELINE,
    PREDICTION_ARRAYS,
    SWEEP_RUN,
    parse_pipeline_partition,
)
from n4a_dagster.lineage import latest_store_ids
from n4a_dagster.testing import apply_sensor_result, tiny_classification_config, tiny_sweep_config
from n4a_store import WorkspaceStore
from n4a_store.cli import main as n4a_cli

pytestmark = [
    pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated"),
    pytest.mark.filterwarnings("ignore:Parameter `owners`"),
]


def _registered(instance, name="n4a_pipelines") -> set[str]:
    return set(instance.get_dynamic_partitions(name))


def _materialized(instance) -> dict[str, str]:
    """Latest pipeline id recorded per pipeline partition."""
    out: dict[str, str] = {}
    for record in reversed(instance.fetch_materializations(PIPELINE, limit=1000).records):
        mat = record.asset_materialization
        out[mat.partition] = mat.metadata["n4a/pipeline_id"].value
    return out


def _daemon_ticks(instance, n: int) -> list:
    """``n`` ticks of the real sensor daemon on the code location (a gRPC code server loading
    ``n4a_dagster.definitions`` from this environment); returns the sensor's ticks."""
    import logging
    import time

    from dagster._core.scheduler.instigation import InstigatorType
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    target = ModuleTarget(module_name="n4a_dagster.definitions", attribute="defs",
                          working_directory=None, location_name="n4a")
    with create_test_daemon_workspace_context(target, instance) as context:
        for i in range(n):
            if i:
                time.sleep(1.2)  # N4A_PARTITIONS_INTERVAL=1
            list(execute_sensor_iteration(context, logging.getLogger("n4a-test"), None, None))
    [state] = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
               if s.name == "n4a_partitions_sensor"]
    return instance.get_ticks(state.instigator_origin_id, state.selector_id)


def _tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("n4a_partitions_sensor")
    with build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as ctx:
        result = sensor(ctx)
    if isinstance(result, SensorResult):
        apply_sensor_result(instance, result)
    return result


def test_partitions_name_only_real_pipelines_and_follow_the_store(tmp_path, monkeypatch):
    workspace = str(tmp_path / "ws")
    regression = tiny_sweep_config(tmp_path, n_components=(3,))  # fermentation: 2 pipelines
    classification = tiny_classification_config(tmp_path)    # coffee: 2 pipelines
    with instance_for_test() as instance:
        for config in (regression, classification):
            defs = build_definitions(workspace=workspace, sweep_config=str(config))
            assert defs.resolve_job_def(SWEEP_JOB).execute_in_process(instance=instance).success
        # exactly the 6 pipelines, each materialized: no cell that no sweep defines
        keys = _registered(instance)
        materialized = _materialized(instance)
        assert len(keys) == 4 and set(materialized) == keys
        assert sorted(k.split("/")[0] for k in keys) == ["coffee"] * 2 + ["fermentation"] * 2
        assert any(k.startswith("fermentation/SNV-PLSR n_components=3/") for k in keys), keys
        assert any(k.startswith("coffee/SNV-LR C=10.0/") for k in keys), keys
        # the leaderboard's staleness is Dagster's own verdict: fresh after the second sweep
        resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(),
                                              LoadingContextForTest(instance))
        assert resolver.get_status(LEADERBOARD) == StaleStatus.FRESH
        assert all(resolver.get_status(PIPELINE, k) != StaleStatus.MISSING for k in keys)
        for key in keys:  # the first sweep's partitions belong to an earlier store run
            expected = StaleStatus.FRESH if key.startswith("coffee/") else StaleStatus.STALE
            assert resolver.get_status(PIPELINE, key) == expected, key
            if expected == StaleStatus.STALE:
                [cause] = resolver.get_stale_root_causes(PIPELINE, key)
                assert cause.asset_key == SWEEP_RUN

        # nothing to do while the partitions match the store
        assert isinstance(_tick(defs, instance), SkipReason)

        # delete the regression run with the CLI: its 2 partitions and its dataset go
        with WorkspaceStore(workspace) as store:
            runs = store.list_runs().filter(name="tiny")
            [run_id] = runs["run_id"].to_list()
        done = CliRunner().invoke(n4a_cli, ["delete", run_id[:8], "-w", workspace])
        assert done.exit_code == 0, done.output
        assert "2 pipeline(s)" in done.stdout
        result = _tick(defs, instance)
        [request] = [r for r in result.dynamic_partitions_requests
                     if isinstance(r, DeleteDynamicPartitionsRequest)
                     and r.partitions_def_name == "n4a_pipelines"]
        assert sorted(request.partition_keys) == sorted(k for k in keys if k.startswith("ferm"))
        assert _registered(instance) == {k for k in keys if k.startswith("coffee/")}
        assert _registered(instance, "n4a_datasets") == {"coffee"}

        # a sweep run outside Dagster: registered on one tick, reported on the next, by the
        # sensor daemon itself (the code location loaded in a code server, as in a deployment)
        outside = CliRunner().invoke(n4a_cli, ["sweep", str(regression), "-w", workspace,
                                               "--no-progress"])
        assert outside.exit_code == 0, outside.output
        monkeypatch.setenv("N4A_WORKSPACE", workspace)
        monkeypatch.setenv("N4A_SWEEP_CONFIG", str(classification))
        monkeypatch.setenv("N4A_PARTITIONS_INTERVAL", "1")
        ticks = _daemon_ticks(instance, 3)
        assert len(ticks) == 3 and not [t for t in ticks if t.error], [t.error for t in ticks]
        assert len(_registered(instance)) == 4
        with WorkspaceStore(workspace) as store:
            [outside_run] = store.list_runs().filter(name="tiny")["run_id"].to_list()
            stored = {p["pipeline_id"]: p for p in store.list_pipelines(run_id=outside_run).to_dicts()}
        reported = {k: v for k, v in _materialized(instance).items() if k.startswith("ferm")}
        assert set(reported.values()) == set(stored)
        for key, pipeline_id in reported.items():
            config = stored[pipeline_id]["expanded_config"]
            config = json.loads(config) if isinstance(config, str) else config
            assert parse_pipeline_partition(key)[1] == config["key"]
            chain = latest_store_ids(instance, CHAIN, key)  # chain and arrays reported too
            arrays = latest_store_ids(instance, PREDICTION_ARRAYS, key)
            assert chain["n4a/pipeline_id"] == arrays["n4a/pipeline_id"] == pipeline_id
            with WorkspaceStore(workspace) as store:
                assert store.get_chain(chain["n4a/chain_id"])["pipeline_id"] == pipeline_id
                assert len(arrays["n4a/prediction_ids"]) == store.query_predictions(
                    pipeline_id=pipeline_id).height > 0
        assert ticks[0].status.value == "SKIPPED"  # latest first: the third had nothing to do
