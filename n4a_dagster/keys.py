"""Asset keys, partition definitions and metadata keys shared by the whole integration."""

from __future__ import annotations

import re

from typing import TYPE_CHECKING, Any

from dagster import AssetKey, DynamicPartitionsDefinition

if TYPE_CHECKING:
    from n4a_store.sweep import PipelineSpec

GROUP = "n4a"

SWEEP_PLAN = AssetKey(["n4a", "sweep_plan"])
DATASET = AssetKey(["n4a", "dataset"])
SWEEP_RUN = AssetKey(["n4a", "sweep_run"])
PIPELINE = AssetKey(["n4a", "pipeline"])
CHAIN = AssetKey(["n4a", "chain"])
PREDICTION_ARRAYS = AssetKey(["n4a", "prediction_arrays"])
LEADERBOARD = AssetKey(["n4a", "leaderboard"])
MODEL_BUNDLE = AssetKey(["n4a", "model_bundle"])
REPLAY_PREDICTIONS = AssetKey(["n4a", "replay_predictions"])
EXPORTS = AssetKey(["n4a", "exports"])

#: Assets written once per (dataset, pipeline) partition.
PARTITIONED_OUTPUTS = (PIPELINE, CHAIN, PREDICTION_ARRAYS)

DATASETS_PARTITIONS = DynamicPartitionsDefinition(name="n4a_datasets")
#: One partition per (dataset, expanded pipeline) that a sweep defined: keys are
#: ``<dataset>/<label>/<pipeline key>`` (see :func:`pipeline_partition_key`). A single dynamic
#: dimension, not a dataset x pipeline product, so the grid never shows cells no sweep defines.
PIPELINE_PARTITIONS = DynamicPartitionsDefinition(name="n4a_pipelines")
#: Former name, kept for code written against it.
PIPELINE_RUN_PARTITIONS = PIPELINE_PARTITIONS

# Metadata keys carrying store ids on every materialization (read back by the IO managers).
META_WORKSPACE = "n4a/workspace"
META_RUN_ID = "n4a/run_id"
META_PIPELINE_ID = "n4a/pipeline_id"
META_CHAIN_ID = "n4a/chain_id"
META_PREDICTION_IDS = "n4a/prediction_ids"
META_DATASET = "n4a/dataset"
META_STATUS = "n4a/status"
#: On a failed re-materialization: the earlier completed pipeline the partition still holds.
META_KEPT_PREVIOUS = "n4a/kept_previous_pipeline_id"

_UNSAFE_KEY_CHARS = re.compile(r"[|,/\[\]\x00-\x1f]|\.\.\.")
_NAME_PARTS = re.compile(r"^\d+_(?P<steps>.+?)(?:_[0-9a-f]{6})?$")
_LABEL_MAX = 60


def pipeline_label(spec: "PipelineSpec") -> str:
    """A short readable name of an expanded pipeline: its step abbreviations and swept scalar
    values, e.g. ``RC-SG-SS-PLSR n_components=3`` (no ``/``, no ``...``)."""
    return label_of(spec.name, spec.generator_choices)


def label_of(name: str, generator_choices: list[dict[str, Any]] | None) -> str:
    """:func:`pipeline_label` from a pipeline's name and generator choices (a stored pipeline
    row has both)."""
    match = _NAME_PARTS.match(name)
    steps = match.group("steps") if match else name
    values = []
    for choice in generator_choices or []:
        value: Any = choice.get("value")
        leaf = str(choice.get("path", "")).rsplit(".", 1)[-1]
        if isinstance(value, (bool, int, float, str)) and leaf and "[" not in leaf:
            values.append(f"{leaf}={value}")
    label = " ".join([steps, *values])
    label = re.sub(r"[/|,\[\]\x00-\x1f]", "_", label).replace("...", "..")
    return label if len(label) <= _LABEL_MAX else label[:_LABEL_MAX - 1] + "~"


def pipeline_partition_key(dataset_name: str, pipeline_key: str, label: str = "") -> str:
    """The partition of the pipeline assets for one expanded pipeline on one dataset:
    ``<dataset>/<label>/<pipeline key>`` (``<dataset>/<pipeline key>`` without a label)."""
    return f"{dataset_name}/{label}/{pipeline_key}" if label else f"{dataset_name}/{pipeline_key}"


def spec_partition_key(dataset_name: str, spec: "PipelineSpec") -> str:
    """The partition key of ``spec`` on ``dataset_name``."""
    return pipeline_partition_key(dataset_name, spec.key, pipeline_label(spec))


def parse_pipeline_partition(partition_key: str) -> tuple[str, str]:
    """``(dataset name, pipeline key)`` of a pipeline partition key.

    Raises:
        InvalidInputError: a key not made by :func:`pipeline_partition_key`.
    """
    from n4a_store.errors import InvalidInputError

    parts = partition_key.split("/")
    if len(parts) < 2 or not parts[0] or not parts[-1]:
        raise InvalidInputError(
            f"{partition_key!r} is not an n4a pipeline partition (<dataset>/<label>/<pipeline key>)")
    return parts[0], parts[-1]


def check_partition_name(kind: str, name: str) -> str:
    """Refuse names Dagster (or the pipeline partition keys) cannot hold."""
    from n4a_store.errors import InvalidInputError

    if not name or _UNSAFE_KEY_CHARS.search(name):
        raise InvalidInputError(
            f"{kind} name {name!r} cannot be a Dagster partition key "
            f"(it must be non-empty and free of '/', '|', ',', '[', ']', control characters "
            f"and '...')"
        )
    return name


def mapping_key(dataset_index: int, dataset_name: str, pipeline_key: str) -> str:
    """A unique dynamic-output mapping key (letters, digits, underscores) for one partition."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", dataset_name)
    return f"d{dataset_index}_{safe}__{re.sub(r'[^A-Za-z0-9_]', '_', pipeline_key)}"
