"""Maintenance: compaction and gc sensors (cursors, thresholds, skips) and the compact, gc,
export and replay jobs executed in process."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import yaml
from dagster import RunConfig, RunRequest, SkipReason, build_sensor_context, instance_for_test
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from n4a_dagster.jobs import compact_job, export_job, gc_job, replay_job
from n4a_dagster.keys import EXPORTS, REPLAY_PREDICTIONS
from n4a_dagster.maintenance import CompactConfig, ExportConfig, ReplayConfig
from n4a_dagster.resources import N4AStoreResource
from n4a_dagster.sensors import build_compaction_sensor, build_gc_sensor
from n4a_dagster.testing import tiny_sweep_config
from n4a_store import WorkspaceStore, predict
from n4a_store.sweep import load_dataset, run_sweep

pytestmark = pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A workspace holding one real 4-pipeline sweep (plain runner), copied by each test."""
    root = tmp_path_factory.mktemp("dagster_maintenance")
    summary = run_sweep(tiny_sweep_config(root), root / "template")
    return root / "template", summary


@pytest.fixture()
def workspace(template, tmp_path):
    path = tmp_path / "ws"
    shutil.copytree(template[0], path)
    return path


@pytest.fixture(scope="module")
def instance():
    with instance_for_test() as inst:
        yield inst


def _tick(sensor, instance, resource, cursor=None):
    context = build_sensor_context(instance=instance, resources={"n4a_store": resource},
                                   cursor=cursor)
    return sensor(context), context.cursor


def test_compaction_sensor_thresholds_cursor_and_skips(workspace, instance, tmp_path):
    sensor = build_compaction_sensor(compact_job, tombstone_threshold=3, file_threshold=50)
    missing = N4AStoreResource(workspace=str(tmp_path / "nowhere"))
    result, _ = _tick(sensor, instance, missing)
    assert isinstance(result, SkipReason) and "nowhere" in result.skip_message
    assert not (tmp_path / "nowhere").exists()  # a sensor never creates a workspace

    resource = N4AStoreResource(workspace=str(workspace))
    result, cursor = _tick(sensor, instance, resource)
    assert isinstance(result, SkipReason) and "under thresholds" in result.skip_message
    assert json.loads(cursor)["requested"] is False

    with WorkspaceStore(workspace) as store:
        doomed = store.query_predictions(partition="val")["prediction_id"].to_list()[:3]
        for prediction_id in doomed:
            assert store.delete_prediction(prediction_id)
    result, cursor = _tick(sensor, instance, resource, cursor)
    assert isinstance(result, RunRequest)
    assert result.run_key.startswith("compact-")
    assert result.run_config["ops"]["compact_arrays_op"]["config"]["datasets"] == ["fermentation"]
    again, cursor = _tick(sensor, instance, resource, cursor)
    assert isinstance(again, SkipReason) and "already requested" in again.skip_message

    run = compact_job.execute_in_process(
        instance=instance, resources={"n4a_store": resource}, run_config=result.run_config)
    assert run.success and run.output_for_node("compact_arrays_op") == 3
    with WorkspaceStore(workspace) as store:
        assert store.array_store.stats()["fermentation"]["tombstoned"] == 0
        assert store.array_store.stats()["fermentation"]["files"] == 1
    after, _ = _tick(sensor, instance, resource, cursor)
    assert isinstance(after, SkipReason)


def test_compaction_sensor_counts_unmerged_files(workspace, instance):
    resource = N4AStoreResource(workspace=str(workspace))
    with WorkspaceStore(workspace) as store:
        for n in range(2):  # two more array files (rows no catalog record claims)
            store.array_store.save_batch([{
                "prediction_id": f"stray-{n}", "dataset_name": "fermentation",
                "y_true": np.arange(3.0), "y_pred": np.arange(3.0)}])
        files = store.array_store.stats()["fermentation"]["files"]
    assert files >= 3
    result, _ = _tick(build_compaction_sensor(compact_job, file_threshold=files), instance, resource)
    assert isinstance(result, RunRequest)
    result, _ = _tick(build_compaction_sensor(compact_job, file_threshold=files + 1), instance,
                      resource)
    assert isinstance(result, SkipReason)
    run = compact_job.execute_in_process(instance=instance, resources={"n4a_store": resource})
    assert run.success and run.output_for_node("compact_arrays_op") == 2  # the stray rows


