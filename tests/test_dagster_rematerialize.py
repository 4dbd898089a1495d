"""Re-materializing a pipeline partition: a failed attempt keeps the earlier good pipeline, a
successful one replaces it, the chain and arrays assets always name ids in the store, and a run
the leaderboard already closed gets its summary refreshed."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import yaml
from dagster import AssetIn, asset, build_op_context, instance_for_test, materialize

from n4a_dagster.assets import dataset, leaderboard, pipeline_partition, sweep_plan, sweep_run
from n4a_dagster.definitions import build_definitions
from n4a_dagster.jobs import train_pipeline_op
from n4a_dagster.keys import (
    CHAIN,
    PIPELINE,
    PIPELINE_PARTITIONS,
    PREDICTION_ARRAYS,
    SWEEP_RUN,
    parse_pipeline_partition,
)
from n4a_dagster.lineage import latest_store_ids
from n4a_dagster.testing import FAIL_FIT_ENV
from n4a_dagster.values import StoredChain
from n4a_store import WorkspaceStore
from n4a_store.sweep import load_dataset

DATASET_NAME = "fermentation"
pytestmark = pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated")


@asset(partitions_def=PIPELINE_PARTITIONS,
       ins={"chain": AssetIn(key=CHAIN), "arrays": AssetIn(key=PREDICTION_ARRAYS),
            "pipeline": AssetIn(key=PIPELINE)})
def partition_consumer(chain: StoredChain, arrays: pl.DataFrame, pipeline: dict) -> dict:
    """Loads the partition's chain, arrays and pipeline record through the n4a IO managers."""
    return {"chain": chain, "arrays": arrays, "pipeline": pipeline}


def _one_pipeline_config(root) -> str:
    path = root / "switch.yaml"
    path.write_text(yaml.safe_dump({
        "name": "switch", "datasets": ["chemotools:fermentation"], "task_type": "regression",
        "metric": "rmse", "cv": {"n_splits": 2, "shuffle": True, "seed": 0}, "seed": 0,
        "pipeline": [{"class": "n4a_dagster.testing.SwitchableFailPLS",
                      "params": {"n_components": 2, "scale": False}}],
    }), encoding="utf-8")
    return str(path)


def _assert_assets_name_stored_ids(instance, store: WorkspaceStore, part: str) -> None:
    """The latest chain / prediction_arrays materializations name a chain and arrays in the store."""
    chain_id = latest_store_ids(instance, CHAIN, part)["n4a/chain_id"]
    arrays = latest_store_ids(instance, PREDICTION_ARRAYS, part)
    assert store.get_chain(chain_id) is not None
    ids = list(arrays["n4a/prediction_ids"])
    assert ids and len(store.array_store.load_batch(ids, DATASET_NAME)) == len(ids)
    assert all(store.get_prediction(pid) is not None for pid in ids)


