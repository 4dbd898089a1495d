"""Sweep config loading (YAML, JSON, dict, builtin) and validation errors naming step and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from n4a_store.errors import InvalidInputError
from n4a_store.sweep import (
    SweepConfig,
    builtin_config,
    expand_pipelines,
    list_builtin_configs,
    load_sweep_config,
)
from n4a_store.sweep.errors import SweepConfigError

PLS = "sklearn.cross_decomposition.PLSRegression"
SNV = "chemotools.scatter.StandardNormalVariate"


def base(**extra) -> dict:
    raw = {
        "name": "t",
        "datasets": ["chemotools:fermentation"],
        "cv": {"n_splits": 2, "seed": 3},
        "pipeline": [{"class": SNV}, {"class": PLS, "params": {"n_components": 2}}],
    }
    raw.update(extra)
    return raw


def test_yaml_json_and_dict_give_the_same_config(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(base()))
    (tmp_path / "s.json").write_text(json.dumps(base()))
    from_yaml = load_sweep_config(tmp_path / "s.yaml")
    from_json = load_sweep_config(str(tmp_path / "s.json"))
    from_dict = load_sweep_config(base())
    assert isinstance(from_yaml, SweepConfig)
    assert from_yaml.to_dict() == from_json.to_dict() == from_dict.to_dict()
    assert from_dict.cv.n_splits == 2 and from_dict.cv.seed == 3 and from_dict.cv.shuffle is True
    assert from_dict.metric is None and from_dict.metric_for("regression") == "rmse"
    assert from_dict.metric_for("classification") == "accuracy"
    assert load_sweep_config(from_dict.to_dict()).to_dict() == from_dict.to_dict()


def test_builtin_configs_load_and_expand():
    assert {"nirs-regression", "nirs-classification"} <= set(list_builtin_configs())
    reg = builtin_config("nirs-regression")
    assert reg.datasets[0].ref == "fermentation" and reg.task_type == "regression"
    assert len(expand_pipelines(reg)) == 20
    cls = load_sweep_config("builtin:nirs-classification")
    assert cls.datasets[0].ref == "coffee" and cls.metric == "accuracy"
    with pytest.raises(SweepConfigError, match="nirs-regression"):
        builtin_config("nope")


def test_relative_dataset_paths_resolve_against_the_config_file(tmp_path: Path):
    sub = tmp_path / "configs"
    sub.mkdir()
    raw = base(datasets=[{"path": "../data/spectra.csv", "target": "y", "test_path": "t.parquet"}])
    (sub / "s.yaml").write_text(yaml.safe_dump(raw))
    dc = load_sweep_config(sub / "s.yaml").datasets[0]
    assert Path(dc.ref).resolve() == (tmp_path / "data" / "spectra.csv").resolve()
    assert Path(dc.test_path).resolve() == (sub / "t.parquet").resolve()
    assert dc.name == "spectra" and dc.target == "y"


def _error(raw: dict) -> SweepConfigError:
    with pytest.raises(SweepConfigError) as info:
        load_sweep_config(raw)
    assert isinstance(info.value, InvalidInputError) and isinstance(info.value, ValueError)
    return info.value


def test_unknown_step_key_names_step_class_and_key():
    err = _error(base(pipeline=[{"class": SNV, "parms": {}}, {"class": PLS}]))
    assert err.step_idx == 0 and err.step_class == SNV and err.key == "parms"
    assert "pipeline step 0" in str(err) and SNV in str(err) and "'parms'" in str(err)


def test_import_error_names_the_step():
    err = _error(base(pipeline=[{"class": SNV}, {"class": "sklearn.cross_decomposition.PLSX"}]))
    assert err.step_idx == 1 and err.key == "class"
    assert "PLSX" in str(err) and "cannot import" in str(err) and "pipeline step 1" in str(err)
    err = _error(base(pipeline=[{"class": "no_such_package.Thing"}, {"class": PLS}]))
    assert err.step_idx == 0 and "no_such_package" in str(err)


def test_import_error_inside_an_alternative_names_the_step():
    err = _error(base(pipeline=[{"_or_": [{"class": SNV}, {"class": "chemotools.scatter.Nope"}]},
                                {"class": PLS}]))
    assert err.step_idx == 0 and "chemotools.scatter.Nope" in str(err)


def test_bad_generator_in_params_names_step_and_key():
    err = _error(base(pipeline=[{"class": PLS, "params": {"n_components": {"_range_": [1, 4, 0]}}}]))
    assert err.step_idx == 0 and err.step_class == PLS and err.key == "params.n_components"
    assert "step must not be 0" in str(err)


def test_model_must_be_last_and_transformers_must_transform():
    ridge = "sklearn.linear_model.Ridge"
    err = _error(base(pipeline=[{"class": ridge}, {"class": ridge}]))
    assert err.step_idx == 0 and "model in the wrong place" in str(err)
    err = _error(base(pipeline=[{"class": SNV}]))
    assert err.step_idx == 0 and "last step must be a model" in str(err)


@pytest.mark.parametrize("raw, key, needle", [
    (base(cv={"n_splits": 1}), "cv.n_splits", ">= 2"),
    (base(cv={"folds": 3}), "cv.folds", "unknown key"),
    (base(metric="auc"), "metric", "unknown metric"),
    (base(metric="accuracy", task_type="regression"), "metric", "is for classification"),
    (base(task_type="ranking"), "task_type", "must be one of"),
    (base(datasets=[]), "datasets", "at least one dataset"),
    (base(datasets=["chemotools:wheat"]), "datasets[0].chemotools", "unknown chemotools dataset"),
    (base(datasets=[{"path": "x.csv"}]), "datasets[0].target", "target column"),
    (base(datasets=["x.csv"]), "datasets[0]", "needs a mapping"),
    (base(pipeline=[]), "pipeline", "non-empty list"),
    (base(pipeline=[{"params": {}}]), "class", "needs 'class'"),
    (base(pipeline=[{"class": PLS, "params": [1, 2]}]), "params", "mapping"),
    (base(steps=[]), "steps", "unknown top-level key"),
])
def test_validation_errors_name_the_key(raw, key, needle):
    err = _error(raw)
    assert err.key == key
    assert needle in str(err)


def test_missing_file_and_unparsable_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_sweep_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: [unclosed\n")
    with pytest.raises(SweepConfigError, match="cannot parse bad.yaml"):
        load_sweep_config(bad)
