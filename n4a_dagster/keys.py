"""Asset keys, partition definitions and metadata keys shared by the whole integration."""

from __future__ import annotations

import re

from dagster import (
    AssetKey,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

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
PIPELINES_PARTITIONS = DynamicPartitionsDefinition(name="n4a_pipelines")
DATASET_DIM = "dataset"
PIPELINE_DIM = "pipeline"
PIPELINE_RUN_PARTITIONS = MultiPartitionsDefinition(
    {DATASET_DIM: DATASETS_PARTITIONS, PIPELINE_DIM: PIPELINES_PARTITIONS}
)

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

_UNSAFE_KEY_CHARS = re.compile(r"[|,\[\]]|\.\.\.")


def pipeline_partition_key(dataset_name: str, pipeline_key: str) -> MultiPartitionKey:
    """The partition of the pipeline assets for one expanded pipeline on one dataset."""
    return MultiPartitionKey({DATASET_DIM: dataset_name, PIPELINE_DIM: pipeline_key})


def check_partition_name(kind: str, name: str) -> str:
    """Refuse names Dagster cannot use as a dimension of a multi-partition key."""
    from n4a_store.errors import InvalidInputError

    if not name or _UNSAFE_KEY_CHARS.search(name):
        raise InvalidInputError(
            f"{kind} name {name!r} cannot be a Dagster partition key "
            f"(it must be non-empty and free of '|', ',', '[', ']' and '...')"
        )
    return name


def mapping_key(dataset_index: int, dataset_name: str, pipeline_key: str) -> str:
    """A unique dynamic-output mapping key (letters, digits, underscores) for one partition."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", dataset_name)
    return f"d{dataset_index}_{safe}__{re.sub(r'[^A-Za-z0-9_]', '_', pipeline_key)}"
