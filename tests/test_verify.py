"""WorkspaceStore.verify() and `n4a verify [--repair] [--json]` on both catalogs: a clean
workspace verifies clean; each kind of damage is found; repair fixes the repairable ones,
never removes anything referenced, and a verify after it is clean of them."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_pipeline
from n4a_store import WorkspaceStore
from n4a_store.cli import main

RUN_ON_ALL_BACKENDS = True


@pytest.fixture
def written(store: WorkspaceStore, fitted: dict, regression_data: tuple) -> dict:
    run = store.begin_run("r", {}, [{"name": "wheat"}])
    first = write_pipeline(store, run, fitted, regression_data, name="a")
    second = write_pipeline(store, run, fitted, regression_data, name="b")
    return {"run": run, "a": first, "b": second}


def _sql(store: WorkspaceStore, sql: str, params: list) -> None:
    store._uow.commit(lambda s: s.execute(sql, params))


def _old(path) -> None:
    past = time.time() - 3600
    os.utime(path, (past, past))


def test_a_written_workspace_verifies_clean(store: WorkspaceStore, written: dict) -> None:
    report = store.verify()
    assert report.ok, report.summary()
    assert report.checked["artifacts"] == 4 and report.checked["chains"] == 2
    assert report.checked["predictions"] == 18 and report.checked["array_rows"] == 18
    assert report.to_dict()["ok"] is True


def test_each_kind_of_damage_is_found_and_repair_fixes_the_repairable(
        store: WorkspaceStore, written: dict) -> None:
    a = written["a"]
    files = store._artifact_files
    # claims drifted (leaked claim and a lost one)
    _sql(store, "UPDATE artifacts SET ref_count = ref_count + 3 WHERE artifact_id = ?", [a["scaler_id"]])
    model = a["model_ids"]["0"]
    _sql(store, "UPDATE artifacts SET ref_count = 0 WHERE artifact_id = ?", [model])
    # an artifact file nobody catalogs (a writer killed before COMMIT), a stray .tmp
    ghost = "ab" + "0" * 62
    ghost_path = store.workspace_path / "artifacts" / "ab" / f"{ghost}.joblib"
    ghost_path.parent.mkdir(parents=True, exist_ok=True)
    ghost_path.write_bytes(b"left by a dead writer")
    tmp = store.workspace_path / "artifacts" / "ab" / f".{ghost}.joblib.0123456789ab.tmp"
    tmp.write_bytes(b"half")
    array_tmp = store.workspace_path / "arrays" / "wheat" / ".part-x.parquet.0123456789ab.tmp"
    array_tmp.write_bytes(b"half")
    _old(array_tmp)
    fresh_tmp = store.workspace_path / "arrays" / "wheat" / ".part-y.parquet.0123456789ab.tmp"
    fresh_tmp.write_bytes(b"in flight")
    # orphaned arrays (written, never committed)
    y = np.ones(3)
    store.array_store.backend.save_batch([{"prediction_id": "orphan-1", "dataset_name": "wheat",
                                           "y_true": y, "y_pred": y}])
    report = store.verify()
    counts = report.counts()
    assert counts == {"claims_mismatch": 2, "orphan_arrays": 1, "stray_tmp": 2,
                      "unreferenced_file": 1}, report.summary()
    assert all(f.repairable for f in report.findings)
    assert str(fresh_tmp.name) not in json.dumps(report.to_dict())

    repaired = store.verify(repair=True)
    assert repaired.ok, repaired.summary()
    assert repaired.repaired["claims_recounted"] == 2
    assert repaired.repaired["unreferenced_files_removed"] == 1
    assert repaired.repaired["orphan_arrays_tombstoned"] == 1
    assert not ghost_path.exists() and not tmp.exists() and not array_tmp.exists()
    assert fresh_tmp.exists(), "a temporary file younger than the grace period was removed"
    # nothing referenced was removed: every chain replays its artifacts, arrays intact
    for pipe in (written["a"], written["b"]):
        chain = store.get_chain(pipe["chain_id"])
        for artifact_id in [*chain["fold_artifacts"].values(), *chain["shared_artifacts"].values()]:
            assert store.load_artifact(artifact_id) is not None
        for pred in pipe["prediction_ids"]:
            assert store.get_prediction(pred, load_arrays=True)["y_true"] is not None
    assert store.get_artifact(a["scaler_id"])["ref_count"] == 2
    assert store.verify().ok


def test_unrepairable_damage_stays_reported(store: WorkspaceStore, written: dict) -> None:
    a, b = written["a"], written["b"]
    model = a["model_ids"]["1"]
    path = store.get_artifact_path(model)
    path.write_bytes(path.read_bytes() + b"tampered")
    store.get_artifact_path(a["scaler_id"]).unlink()
    store.array_store.backend.delete([b["prediction_ids"][0]])
    report = store.verify()
    assert report.counts() == {"artifact_corrupt": 1, "artifact_missing": 1, "arrays_missing": 1}
    after = store.verify(repair=True)
    assert after.counts() == report.counts(), "repair removed or hid referenced data"
    assert store.get_artifact(model) is not None and store.get_artifact(a["scaler_id"]) is not None


def test_repair_collects_an_unclaimed_artifact_no_chain_names(store: WorkspaceStore, written: dict,
                                                             fitted: dict, location: str) -> None:
    pid = store.begin_pipeline(written["run"], "c", {}, [], "wheat", "h")
    leaked = store.save_artifact({"unused": 1}, "dict", "model")
    store.flush()  # stored with no chain naming it (a pipeline that died here): no claim
    store.complete_pipeline(pid, 0.1, 0.2, "rmse", 1)
    assert store.verify().ok, "an artifact no chain names holds no claim"
    assert store.get_artifact(leaked)["ref_count"] == 0
    young = store.verify(repair=True)  # saved just now: a pipeline in flight may still name it
    assert young.ok and young.repaired.get("artifacts_collected", 0) == 0
    assert store.get_artifact(leaked) is not None
    # the process that saved it may still name it in a chain: it is kept while that store is open
    assert store.verify(repair=True, grace=0).repaired["artifacts_collected"] == 0
    store.close()
    with WorkspaceStore(location) as later:
        after = later.verify(repair=True, grace=0)
        assert after.ok and after.repaired["artifacts_collected"] == 1
        assert later.get_artifact(leaked) is None


def test_cli_verify_json_and_repair_exit_codes(store: WorkspaceStore, written: dict,
                                              location: str) -> None:
    _sql(store, "UPDATE artifacts SET ref_count = 9 WHERE artifact_id = ?", [written["a"]["scaler_id"]])
    store.close()
    runner = CliRunner()
    bad = runner.invoke(main, ["verify", "-w", location, "--json"])
    assert bad.exit_code == 1, bad.output
    payload = json.loads(bad.output)
    assert payload["ok"] is False and payload["counts"] == {"claims_mismatch": 1}
    fixed = runner.invoke(main, ["verify", "-w", location, "--repair"])
    assert fixed.exit_code == 0, fixed.output
    assert "1 claims recounted" in fixed.output and "clean" in fixed.output
    again = runner.invoke(main, ["verify", "-w", location])
    assert again.exit_code == 0 and "clean" in again.output


def test_gc_reclaims_files_a_killed_writer_left_under_artifacts(store: WorkspaceStore,
                                                              written: dict) -> None:
    ghost = "cd" + "1" * 62
    shard = store.workspace_path / "artifacts" / "cd"
    shard.mkdir(parents=True, exist_ok=True)
    (shard / f"{ghost}.pkl").write_bytes(b"never committed")
    (shard / f".{ghost}.pkl.0123456789ab.tmp").write_bytes(b"half")
    assert store.gc_artifacts() == 2
    assert not shard.exists()
    assert store.verify().ok
