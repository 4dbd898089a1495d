"""Generator keys: _or_ alternatives, _range_ ranges, nesting, cartesian products, choices."""

from __future__ import annotations

import pytest

from n4a_store.sweep import expand_pipelines, load_sweep_config
from n4a_store.sweep.errors import SweepConfigError
from n4a_store.sweep.generators import GeneratorError, count_expansions, expand, range_values

PLS = "sklearn.cross_decomposition.PLSRegression"
SNV = "chemotools.scatter.StandardNormalVariate"
SG = "chemotools.derivative.SavitzkyGolay"


def cfg(pipeline: list, **extra) -> dict:
    return {"datasets": ["chemotools:fermentation"], "pipeline": pipeline, **extra}


def test_range_stop_is_inclusive_when_reached():
    assert range_values([2, 10, 2]) == [2, 4, 6, 8, 10]
    assert range_values([2, 9, 2]) == [2, 4, 6, 8]
    assert range_values([1, 3]) == [1, 2, 3]
    assert range_values([5, 1, -2]) == [5, 3, 1]
    assert range_values({"start": 0, "stop": 1, "step": 1}) == [0, 1]


def test_float_range_is_rounded_and_includes_stop():
    assert range_values([0.1, 0.3, 0.1]) == [0.1, 0.2, 0.3]
    values = range_values([0, 1, 0.25])
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(isinstance(v, float) for v in values)


@pytest.mark.parametrize("spec, needle", [
    ([1, 5, 0], "must not be 0"),
    ([5, 1, 1], "empty"),
    ([1], "[start, stop]"),
    (["a", 2], "numbers"),
    ([True, 3], "numbers"),
    ({"start": 1}, "start, stop"),
])
def test_bad_ranges_are_refused(spec, needle):
    with pytest.raises(GeneratorError) as info:
        range_values(spec, "pipeline[0].params.n")
    assert needle in str(info.value)
    assert "pipeline[0].params.n" in str(info.value)


def test_cartesian_product_in_document_order_with_choices():
    node = {"a": {"_or_": ["x", "y"]}, "b": {"_range_": [1, 3]}}
    assert count_expansions(node) == 6
    out = expand(node, "p")
    assert [v for v, _ in out] == [
        {"a": "x", "b": 1}, {"a": "x", "b": 2}, {"a": "x", "b": 3},
        {"a": "y", "b": 1}, {"a": "y", "b": 2}, {"a": "y", "b": 3},
    ]
    value, choices = out[4]
    assert choices == [
        {"path": "p.a", "generator": "_or_", "index": 1, "value": "y"},
        {"path": "p.b", "generator": "_range_", "index": 1, "value": 2},
    ]


def test_nested_generators_inside_alternatives():
    node = {"_or_": [{"k": {"_range_": [1, 2]}}, "plain"]}
    out = expand(node, "p")
    assert [v for v, _ in out] == [{"k": 1}, {"k": 2}, "plain"]
    assert out[1][1] == [
        {"path": "p", "generator": "_or_", "index": 0, "value": {"k": 2}},
        {"path": "p._or_[0].k", "generator": "_range_", "index": 1, "value": 2},
    ]
    assert count_expansions(node) == 3


def test_generator_dict_must_hold_nothing_else():
    with pytest.raises(GeneratorError, match="nothing else"):
        expand({"x": {"_or_": [1, 2], "extra": 3}}, "p")
    with pytest.raises(GeneratorError, match="non-empty list"):
        expand({"x": {"_or_": []}}, "p")


def test_step_level_alternatives_null_and_lists_are_spliced():
    specs = expand_pipelines(load_sweep_config(cfg([
        {"_or_": [None, {"class": SNV}, [{"class": SNV}, {"class": SG, "params": {"window_length": 5}}]]},
        {"class": PLS, "params": {"n_components": {"_range_": [1, 2]}}},
    ])))
    assert len(specs) == 6
    assert [[s.short_name for s in spec.steps] for spec in specs[::2]] == [
        ["PLSRegression"], ["StandardNormalVariate", "PLSRegression"],
        ["StandardNormalVariate", "SavitzkyGolay", "PLSRegression"],
    ]
    assert specs[5].steps[-1].params == {"n_components": 2}
    assert specs[5].preprocessings == "StandardNormalVariate>SavitzkyGolay"
    assert specs[5].generator_choices[0]["index"] == 2
    assert specs[5].generator_choices[1] == {
        "path": "pipeline[1].params.n_components", "generator": "_range_", "index": 1, "value": 2}
    assert specs[5].expanded_config["pipeline"][1] == {"class": SG, "params": {"window_length": 5}}


def test_keys_are_stable_unique_and_duplicates_dropped():
    raw = cfg([{"_or_": [{"class": SNV}, {"class": SNV}, {"class": SG}]}, {"class": PLS}])
    first = expand_pipelines(load_sweep_config(raw))
    again = expand_pipelines(load_sweep_config(raw))
    assert len(first) == 2  # the two identical SNV alternatives give one pipeline
    assert [s.key for s in first] == [s.key for s in again]
    assert len({s.key for s in first}) == 2
    assert all(len(s.key) == 16 and s.key.isalnum() for s in first)
    assert first[0].name.startswith("0001_") and first[0].name.endswith(first[0].key[:6])


def test_class_paths_can_be_generated():
    specs = expand_pipelines(load_sweep_config(cfg([
        {"class": {"_or_": [SNV, SG]}},
        {"class": PLS},
    ])))
    assert [s.steps[0].class_path for s in specs] == [SNV, SG]


def test_expansion_limit():
    raw = cfg([{"class": PLS, "params": {"n_components": {"_range_": [1, 50]}}}], max_pipelines=10)
    with pytest.raises(SweepConfigError, match="expands to 50 pipelines"):
        load_sweep_config(raw)
