"""The sweep assets materialized in process: lineage, store ids, IO managers, checks, bundle."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import (
    AssetIn,
    DagsterInstance,
    asset,
    instance_for_test,
    materialize,
)

from n4a_dagster.assets import (
    dataset,
    leaderboard,
    model_bundle,
    pipeline_partition,
    sweep_plan,
    sweep_run,
)
from n4a_dagster.definitions import build_definitions
from n4a_dagster.keys import (
    CHAIN,
    LEADERBOARD,
    PIPELINE,
    PIPELINE_PARTITIONS,
    PREDICTION_ARRAYS,
    SWEEP_RUN,
    parse_pipeline_partition,
)
from n4a_dagster.lineage import latest_store_ids
from n4a_dagster.testing import tiny_sweep_config
from n4a_dagster.values import ChainToSave, PredictionsToSave, StoredChain
from n4a_store import WorkspaceStore, predict
from n4a_store.chains.trace import ExecutionTrace, TraceStep
from n4a_store.sweep import load_dataset
from pg_support import BACKENDS, postgres_database

DATASET_NAME = "fermentation"
SECRET = "n4a-test-secret"
pytestmark = [pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated"),
              pytest.mark.filterwarnings("ignore:Parameter `owners`")]


class Sweep:
    """One in-process materialization of the whole asset graph, shared by this module."""

    def __init__(self, root: Path, instance: DagsterInstance, location: str) -> None:
        self.workspace = location
        self.config = tiny_sweep_config(root)
        self.defs = build_definitions(workspace=str(self.workspace), sweep_config=str(self.config))
        self.resources = self.defs.resources
        self.instance = instance

    def materialize(self, assets, **kwargs):
        result = materialize(assets, instance=self.instance, resources=self.resources, **kwargs)
        assert result.success
        return result

    def partition(self, partition_key: str) -> str:
        assert parse_pipeline_partition(partition_key)[0] == DATASET_NAME
        return partition_key

    def store(self) -> WorkspaceStore:
        return WorkspaceStore(self.workspace)


@pytest.fixture(scope="module", params=BACKENDS)
def sweep(request, tmp_path_factory):
    """The whole graph materialized once per catalog backend (a directory, a PostgreSQL URI)."""
    root = tmp_path_factory.mktemp("dagster_assets")
    with contextlib.ExitStack() as stack:
        location = str(root / "workspace")
        if request.param == "postgresql":
            url = stack.enter_context(postgres_database())
            # trust auth ignores the password: it is there to prove it never reaches the UI
            url = url.replace("://postgres@", f"://postgres:{SECRET}@")
            location = f"{url}?file_root={location}"
        instance = stack.enter_context(instance_for_test())
        s = Sweep(root, instance, location)
        s.plan_result = s.materialize([sweep_plan])
        s.pipeline_keys = list(instance.get_dynamic_partitions("n4a_pipelines"))
        s.materialize([dataset], partition_key=DATASET_NAME)
        s.run_result = s.materialize([sweep_run])
        for key in s.pipeline_keys:
            s.materialize([sweep_run, pipeline_partition], selection=[pipeline_partition],
                          partition_key=s.partition(key))
        s.board_result = s.materialize([sweep_run, leaderboard], selection=[leaderboard])
        yield s


def _metadata(event) -> dict:
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_plan_registers_dataset_and_pipeline_partitions(sweep):
    assert sweep.instance.get_dynamic_partitions("n4a_datasets") == [DATASET_NAME]
    assert len(sweep.pipeline_keys) == 4  # (none | SNV) x PLS(2 | 3)
    meta = _metadata(sweep.plan_result.get_asset_materialization_events()[0])
    assert meta["n_pipelines"] == 4 and meta["dagster/row_count"] == 4
    assert meta["cv_folds"] == 2


def test_store_run_and_dagster_run_point_at_each_other(sweep):
    event = sweep.run_result.get_asset_materialization_events()[0]
    meta = _metadata(event)
    with sweep.store() as store:
        record = store.get_run(meta["n4a/run_id"])
    assert record["metadata"]["dagster_run_id"] == sweep.run_result.run_id
    assert meta["dagster_run_id"] == sweep.run_result.run_id
    assert record["status"] == "completed"  # the leaderboard closed it
    assert record["summary"]["n_pipelines"] == 4


def test_each_partition_is_one_pipeline_with_its_chain_and_arrays(sweep):
    run_id = latest_store_ids(sweep.instance, SWEEP_RUN)["n4a/run_id"]
    with sweep.store() as store:
        pipelines = store.list_pipelines(run_id=run_id)
        assert pipelines.height == 4
        for key in sweep.pipeline_keys:
            part = sweep.partition(key)
            pipe = latest_store_ids(sweep.instance, PIPELINE, part)
            chain = latest_store_ids(sweep.instance, CHAIN, part)
            arrays = latest_store_ids(sweep.instance, PREDICTION_ARRAYS, part)
            record = store.get_pipeline(pipe["n4a/pipeline_id"])
            assert record["expanded_config"]["key"] == parse_pipeline_partition(key)[1]
            assert record["status"] == "completed"
            assert pipe["n4a/chain_id"] == chain["n4a/chain_id"]
            assert store.get_chain(chain["n4a/chain_id"])["pipeline_id"] == record["pipeline_id"]
            assert all(Path(p).is_file() for p in chain["artifact_paths"].values())
            predicted = store.query_predictions(pipeline_id=record["pipeline_id"])
            assert sorted(arrays["n4a/prediction_ids"]) == sorted(predicted["prediction_id"])
            assert arrays["dagster/row_count"] == predicted.height > 0
            assert pipe["best_val"] == pytest.approx(record["best_val"])


def test_leaderboard_ranks_the_run(sweep):
    meta = _metadata(sweep.board_result.get_asset_materialization_events()[0])
    with sweep.store() as store:
        pipelines = store.list_pipelines(run_id=meta["n4a/run_id"])
    best = pipelines.sort("best_val").row(0, named=True)  # rmse: lower is better
    assert meta["n4a/pipeline_id"] == best["pipeline_id"]
    assert meta["best_val"] == pytest.approx(best["best_val"])
    assert meta["n_pipelines"] == 4 and meta["n_failed"] == 0
    assert meta["dagster/row_count"] == 4


def test_rematerializing_a_partition_replaces_it(sweep):
    part = sweep.partition(sweep.pipeline_keys[0])
    before = latest_store_ids(sweep.instance, PIPELINE, part)
    with sweep.store() as store:
        old_predictions = store.query_predictions(pipeline_id=before["n4a/pipeline_id"])
    result = sweep.materialize([sweep_run, pipeline_partition], selection=[pipeline_partition],
                               partition_key=part)
    after = latest_store_ids(sweep.instance, PIPELINE, part)
    assert after["n4a/pipeline_id"] != before["n4a/pipeline_id"]
    assert after["replaced_pipeline_ids"] == [before["n4a/pipeline_id"]]
    assert len(result.get_asset_materialization_events()) == 3
    with sweep.store() as store:
        run_pipelines = store.list_pipelines(run_id=after["n4a/run_id"])
        assert run_pipelines.height == 4  # replaced, not duplicated
        assert store.get_pipeline(before["n4a/pipeline_id"]) is None
        assert store.query_predictions(pipeline_id=before["n4a/pipeline_id"]).height == 0
        assert store.query_predictions(pipeline_id=after["n4a/pipeline_id"]).height == old_predictions.height
        old_ids = old_predictions["prediction_id"].to_list()
        assert store.array_store.load_batch(old_ids, DATASET_NAME) == []


def test_io_managers_load_replayable_chain_and_arrays(sweep):
    @asset(partitions_def=PIPELINE_PARTITIONS,
           ins={"chain": AssetIn(key=CHAIN), "arrays": AssetIn(key=PREDICTION_ARRAYS),
                "pipeline": AssetIn(key=PIPELINE)})
    def consumer(chain, arrays, pipeline):
        return {"chain": chain, "arrays": arrays, "pipeline": pipeline}

    @asset(partitions_def=PIPELINE_PARTITIONS,
           ins={"arrays": AssetIn(key=PREDICTION_ARRAYS, metadata={"format": "numpy"})})
    def consumer_np(arrays):
        return arrays

    part = sweep.partition(sweep.pipeline_keys[1])
    result = sweep.materialize([sweep_run, pipeline_partition, consumer, consumer_np],
                               selection=[consumer, consumer_np], partition_key=part)
    loaded = result.output_for_node("consumer")
    loaded["arrays_np"] = result.output_for_node("consumer_np")
    ds = load_dataset("chemotools:fermentation")
    chain = loaded["chain"]
    assert isinstance(chain, StoredChain)
    with sweep.store() as store:
        expected = store.replay_chain(chain.chain_id, ds.X, wavelengths=ds.wavelengths)
        predictions = store.query_predictions(pipeline_id=loaded["pipeline"]["pipeline_id"])
    np.testing.assert_allclose(chain.predict(ds.X, wavelengths=ds.wavelengths), expected)
    frame = loaded["arrays"]
    assert isinstance(frame, pl.DataFrame)
    assert sorted(frame["prediction_id"]) == sorted(predictions["prediction_id"])
    row = frame.row(0, named=True)
    assert len(row["y_true"]) == len(row["y_pred"]) > 0
    first = loaded["arrays_np"][row["prediction_id"]]
    np.testing.assert_allclose(first["y_pred"], np.asarray(row["y_pred"]))
    assert loaded["pipeline"]["status"] == "completed"


def test_chain_and_predictions_written_through_the_io_managers(sweep):
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.preprocessing import StandardScaler

    ds = load_dataset("chemotools:fermentation")
    folds = {"0": np.arange(0, 20, 2), "1": np.arange(1, 21, 2)}
    scaler = StandardScaler().fit(ds.X)
    models = {f: PLSRegression(n_components=2, scale=False).fit(scaler.transform(ds.X[idx]),
                                                                ds.y[idx])
              for f, idx in folds.items()}
    with sweep.store() as store:
        run_id = store.begin_run("manual", {}, [ds.metadata()])
        pipeline_id = store.begin_pipeline(run_id, "manual_pls", {"key": "manual"}, [],
                                           ds.name, ds.dataset_hash)
    trace = ExecutionTrace(steps=[
        TraceStep(0, "sklearn.preprocessing.StandardScaler", shared=scaler),
        TraceStep(1, "sklearn.cross_decomposition.PLSRegression", {"n_components": 2},
                  per_fold=models, is_model=True),
    ], fold_strategy="shared")

    @asset(io_manager_key="n4a_chain_io_manager")
    def manual_chain():
        return ChainToSave(pipeline_id, trace)

    @asset(io_manager_key="n4a_arrays_io_manager")
    def manual_predictions(manual_chain: StoredChain):
        records = []
        for fold, idx in folds.items():
            y_pred = manual_chain.predict(ds.X[idx])
            records.append(dict(
                model_name="PLS", model_class="sklearn.cross_decomposition.PLSRegression",
                fold_id=fold, partition="train", val_score=None, test_score=None,
                train_score=float(np.sqrt(np.mean((y_pred - ds.y[idx]) ** 2))), metric="rmse",
                task_type="regression", n_samples=len(idx), n_features=ds.X.shape[1], scores={},
                best_params={}, branch_id=None, branch_name=None, exclusion_count=0,
                exclusion_rate=0.0, y_true=ds.y[idx], y_pred=y_pred))
        return PredictionsToSave(pipeline_id, manual_chain.chain_id, ds.name, records)

    @asset
    def manual_consumer(manual_chain: StoredChain, manual_predictions: pl.DataFrame):
        return manual_chain, manual_predictions

    result = sweep.materialize([manual_chain, manual_predictions, manual_consumer])
    chain, arrays = result.output_for_node("manual_consumer")
    fold_average = np.mean([m.predict(scaler.transform(ds.X)).ravel() for m in models.values()],
                           axis=0)
    np.testing.assert_allclose(chain.predict(ds.X), fold_average, rtol=1e-10)
    with sweep.store() as store:
        stored = store.get_chain(chain.chain_id)
        predictions = store.query_predictions(pipeline_id=pipeline_id)
    assert stored["pipeline_id"] == pipeline_id and stored["fold_strategy"] == "shared"
    assert sorted(stored["fold_artifacts"]) == ["0", "1"]
    assert predictions.height == 2 and predictions["has_arrays"].all()
    assert sorted(arrays["prediction_id"]) == sorted(predictions["prediction_id"])
    np.testing.assert_allclose(arrays.sort("fold_id")["y_true"][0].to_numpy(), ds.y[folds["0"]])


def test_partition_checks_pass_then_name_the_damaged_pipeline(sweep):
    part = sweep.partition(sweep.pipeline_keys[2])
    job = sweep.defs.resolve_job_def("n4a_partition_checks")
    partition_tag = {"dagster/partition": part}  # the run's partition (checks-only job)
    result = job.execute_in_process(instance=sweep.instance, tags=partition_tag)
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 2 and all(e.passed for e in evaluations)
    assert {e.partition for e in evaluations} == {part}
    arrays = latest_store_ids(sweep.instance, PREDICTION_ARRAYS, part)
    chain_id = latest_store_ids(sweep.instance, CHAIN, part)["n4a/chain_id"]
    name = latest_store_ids(sweep.instance, PIPELINE, part)["pipeline_name"]
    with sweep.store() as store:
        store.array_store.delete([arrays["n4a/prediction_ids"][0]])
        artifact_id = store.get_chain(chain_id)["fold_artifacts"]["0"]
        artifact_path = Path(store.get_artifact_path(artifact_id))
    original = artifact_path.read_bytes()
    artifact_path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    try:
        result = job.execute_in_process(instance=sweep.instance, tags=partition_tag,
                                        raise_on_error=False)
        by_name = {e.check_name: e for e in result.get_asset_check_evaluations()}
        for evaluation in by_name.values():  # a failed check names the partition and pipeline
            assert not evaluation.passed and evaluation.partition == part
            assert evaluation.description.startswith(f"{name} on {DATASET_NAME}: ")
        assert by_name["predictions_have_arrays"].metadata["missing_arrays"].value == 1
        assert artifact_id[:12] in str(by_name["artifacts_intact"].metadata["problems"].value)
    finally:
        artifact_path.write_bytes(original)


def test_model_bundle_exports_the_best_chain(sweep, tmp_path):
    result = sweep.materialize(
        [sweep_run, model_bundle], selection=[model_bundle],
        run_config={"ops": {"n4a__model_bundle": {"config": {"output_dir": str(tmp_path)}}}})
    meta = _metadata(result.get_asset_materialization_events()[0])
    board = latest_store_ids(sweep.instance, LEADERBOARD)
    with sweep.store() as store:
        run = store.list_pipelines(run_id=meta["n4a/run_id"]).filter(pl.col("status") == "completed")
        best = run.sort("best_val").row(0, named=True)
        chain_id = store.get_chains_for_pipeline(best["pipeline_id"])["chain_id"][0]
        ds = load_dataset("chemotools:fermentation")
        expected = store.replay_chain(chain_id, ds.X, wavelengths=ds.wavelengths)
    assert meta["n4a/chain_id"] == chain_id
    assert board["n4a/run_id"] == meta["n4a/run_id"]
    bundle = Path(meta["bundle_path"])
    assert bundle.parent == tmp_path and bundle.suffix == ".n4a"
    np.testing.assert_allclose(predict(bundle, ds.X, wavelengths=ds.wavelengths), expected)


def test_no_password_in_any_materialization(sweep):
    """Every event of every run (metadata included) shows the store URI without its password."""
    texts = [str(e.dagster_event) for r in sweep.instance.get_runs()
             for e in sweep.instance.all_logs(r.run_id) if e.dagster_event is not None]
    assert texts
    assert not any(SECRET in t for t in texts)
    if "://" in sweep.workspace:
        assert any("postgres:***@" in t for t in texts)
