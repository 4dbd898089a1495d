"""Asset checks per pipeline partition: its predictions have their arrays; its chain's
artifacts exist and match their hashes.

Both checks are partitioned like the pipeline assets (Dagster's partitioned asset checks), so
a failed check names the pipeline partition, and its description names the pipeline. The
verification functions take an open store, so each sweep step records the same evaluations
(``AssetCheckEvaluation`` events for its partition) that the checks produce when run from the
UI. The run-level functions (:func:`verify_prediction_arrays`, :func:`verify_run_artifacts`)
check a whole store run.
"""


import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from n4a_store.bundles.layout import chain_artifact_ids

from .keys import (
    CHAIN,
    META_CHAIN_ID,
    META_DATASET,
    META_PREDICTION_IDS,
    META_RUN_ID,
    PIPELINE,
    PIPELINE_PARTITIONS,
    PREDICTION_ARRAYS,
    SWEEP_RUN,
)
from .lineage import MaterializationNotFoundError, latest_store_ids
from .resources import N4AStoreResource

if TYPE_CHECKING:
    from n4a_store import WorkspaceStore

PREDICTIONS_HAVE_ARRAYS = "predictions_have_arrays"
ARTIFACTS_INTACT = "artifacts_intact"
WORKSPACE_VERIFIED = "workspace_verified"
_SAMPLE = 10


@dataclass
class CheckOutcome:
    """The result of one verification: passed or not, with UI metadata."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_result(self) -> AssetCheckResult:
        """This outcome as the result of an ``@asset_check`` function."""
        return AssetCheckResult(passed=self.passed, description=self.description,
                                metadata=self.metadata, severity=AssetCheckSeverity.ERROR)

    def as_evaluation(self, asset_key: Any, check_name: str,
                      partition: str | None = None) -> AssetCheckEvaluation:
        """This outcome as an event an op can log against the asset check (one partition)."""
        return AssetCheckEvaluation(asset_key=asset_key, check_name=check_name, passed=self.passed,
                                    description=self.description, metadata=self.metadata,
                                    severity=AssetCheckSeverity.ERROR, partition=partition)


def verify_prediction_arrays(store: "WorkspaceStore", run_id: str) -> CheckOutcome:
    """Every prediction of ``run_id`` has its arrays (y_true and y_pred) in the ArrayStore."""
    predictions = store.query_predictions(run_id=run_id)
    missing: list[str] = []
    for dataset_name in sorted(set(predictions["dataset_name"].to_list())):
        ids = predictions.filter(predictions["dataset_name"] == dataset_name)["prediction_id"].to_list()
        loaded = store.load_arrays(ids)
        for pid in ids:
            rec = loaded.get(pid)
            if rec is None or rec.get("y_pred") is None or rec.get("y_true") is None:
                missing.append(pid)
    checked = predictions.height
    metadata = {META_RUN_ID: run_id, "predictions_checked": checked, "missing_arrays": len(missing)}
    if missing:
        metadata["missing_sample"] = MetadataValue.json(missing[:_SAMPLE])
    if checked == 0:
        return CheckOutcome(False, f"run {run_id} has no predictions", metadata)
    if missing:
        return CheckOutcome(False, f"{len(missing)} of {checked} predictions have no arrays", metadata)
    return CheckOutcome(True, f"all {checked} predictions have their arrays", metadata)


def run_chain_ids(store: "WorkspaceStore", run_id: str) -> list[str]:
    """Chain ids of every pipeline of ``run_id``."""
    chain_ids: list[str] = []
    for pipeline_id in store.list_pipelines(run_id=run_id)["pipeline_id"].to_list():
        chain_ids.extend(store.get_chains_for_pipeline(pipeline_id)["chain_id"].to_list())
    return chain_ids


def verify_run_artifacts(store: "WorkspaceStore", run_id: str) -> CheckOutcome:
    """Every artifact the run's chains use is cataloged, on disk, and hashes to its id."""
    chain_ids = run_chain_ids(store, run_id)
    artifact_ids: set[str] = set()
    for chain_id in chain_ids:
        chain = store.get_chain(chain_id)
        if chain is not None:
            artifact_ids.update(chain_artifact_ids(chain))
    problems = store.verify_artifacts(sorted(artifact_ids))
    total_bytes = store.artifact_stats(sorted(artifact_ids - set(problems)))["bytes"]
    metadata = {
        META_RUN_ID: run_id, "chains_checked": len(chain_ids),
        "artifacts_checked": len(artifact_ids), "artifact_bytes": total_bytes,
        "bad_artifacts": len(problems),
    }
    if problems:
        metadata["problems"] = MetadataValue.json(dict(list(problems.items())[:_SAMPLE]))
        return CheckOutcome(False, f"{len(problems)} of {len(artifact_ids)} artifacts are missing "
                                   f"or corrupted", metadata)
    if not chain_ids:
        return CheckOutcome(False, f"run {run_id} has no chains", metadata)
    return CheckOutcome(True, f"all {len(artifact_ids)} artifacts of {len(chain_ids)} chains exist "
                              f"and match their hashes", metadata)


