"""PipelineLibrary: JSON templates under <workspace>/library/templates/."""

from __future__ import annotations

import json

import pytest

from n4a_store import PipelineLibrary
from n4a_store.errors import InvalidInputError
from n4a_store.library import TemplateNotFoundError

PLS = {"steps": [{"class": "chemotools.scatter.StandardNormalVariate"},
                 {"model": "sklearn.cross_decomposition.PLSRegression", "n_components": 8}]}


@pytest.fixture()
def library(tmp_path):
    lib = PipelineLibrary(tmp_path / "ws")
    lib.save_template(PLS, "baseline_pls", category="regression",
                      description="PLS baseline with SNV", tags=["nirs", "pls"], metrics={"rmse": 0.42})
    lib.save_template({"model": "rf"}, "forest", category="regression", tags=["nirs", "trees"])
    lib.save_template({"model": "lda"}, "lda-v2.1", category="classification", tags=["nirs"])
    return lib


def test_templates_are_json_files_in_the_workspace(library, tmp_path):
    path = tmp_path / "ws" / "library" / "templates" / "baseline_pls.json"
    document = json.loads(path.read_text())
    assert document["pipeline_config"] == PLS
    assert document["metrics"] == {"rmse": 0.42} and document["tags"] == ["nirs", "pls"]
    assert library.load_template("baseline_pls") == PLS


def test_list_templates_filters_by_category_and_all_tags(library):
    assert [t["name"] for t in library.list_templates()] == ["baseline_pls", "forest", "lda-v2.1"]
    assert [t["name"] for t in library.list_templates(category="regression")] == ["baseline_pls", "forest"]
    assert [t["name"] for t in library.list_templates(tags=["nirs", "pls"])] == ["baseline_pls"]
    assert library.list_templates(category="classification", tags=["pls"]) == []
    summary = library.list_templates(tags=["pls"])[0]
    assert "pipeline_config" not in summary and summary["description"] == "PLS baseline with SNV"


def test_overwrite_delete_and_missing(library):
    library.save_template({"model": "rf", "n": 500}, "forest", category="regression")
    assert library.load_template("forest") == {"model": "rf", "n": 500}
    with pytest.raises(InvalidInputError, match="already exists"):
        library.save_template({}, "forest", overwrite=False)
    assert library.delete_template("forest") is True
    assert library.delete_template("forest") is False
    with pytest.raises(TemplateNotFoundError, match="forest"):
        library.load_template("forest")
    with pytest.raises(KeyError):
        library.load_template("forest")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 200, "con", "bad name",
                                  "dots..", "trailing.", "nul.txt", None])
def test_unsafe_names_are_refused(library, name, tmp_path):
    with pytest.raises(InvalidInputError, match="not a safe file name"):
        library.save_template({}, name)
    with pytest.raises(InvalidInputError):
        library.load_template(name)
    with pytest.raises(InvalidInputError):
        library.delete_template(name)
    assert not (tmp_path / "escape.json").exists()


@pytest.mark.parametrize("config", [{"bad": float("nan")}, {"bad": object()}])
def test_non_json_config_is_refused(library, config):
    with pytest.raises(InvalidInputError, match="not JSON-serialisable"):
        library.save_template(config, "nan_config")
    assert "nan_config" not in [t["name"] for t in library.list_templates()]