def test_gc_sensor_and_gc_job(workspace, instance, template):
    resource = N4AStoreResource(workspace=str(workspace))
    sensor = build_gc_sensor(gc_job, unreferenced_threshold=2, bytes_threshold=10**12)
    result, cursor = _tick(sensor, instance, resource)
    assert isinstance(result, SkipReason) and "0 unreferenced" in result.skip_message
    with WorkspaceStore(workspace) as store:
        store.delete_run(template[1].run_id, delete_artifacts=False)
        unreferenced = store.artifact_stats()["unreferenced_count"]
    assert unreferenced >= 2
    result, cursor = _tick(sensor, instance, resource, cursor)
    assert isinstance(result, RunRequest) and result.run_key.startswith("gc-")
    repeat, cursor = _tick(sensor, instance, resource, cursor)
    assert isinstance(repeat, SkipReason) and "already requested" in repeat.skip_message
    run = gc_job.execute_in_process(instance=instance, resources={"n4a_store": resource},
                                    run_config=result.run_config)
    assert run.success and run.output_for_node("gc_artifacts_op") == unreferenced
    with WorkspaceStore(workspace) as store:
        assert store.artifact_stats() == {"count": 0, "bytes": 0, "unreferenced_count": 0,
                                          "unreferenced_bytes": 0}
    bytes_sensor = build_gc_sensor(gc_job, unreferenced_threshold=10**6, bytes_threshold=1)
    result, _ = _tick(bytes_sensor, instance, resource)
    assert isinstance(result, SkipReason)


def _make_garbage(workspace, template) -> None:
    """Reset ``workspace`` to the template and orphan the template run's artifacts."""
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.copytree(template[0], workspace)
    with WorkspaceStore(workspace) as store:
        store.delete_run(template[1].run_id, delete_artifacts=False)


def _make_tombstones(workspace, template) -> None:
    """Reset ``workspace`` to the template and tombstone the same three prediction rows."""
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.copytree(template[0], workspace)
    with WorkspaceStore(workspace) as store:
        doomed = store.query_predictions(partition="val").sort("prediction_id")
        for prediction_id in doomed["prediction_id"].to_list()[:3]:
            assert store.delete_prediction(prediction_id)


@pytest.mark.parametrize("kind", ["gc", "compact"])
def test_sensor_requests_a_repeated_state_again_with_a_new_run_key(kind, instance, template,
                                                                   tmp_path):
    """Dagster launches one run per run key for a sensor's lifetime: the same store state
    coming back in a later episode (e.g. the same sweep re-run) must get a new key."""
    name = f"{kind}_episodes_sensor_{tmp_path.name}"
    if kind == "gc":
        sensor = build_gc_sensor(gc_job, unreferenced_threshold=2, name=name)
        job, make_state = gc_job, _make_garbage
    else:
        sensor = build_compaction_sensor(compact_job, tombstone_threshold=3, file_threshold=50,
                                         name=name)
        job, make_state = compact_job, _make_tombstones
    workspace = tmp_path / "ws"
    resource = N4AStoreResource(workspace=str(workspace))
    cursor, keys = None, []
    for _episode in range(2):
        make_state(workspace, template)
        request, cursor = _tick(sensor, instance, resource, cursor)
        assert isinstance(request, RunRequest)
        repeat, cursor = _tick(sensor, instance, resource, cursor)  # no duplicate in an episode
        assert isinstance(repeat, SkipReason) and "already requested" in repeat.skip_message
        keys.append(request.run_key)
        run = job.execute_in_process(  # tagged as the sensor daemon tags the runs it launches
            instance=instance, resources={"n4a_store": resource}, run_config=request.run_config,
            tags={**request.tags, SENSOR_NAME_TAG: name, RUN_KEY_TAG: request.run_key})
        assert run.success
        done, cursor = _tick(sensor, instance, resource, cursor)
        assert isinstance(done, SkipReason) and "already requested" not in done.skip_message
    assert keys[0] != keys[1]
    assert keys[0].split("-")[-1] == keys[1].split("-")[-1]  # the same state both times
    # a reset cursor starts after the runs the sensor launched: still no repeated key
    make_state(workspace, template)
    request, _ = _tick(sensor, instance, resource, None)
    assert isinstance(request, RunRequest) and request.run_key not in keys


