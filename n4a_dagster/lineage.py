"""Going from a Dagster materialization to the store ids it recorded.

Every materialization this integration writes carries the store's ids in its
metadata (``n4a/run_id``, ``n4a/pipeline_id``, ``n4a/chain_id``...). The IO
managers and checks read them back from the Dagster instance, so an asset loads
the same records whether it was materialized by the sweep job's ops or by its
own asset function.
"""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from n4a_store.errors import N4AError

from .keys import META_RUN_ID, SWEEP_RUN


class MaterializationNotFoundError(N4AError, LookupError):
    """An asset (partition) has no materialization recording n4a store ids."""


def latest_store_ids(
    instance: DagsterInstance, asset_key: AssetKey, partition_key: str | None = None
) -> dict[str, Any]:
    """Metadata values of the latest materialization of ``asset_key`` (one partition if given).

    Raises:
        MaterializationNotFoundError: naming the asset and partition.
    """
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=asset_key,
            asset_partitions=[partition_key] if partition_key is not None else None,
        ),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        where = f" partition {partition_key!r}" if partition_key is not None else ""
        raise MaterializationNotFoundError(
            f"asset {asset_key.to_user_string()}{where} has not been materialized yet"
        )
    metadata = records[0].asset_materialization.metadata
    return {key: value.value for key, value in metadata.items()}


def latest_run_id(instance: DagsterInstance) -> str | None:
    """The store run id recorded by the latest ``n4a/sweep_run`` materialization, if any."""
    try:
        return latest_store_ids(instance, SWEEP_RUN).get(META_RUN_ID)
    except MaterializationNotFoundError:
        return None
