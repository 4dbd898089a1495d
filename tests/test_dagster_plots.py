"""Plots and parameters in the Dagster metadata of a real sweep job run."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import pytest
from dagster import instance_for_test

from n4a_dagster.definitions import build_definitions
from n4a_dagster.jobs import SWEEP_JOB
from n4a_dagster.keys import LEADERBOARD, PIPELINE
from n4a_dagster.testing import tiny_sweep_config

pytestmark = [
    pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated"),
    pytest.mark.filterwarnings("ignore:Parameter `owners`"),
]

PNG = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def _png(value) -> bytes:
    match = PNG.fullmatch(value.md_str)
    assert match, value.md_str[:80]
    data = base64.b64decode(match.group(1))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    return data


def _latest(instance, key):
    records = instance.fetch_materializations(key, limit=100).records
    return [r.event_log_entry.asset_materialization for r in records]


def test_regression_partitions_and_leaderboard_carry_plots_and_parameters(tmp_path):
    config = tiny_sweep_config(tmp_path, n_components=(2, 3))
    defs = build_definitions(workspace=str(tmp_path / "ws"), sweep_config=str(config))
    with instance_for_test() as instance:
        assert defs.resolve_job_def(SWEEP_JOB).execute_in_process(instance=instance).success
        pipelines = _latest(instance, PIPELINE)
        assert len(pipelines) == 4
        for mat in pipelines:
            meta = mat.metadata
            _png(meta["predicted_vs_true"])
            _png(meta["residuals"])
            assert meta["preprocessing"].value in ("(none)", "StandardNormalVariate")
            params = meta["parameters"].data
            assert any(p.get("n_components") in (2, 3) for p in params.values())
            assert meta["swept_choices"].data
            assert "(lower is better)" in meta["score"].value and "val rmse" in meta["score"].value
            # the ids link to the partitions of the assets that hold them
            assert meta["chain_asset"].url == (
                f"/assets/n4a/chain?view=partitions&partition={quote(mat.partition, safe='')}")
            assert meta["prediction_arrays_asset"].url.startswith("/assets/n4a/prediction_arrays?")
        board = _latest(instance, LEADERBOARD)[0].metadata
        _png(board["score_vs_parameters"])
        assert re.fullmatch(r"val rmse \d+\.\d{4}, test \d+\.\d{4} \(lower is better\)",
                            board["best_score"].value)
        table = board["leaderboard"].value.records
        keys = set(instance.get_dynamic_partitions("n4a_pipelines"))
        assert {r.data["partition"] for r in table} == keys
        assert all(r.data["metric"] == "rmse ↓" for r in table)
        assert all(len(str(r.data["val"]).split(".")[1]) <= 4 for r in table)
        assert board["best_pipeline_partition"].url.startswith("/assets/n4a/pipeline?")


def test_classification_partition_has_a_confusion_matrix(tmp_path):
    import yaml

    config = tmp_path / "clf.yaml"
    config.write_text(yaml.safe_dump({
        "name": "clf", "datasets": ["chemotools:coffee"], "task_type": "classification",
        "cv": {"n_splits": 2, "seed": 0},
        "pipeline": [{"class": "chemotools.scatter.StandardNormalVariate"},
                     {"class": "sklearn.linear_model.LogisticRegression",
                      "params": {"C": {"_or_": [1.0, 10.0]}, "max_iter": 500}}],
    }))
    defs = build_definitions(workspace=str(tmp_path / "ws"), sweep_config=str(config))
    with instance_for_test() as instance:
        assert defs.resolve_job_def(SWEEP_JOB).execute_in_process(instance=instance).success
        for mat in _latest(instance, PIPELINE):
            _png(mat.metadata["confusion_matrix"])
            assert "predicted_vs_true" not in mat.metadata
            assert "(higher is better)" in mat.metadata["score"].value


def test_plots_can_be_turned_off_for_sweeps_of_many_fast_pipelines(tmp_path, monkeypatch):
    monkeypatch.setenv("N4A_PLOTS", "0")
    config = tiny_sweep_config(tmp_path, n_components=(2,))
    defs = build_definitions(workspace=str(tmp_path / "ws"), sweep_config=str(config))
    with instance_for_test() as instance:
        assert defs.resolve_job_def(SWEEP_JOB).execute_in_process(instance=instance).success
        pipelines = _latest(instance, PIPELINE)
        assert len(pipelines) == 2
        for mat in pipelines:
            assert "predicted_vs_true" not in mat.metadata and "residuals" not in mat.metadata
            assert "(lower is better)" in mat.metadata["score"].value  # the rest is there
