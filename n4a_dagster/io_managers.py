"""IO managers that write asset values through the n4a store and load them back from it.

* :class:`N4AChainIOManager`: a :class:`~n4a_dagster.values.ChainToSave` (fitted per-fold
  objects) becomes artifacts plus a chain row; a :class:`~n4a_dagster.values.StoredChain`
  already in the store is verified. Loading returns a replayable ``StoredChain``.
* :class:`N4APredictionArraysIOManager`: a :class:`~n4a_dagster.values.PredictionsToSave`
  is written with ``save_prediction`` (arrays through the ArrayStore); a
  :class:`~n4a_dagster.values.PredictionArraysRef` is verified. Loading returns a polars
  DataFrame, or ``{prediction_id: {name: numpy array}}`` when the input asks for numpy.
* :class:`N4ARecordIOManager`: run and pipeline records (dicts holding ``run_id`` /
  ``pipeline_id``); loading returns the current record from the store.

Where a value lives is recorded as ``n4a/...`` metadata on the materialization; loading
reads the latest materialization of the upstream asset (partition) and fetches by those ids,
so an asset loads the same way whether the sweep job's ops or its own function wrote it.
"""


from typing import Any

import numpy as np
import polars as pl
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from n4a_store.errors import InvalidInputError

from .keys import (
    META_CHAIN_ID,
    META_DATASET,
    META_PIPELINE_ID,
    META_PREDICTION_IDS,
    META_RUN_ID,
    META_WORKSPACE,
)
from .lineage import latest_store_ids
from .resources import N4AStoreResource
from .sweep_steps import arrays_metadata, chain_metadata, run_metadata
from .values import ChainToSave, PredictionArraysRef, PredictionsToSave, StoredChain

ARRAY_COLUMNS = ("y_true", "y_pred", "y_proba", "sample_indices", "weights")


def _partition_keys(context: InputContext) -> list[str | None]:
    if context.has_asset_partitions:
        return list(context.asset_partition_keys)
    return [None]


def _load_each(context: InputContext, load_one: Any) -> Any:
    """Call ``load_one(ids)`` per upstream partition; one value, or a dict keyed by partition."""
    keys = _partition_keys(context)
    values = {key: load_one(latest_store_ids(context.instance, context.asset_key, key))
              for key in keys}
    if len(keys) == 1:
        return next(iter(values.values()))
    return values


class N4ARecordIOManager(ConfigurableIOManager):
    """Run and pipeline records: kept in the store's catalog, loaded fresh from it."""

    n4a_store: N4AStoreResource

    def handle_output(self, context: OutputContext, obj: dict[str, Any] | None) -> None:
        """Check the record is in the store and record its ids on the materialization."""
        if obj is None:
            return
        if not isinstance(obj, dict) or not (obj.get("pipeline_id") or obj.get("run_id")):
            raise InvalidInputError(
                f"{context.asset_key.to_user_string()}: a record output must be a dict with "
                f"'pipeline_id' or 'run_id', got {type(obj).__name__}"
            )
        with self.n4a_store.open_store() as store:
            if obj.get("pipeline_id"):
                record = store.get_pipeline(obj["pipeline_id"])
                if record is None:
                    raise InvalidInputError(f"pipeline {obj['pipeline_id']!r} is not in the store")
                metadata = {META_PIPELINE_ID: record["pipeline_id"], META_RUN_ID: record["run_id"],
                            META_DATASET: record["dataset_name"], "status": record["status"],
                            META_WORKSPACE: store.uri}
            else:
                metadata = run_metadata(store, obj["run_id"])
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> Any:
        """The current store record (dict) of the upstream run or pipeline."""
        with self.n4a_store.open_store() as store:
            def load_one(ids: dict[str, Any]) -> dict[str, Any]:
                if ids.get(META_PIPELINE_ID):
                    record = store.get_pipeline(ids[META_PIPELINE_ID])
                elif ids.get(META_RUN_ID):
                    record = store.get_run(ids[META_RUN_ID])
                else:
                    raise InvalidInputError(
                        f"{context.asset_key.to_user_string()}: its materialization has no n4a ids")
                if record is None:
                    raise InvalidInputError(
                        f"{context.asset_key.to_user_string()}: the record it names was deleted "
                        f"from {store.uri}")
                return record

            return _load_each(context, load_one)