def report_outcome(report: Any) -> CheckOutcome:
    """A :class:`~n4a_store.integrity.VerifyReport` (``store.verify()``) as a check outcome.

    The verify job, the ``workspace_verified`` asset check and the CLI's ``n4a verify``
    all read the same report.
    """
    metadata: dict[str, Any] = {
        "problems": len(report.findings),
        "repairable": sum(1 for f in report.findings if f.repairable),
        "checked": MetadataValue.json(dict(report.checked)),
        "counts": MetadataValue.json(report.counts()),
    }
    if report.findings:
        metadata["findings_sample"] = MetadataValue.json(
            [{"kind": f.kind, "subject": f.subject, "detail": f.detail} for f in report.findings[:_SAMPLE]])
    if report.repaired:
        metadata["repaired"] = MetadataValue.json(dict(report.repaired))
    if report.ok:
        return CheckOutcome(True, f"workspace verified clean ({report.checked.get('artifacts', 0)} "
                                  f"artifacts, {report.checked.get('predictions', 0)} predictions)",
                            metadata)
    counts = ", ".join(f"{n} {k}" for k, n in report.counts().items())
    return CheckOutcome(False, f"workspace has {len(report.findings)} problem(s): {counts}", metadata)


def verify_partition_arrays(store: "WorkspaceStore", prediction_ids: list[str],
                            label: str) -> CheckOutcome:
    """Every prediction of one pipeline partition has its y_true/y_pred arrays.

    ``label`` names the pipeline in the description (``<pipeline> on <dataset>``).
    """
    loaded = store.load_arrays(list(prediction_ids)) if prediction_ids else {}
    missing = [pid for pid in prediction_ids
               if loaded.get(pid) is None or loaded[pid].get("y_pred") is None
               or loaded[pid].get("y_true") is None]
    metadata: dict[str, Any] = {"pipeline": label, "predictions_checked": len(prediction_ids),
                                "missing_arrays": len(missing)}
    if missing:
        metadata["missing_sample"] = MetadataValue.json(missing[:_SAMPLE])
        return CheckOutcome(False, f"{label}: {len(missing)} of {len(prediction_ids)} "
                                   f"predictions have no arrays", metadata)
    if not prediction_ids:
        return CheckOutcome(False, f"{label}: no predictions", metadata)
    return CheckOutcome(True, f"{label}: all {len(prediction_ids)} predictions have their arrays",
                        metadata)


def verify_chain_artifacts(store: "WorkspaceStore", chain_id: str, label: str) -> CheckOutcome:
    """Every artifact of one chain is cataloged, on disk, and hashes to its id."""
    chain = store.get_chain(chain_id)
    metadata: dict[str, Any] = {"pipeline": label, "n4a/chain_id": chain_id}
    if chain is None:
        return CheckOutcome(False, f"{label}: chain {chain_id} is not in the store", metadata)
    artifact_ids = sorted(chain_artifact_ids(chain))
    problems = store.verify_artifacts(artifact_ids)
    metadata.update({"artifacts_checked": len(artifact_ids), "bad_artifacts": len(problems)})
    if problems:
        metadata["problems"] = MetadataValue.json(dict(list(problems.items())[:_SAMPLE]))
        return CheckOutcome(False, f"{label}: {len(problems)} of {len(artifact_ids)} artifacts "
                                   f"are missing or corrupted", metadata)
    return CheckOutcome(True, f"{label}: all {len(artifact_ids)} artifacts exist and match their "
                              f"hashes", metadata)


def partition_label(ids: dict[str, Any], partition_key: str) -> str:
    """``<pipeline name> on <dataset>`` from a materialization's metadata, else the key."""
    name, dataset = ids.get("pipeline_name"), ids.get(META_DATASET)
    return f"{name} on {dataset}" if name and dataset else partition_key