def _export(instance, resource, config: ExportConfig):
    return export_job.execute_in_process(instance=instance, resources={"n4a_store": resource},
                                         run_config=RunConfig(ops={"export_op": config}),
                                         raise_on_error=False)


@pytest.mark.parametrize("job", [export_job, replay_job])
def test_launchpad_refuses_an_empty_config(job):
    """Dagster validates the run config before launching: an empty one names what is missing."""
    from dagster import validate_run_config
    from dagster._core.errors import DagsterInvalidConfigError

    with pytest.raises(DagsterInvalidConfigError, match="Missing required config entry"):
        validate_run_config(job, {})
    op_name = job.graph.node_names()[0]
    example = {"export_op": {"subject": "latest"},
               "replay_op": {"chain_id": "c", "input_path": "new.csv"}}[op_name]
    assert validate_run_config(job, {"ops": {op_name: {"config": example}}})


def test_export_job_formats(workspace, instance, template, tmp_path):
    resource = N4AStoreResource(workspace=str(workspace))
    run_id = template[1].run_id
    best = template[1].leaderboard.row(0, named=True)
    ds = load_dataset("chemotools:fermentation")
    with WorkspaceStore(workspace) as store:
        expected = store.replay_chain(best["chain_id"], ds.X, wavelengths=ds.wavelengths)
        val_rows = store.query_predictions(partition="val").height

    result = _export(instance, resource, ExportConfig(subject=best["chain_id"]))
    bundle = result.output_for_node("export_op")
    assert bundle.endswith(".n4a")
    np.testing.assert_allclose(predict(bundle, ds.X, wavelengths=ds.wavelengths), expected)
    [mat] = result.asset_materializations_for_node("export_op")
    assert mat.asset_key == EXPORTS and mat.metadata["n4a/chain_id"].value == best["chain_id"]

    script = _export(instance, resource, ExportConfig(subject=best["chain_id"], format="n4a.py"))
    assert script.output_for_node("export_op").endswith(".n4a.py")

    run_yaml = _export(instance, resource, ExportConfig(subject=run_id))
    with open(run_yaml.output_for_node("export_op"), encoding="utf-8") as handle:
        assert run_id in json.dumps(yaml.safe_load(handle), default=str)

    target = tmp_path / "val.parquet"
    filtered = _export(instance, resource, ExportConfig(subject="predictions", prediction_filter={"partition": "val"},
                                                        output_path=str(target), with_arrays=True))
    frame = pl.read_parquet(target)
    assert frame.height == val_rows and set(frame["partition"]) == {"val"}
    assert "y_pred" in frame.columns
    [mat] = filtered.asset_materializations_for_node("export_op")
    assert mat.metadata["dagster/row_count"].value == val_rows

    bad = _export(instance, resource, ExportConfig(subject="nosuch"))
    assert not bad.success
    assert "'nosuch' is no chain, run or pipeline" in str(bad.failure_data_for_node("export_op").error)
    wrong_format = _export(instance, resource, ExportConfig(subject=run_id, format="n4a"))
    assert "cannot export a run as 'n4a'" in str(wrong_format.failure_data_for_node("export_op").error)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_replay_job_writes_predictions_file(workspace, instance, template, tmp_path, suffix):
    resource = N4AStoreResource(workspace=str(workspace))
    chain_id = template[1].leaderboard.row(0, named=True)["chain_id"]
    ds = load_dataset("chemotools:fermentation")
    spectra = pl.DataFrame({f"{w:g}": ds.X[:, i] for i, w in enumerate(ds.wavelengths)})
    spectra = spectra.with_columns(pl.Series("sample_id", [f"s{i}" for i in range(len(ds.y))]))
    source = tmp_path / f"new_spectra.{suffix}"
    spectra.write_csv(source) if suffix == "csv" else spectra.write_parquet(source)
    output = tmp_path / f"predictions.{suffix}"
    result = replay_job.execute_in_process(
        instance=instance, resources={"n4a_store": resource},
        run_config=RunConfig(ops={"replay_op": ReplayConfig(
            chain_id=chain_id, input_path=str(source), output_path=str(output))}))
    assert result.success
    written = pl.read_csv(output) if suffix == "csv" else pl.read_parquet(output)
    with WorkspaceStore(workspace) as store:
        expected = store.replay_chain(chain_id, ds.X, wavelengths=ds.wavelengths)
    assert written.columns == ["sample_id", "y_pred"]
    np.testing.assert_allclose(written["y_pred"].to_numpy(), expected)
    [mat] = result.asset_materializations_for_node("replay_op")
    assert mat.asset_key == REPLAY_PREDICTIONS
    assert mat.metadata["n4a/chain_id"].value == chain_id
    assert mat.metadata["dagster/row_count"].value == len(ds.y)