class N4AChainIOManager(ConfigurableIOManager):
    """Chains: fitted objects in, artifacts + chain row stored; replayable chains out."""

    n4a_store: N4AStoreResource
    artifact_format: str = "joblib"

    def handle_output(self, context: OutputContext, obj: ChainToSave | StoredChain | None) -> None:
        """Store a :class:`ChainToSave` (artifacts, then the chain row) or verify a stored chain."""
        if obj is None:
            return
        from n4a_store import ChainBuilder

        with self.n4a_store.open_store() as store:
            if isinstance(obj, ChainToSave):
                kwargs = ChainBuilder(obj.trace, store, format=self.artifact_format).build()
                chain_id = store.save_chain(obj.pipeline_id, **kwargs)
                store.flush()
            elif isinstance(obj, StoredChain):
                chain_id = obj.chain_id
            else:
                raise InvalidInputError(
                    f"{context.asset_key.to_user_string()}: a chain output must be ChainToSave or "
                    f"StoredChain, got {type(obj).__name__}")
            metadata = chain_metadata(store, chain_id)
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> Any:
        """A :class:`StoredChain` (record loaded) per upstream partition."""
        workspace = self.n4a_store.workspace  # the location, reopened as it was given
        with self.n4a_store.open_store() as store:
            def load_one(ids: dict[str, Any]) -> StoredChain:
                chain_id = ids.get(META_CHAIN_ID)
                if not chain_id:
                    raise InvalidInputError(
                        f"{context.asset_key.to_user_string()}: its materialization names no chain")
                record = store.get_chain(chain_id)
                if record is None:
                    raise InvalidInputError(f"chain {chain_id!r} is no longer in {workspace}")
                return StoredChain(chain_id=chain_id, workspace=workspace, record=record)

            return _load_each(context, load_one)


def arrays_to_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    """ArrayStore records as a polars frame: one row per prediction, arrays as list columns."""
    data: dict[str, list[Any]] = {
        "prediction_id": [r["prediction_id"] for r in records],
        "dataset_name": [r.get("dataset_name") for r in records],
        "model_name": [r.get("model_name") for r in records],
        "fold_id": [r.get("fold_id") for r in records],
        "partition": [r.get("partition") for r in records],
        "metric": [r.get("metric") for r in records],
        "val_score": [r.get("val_score") for r in records],
    }
    for name in ARRAY_COLUMNS:
        values = [r.get(name) for r in records]
        if all(v is None for v in values):
            continue
        data[name] = [None if v is None else np.asarray(v).tolist() for v in values]
    return pl.DataFrame(data, strict=False)


class N4APredictionArraysIOManager(ConfigurableIOManager):
    """Prediction arrays through the ArrayStore; loaded as polars (default) or numpy."""

    n4a_store: N4AStoreResource

    def handle_output(self, context: OutputContext,
                      obj: PredictionsToSave | PredictionArraysRef | None) -> None:
        """Write predictions with their arrays, or verify arrays already written."""
        if obj is None:
            return
        with self.n4a_store.open_store() as store:
            if isinstance(obj, PredictionsToSave):
                ids = [store.save_prediction(obj.pipeline_id, obj.chain_id, obj.dataset_name, **rec)
                       for rec in obj.records]
                store.flush()
                ref = PredictionArraysRef(dataset_name=obj.dataset_name, prediction_ids=ids)
                pipeline_id = obj.pipeline_id
                run_id = (store.get_pipeline(pipeline_id) or {}).get("run_id", "")
            elif isinstance(obj, PredictionArraysRef):
                ref, pipeline_id, run_id = obj, obj.pipeline_id, obj.run_id
            else:
                raise InvalidInputError(
                    f"{context.asset_key.to_user_string()}: a prediction-arrays output must be "
                    f"PredictionsToSave or PredictionArraysRef, got {type(obj).__name__}")
            found = list(store.load_arrays(ref.prediction_ids).values())
            if len(found) != len(ref.prediction_ids):
                raise InvalidInputError(
                    f"{context.asset_key.to_user_string()}: {len(ref.prediction_ids) - len(found)} "
                    f"of {len(ref.prediction_ids)} predictions have no arrays in the ArrayStore")
            metadata = arrays_metadata(store, run_id or "", ref.dataset_name, ref.prediction_ids,
                                       pipeline_id)
        metadata["arrays_loaded"] = MetadataValue.int(len(found))
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> Any:
        """Arrays of the upstream partition(s) as a polars DataFrame, or numpy when asked.

        Ask for numpy with ``AssetIn(metadata={"format": "numpy"})`` or a ``dict`` annotation.
        """
        want_numpy = (context.definition_metadata or {}).get("format") == "numpy" or (
            context.dagster_type is not None and context.dagster_type.typing_type is dict)
        with self.n4a_store.open_store() as store:
            def load_one(ids: dict[str, Any]) -> Any:
                prediction_ids = list(ids.get(META_PREDICTION_IDS) or [])
                loaded = store.load_arrays(prediction_ids)
                records = [loaded[p] for p in prediction_ids if p in loaded]
                if want_numpy:
                    return {r["prediction_id"]: {k: r.get(k) for k in ARRAY_COLUMNS}
                            for r in records}
                return arrays_to_frame(records)

            return _load_each(context, load_one)