def _latest_ids(context: AssetCheckExecutionContext, asset_key: Any) -> dict[str, Any] | None:
    try:
        return latest_store_ids(context.instance, asset_key, context.partition_key)
    except MaterializationNotFoundError:
        return None


def _partitioned_check(**kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@asset_check`` without the preview warning of its ``partitions_def`` (Dagster 1.13)."""
    def decorate(fn: Callable[..., Any]) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return asset_check(**kwargs)(fn)

    return decorate


@_partitioned_check(asset=PREDICTION_ARRAYS, name=PREDICTIONS_HAVE_ARRAYS,
             partitions_def=PIPELINE_PARTITIONS,
             description="Every prediction of this pipeline partition has its y_true/y_pred "
                         "arrays in the ArrayStore.")
def predictions_have_arrays(context: AssetCheckExecutionContext,
                            n4a_store: N4AStoreResource) -> AssetCheckResult:
    """Check one partition's predictions against the ArrayStore."""
    ids = _latest_ids(context, PREDICTION_ARRAYS)
    if ids is None:
        return CheckOutcome(False, f"{context.partition_key}: not materialized yet").as_result()
    pipe = _latest_ids(context, PIPELINE) or {}
    label = partition_label({**ids, **pipe}, context.partition_key)
    with n4a_store.open_store() as store:
        return verify_partition_arrays(store, list(ids.get(META_PREDICTION_IDS) or []),
                                       label).as_result()


@_partitioned_check(asset=CHAIN, name=ARTIFACTS_INTACT, partitions_def=PIPELINE_PARTITIONS,
             description="Every artifact of this partition's chain exists and matches its "
                         "SHA-256.")
def artifacts_intact(context: AssetCheckExecutionContext,
                     n4a_store: N4AStoreResource) -> AssetCheckResult:
    """Check one partition's chain artifacts on disk."""
    ids = _latest_ids(context, CHAIN)
    if ids is None or not ids.get(META_CHAIN_ID):
        return CheckOutcome(False, f"{context.partition_key}: no chain materialized").as_result()
    pipe = _latest_ids(context, PIPELINE) or {}
    label = partition_label({**ids, **pipe}, context.partition_key)
    with n4a_store.open_store() as store:
        return verify_chain_artifacts(store, ids[META_CHAIN_ID], label).as_result()


def partition_check_evaluations(store: "WorkspaceStore", outcome: Any) -> list[AssetCheckEvaluation]:
    """Both checks evaluated on the partition a sweep step has just written (completed only)."""
    if outcome.status != "completed" or not outcome.chain_id:
        return []
    label = f"{outcome.pipeline_name} on {outcome.dataset_name}"
    return [
        verify_partition_arrays(store, outcome.prediction_ids, label).as_evaluation(
            PREDICTION_ARRAYS, PREDICTIONS_HAVE_ARRAYS, outcome.partition_key),
        verify_chain_artifacts(store, outcome.chain_id, label).as_evaluation(
            CHAIN, ARTIFACTS_INTACT, outcome.partition_key),
    ]


@asset_check(asset=SWEEP_RUN, name=WORKSPACE_VERIFIED,
             description="The whole workspace verifies clean (n4a verify): artifact files match "
                         "their hashes, claims equal the chains' references, predictions have "
                         "their arrays, no orphans or stray files.")
def workspace_verified(n4a_store: N4AStoreResource) -> AssetCheckResult:
    """Run ``store.verify()`` and report it."""
    with n4a_store.open_store() as store:
        return report_outcome(store.verify()).as_result()


#: ``workspace_verified`` is not attached by default: it would run on every materialization of
#: the sweep run and hash the whole workspace; add it to a Definitions' asset_checks to use it
ASSET_CHECKS = [predictions_have_arrays, artifacts_intact]
OPTIONAL_CHECKS = [workspace_verified]
CHECK_KEYS = {
    WORKSPACE_VERIFIED: AssetCheckKey(SWEEP_RUN, WORKSPACE_VERIFIED),
    PREDICTIONS_HAVE_ARRAYS: AssetCheckKey(PREDICTION_ARRAYS, PREDICTIONS_HAVE_ARRAYS),
    ARTIFACTS_INTACT: AssetCheckKey(CHAIN, ARTIFACTS_INTACT),
}