def test_rematerialization_replaces_only_after_success(tmp_path, monkeypatch):
    workspace = tmp_path / "ws"
    resources = build_definitions(workspace=str(workspace),
                                  sweep_config=_one_pipeline_config(tmp_path)).resources
    X = load_dataset("chemotools:fermentation").X[:5]
    with instance_for_test() as instance:
        def run(assets, **kwargs):
            result = materialize(assets, instance=instance, resources=resources, **kwargs)
            assert result.success
            return result

        run([sweep_plan])
        run([dataset], partition_key=DATASET_NAME)
        run([sweep_run])
        [part] = instance.get_dynamic_partitions("n4a_pipelines")
        assert part.startswith(f"{DATASET_NAME}/")
        rematerialize = lambda: run([sweep_run, pipeline_partition], selection=[pipeline_partition],  # noqa: E731
                                    partition_key=part)
        rematerialize()
        run([sweep_run, leaderboard], selection=[leaderboard])  # closes the store run
        good = latest_store_ids(instance, PIPELINE, part)
        good_id, run_id = good["n4a/pipeline_id"], good["n4a/run_id"]
        good_chain = latest_store_ids(instance, CHAIN, part)["n4a/chain_id"]

        # 1. the attempt fails: the earlier completed pipeline, chain and arrays stay
        monkeypatch.setenv(FAIL_FIT_ENV, "1")
        failed = rematerialize()
        events = failed.get_asset_materialization_events()
        assert [e.asset_key for e in events] == [PIPELINE]  # chain / arrays not re-materialized
        meta = {k: v.value for k, v in events[0].materialization.metadata.items()}
        assert meta["n4a/status"] == "failed" and "failed on purpose" in meta["error"]
        assert meta["n4a/kept_previous_pipeline_id"] == good_id == meta["n4a/pipeline_id"]
        assert meta["n4a/chain_id"] == good_chain
        assert meta["failed_attempt_pipeline_id"] not in ("", good_id)
        with WorkspaceStore(workspace) as store:
            pipelines = store.list_pipelines(run_id=run_id)
            assert pipelines.select("pipeline_id", "status").rows() == [(good_id, "completed")]
            assert store.get_pipeline(meta["failed_attempt_pipeline_id"]) is None
            _assert_assets_name_stored_ids(instance, store, part)
            summary = store.get_run(run_id)["summary"]
            assert summary["n_pipelines"] == 1 and summary["n_failed"] == 0
            assert summary["best"][DATASET_NAME]["pipeline_id"] == good_id

        # the sweep job's step re-executed in the same store run behaves the same
        key = parse_pipeline_partition(part)[1]
        with build_op_context(resources={k: resources[k] for k in ("n4a_store", "n4a_sweep")},
                              instance=instance) as context:
            out = train_pipeline_op(context, {"run_id": run_id, "partitions": [
                {"dataset": DATASET_NAME, "pipeline_key": key}]})
            logged = [e for e in context.get_events() if hasattr(e, "asset_key")]
        (outcome,) = out["outcomes"]
        assert outcome["status"] == "failed" and outcome["kept_previous_pipeline_id"] == good_id
        assert [e.asset_key for e in logged] == [PIPELINE]
        assert logged[0].metadata["n4a/pipeline_id"].value == good_id

        # downstream assets load the kept chain, its arrays and its record
        loaded = run([partition_consumer, sweep_run, pipeline_partition],
                     selection=[partition_consumer], partition_key=part
                     ).output_for_node("partition_consumer")
        monkeypatch.delenv(FAIL_FIT_ENV)
        assert loaded["chain"].chain_id == good_chain
        assert np.isfinite(loaded["chain"].predict(X)).all()
        assert loaded["arrays"].height > 0 and loaded["pipeline"]["pipeline_id"] == good_id

        # 2. the attempt succeeds: it replaces (never duplicates) the kept pipeline
        replaced = rematerialize()
        assert len(replaced.get_asset_materialization_events()) == 3
        new = latest_store_ids(instance, PIPELINE, part)
        assert new["n4a/status"] == "completed" and new["n4a/pipeline_id"] != good_id
        assert new["replaced_pipeline_ids"] == [good_id]
        assert "n4a/kept_previous_pipeline_id" not in new
        with WorkspaceStore(workspace) as store:
            assert store.list_pipelines(run_id=run_id)["pipeline_id"].to_list() == [
                new["n4a/pipeline_id"]]
            assert store.get_pipeline(good_id) is None and store.get_chain(good_chain) is None
            _assert_assets_name_stored_ids(instance, store, part)
            chain = store.get_chain(latest_store_ids(instance, CHAIN, part)["n4a/chain_id"])
            assert chain["pipeline_id"] == new["n4a/pipeline_id"]
            # 3. the run the leaderboard closed has a summary naming the new pipeline
            run_record = store.get_run(run_id)
            assert run_record["status"] == "completed"
            assert run_record["summary"]["best"][DATASET_NAME]["pipeline_id"] == new["n4a/pipeline_id"]
            assert run_record["summary"]["n_pipelines"] == 1

        # 4. a new run whose only attempts fail: one failed pipeline; the chain asset still
        # names the previous run's chain, which is still stored
        run([sweep_run])
        monkeypatch.setenv(FAIL_FIT_ENV, "1")
        rematerialize()
        rematerialize()
        monkeypatch.delenv(FAIL_FIT_ENV)
        new_run = latest_store_ids(instance, SWEEP_RUN)["n4a/run_id"]
        assert new_run != run_id
        with WorkspaceStore(workspace) as store:
            statuses = store.list_pipelines(run_id=new_run)["status"].to_list()
            assert statuses == ["failed"]
            assert store.get_run(new_run)["status"] == "running"  # not closed: left as is
            _assert_assets_name_stored_ids(instance, store, part)