def test_replay_job_rejects_unknown_chain_and_featureless_input(workspace, instance, tmp_path):
    resource = N4AStoreResource(workspace=str(workspace))
    source = tmp_path / "ids_only.csv"
    pl.DataFrame({"sample_id": ["a", "b"]}).write_csv(source)
    result = replay_job.execute_in_process(
        instance=instance, resources={"n4a_store": resource}, raise_on_error=False,
        run_config=RunConfig(ops={"replay_op": ReplayConfig(chain_id="nope", input_path=str(source))}))
    assert "no spectral columns" in str(result.failure_data_for_node("replay_op").error)
    spectra = tmp_path / "spectra.csv"
    pl.DataFrame({"1000": [0.1, 0.2], "1002": [0.3, 0.4]}).write_csv(spectra)
    result = replay_job.execute_in_process(
        instance=instance, resources={"n4a_store": resource}, raise_on_error=False,
        run_config=RunConfig(ops={"replay_op": ReplayConfig(chain_id="nope", input_path=str(spectra))}))
    assert "chain 'nope' does not exist" in str(result.failure_data_for_node("replay_op").error)


def test_compact_job_refuses_unknown_dataset(workspace, instance):
    resource = N4AStoreResource(workspace=str(workspace))
    result = compact_job.execute_in_process(
        instance=instance, resources={"n4a_store": resource}, raise_on_error=False,
        run_config=RunConfig(ops={"compact_arrays_op": CompactConfig(datasets=["wheat"])}))
    assert "unknown dataset(s) ['wheat']" in str(result.failure_data_for_node("compact_arrays_op").error)


def test_verify_job_reports_repairs_and_the_asset_check_reads_the_same_report(workspace, instance):
    """n4a_verify fails on damage, repairs with repair=true, and workspace_verified agrees."""
    from n4a_dagster.checks import workspace_verified
    from n4a_dagster.jobs import verify_job

    with WorkspaceStore(workspace) as store:
        # a claim count that no longer equals the chains' references: repairable
        store._uow.commit(lambda s: s.execute(
            "UPDATE artifacts SET ref_count = ref_count + 5 "
            "WHERE artifact_id = (SELECT min(artifact_id) FROM artifacts)", []))
    resource = N4AStoreResource(workspace=str(workspace))
    failed = verify_job.execute_in_process(instance=instance, resources={"n4a_store": resource},
                                           raise_on_error=False)
    assert not failed.success
    check = workspace_verified(n4a_store=resource)
    assert not check.passed and "claims_mismatch" in str(check.metadata["counts"].value)
    fixed = verify_job.execute_in_process(
        instance=instance, resources={"n4a_store": resource},
        run_config={"ops": {"verify_op": {"config": {"repair": True}}}})
    assert fixed.success and fixed.output_for_node("verify_op")["ok"] is True
    assert workspace_verified(n4a_store=resource).passed

