"""Asset checks: every prediction has its arrays; the run's artifacts exist and match their hashes.

The verification functions take an open store and a run id, so the sweep job's
last op can record the same evaluations (as ``AssetCheckEvaluation`` events)
that the asset checks produce when run from the UI.
"""


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

from .keys import META_RUN_ID, PREDICTION_ARRAYS, SWEEP_RUN
from .lineage import latest_run_id
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

    def as_evaluation(self, asset_key: Any, check_name: str) -> AssetCheckEvaluation:
        """This outcome as an event an op can log against the asset check."""
        return AssetCheckEvaluation(asset_key=asset_key, check_name=check_name, passed=self.passed,
                                    description=self.description, metadata=self.metadata,
                                    severity=AssetCheckSeverity.ERROR)


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


def _current_run_id(context: AssetCheckExecutionContext, store: "WorkspaceStore") -> str | None:
    run_id = latest_run_id(context.instance)
    if run_id is None:
        runs = store.list_runs(limit=1)
        run_id = runs["run_id"][0] if runs.height else None
    return run_id


@asset_check(asset=PREDICTION_ARRAYS, name=PREDICTIONS_HAVE_ARRAYS,
             description="Every prediction of the latest sweep run has its y_true/y_pred arrays.")
def predictions_have_arrays(context: AssetCheckExecutionContext,
                            n4a_store: N4AStoreResource) -> AssetCheckResult:
    """Check the latest sweep run's predictions against the ArrayStore."""
    with n4a_store.open_store() as store:
        run_id = _current_run_id(context, store)
        if run_id is None:
            return CheckOutcome(False, "the workspace has no run yet").as_result()
        return verify_prediction_arrays(store, run_id).as_result()


@asset_check(asset=SWEEP_RUN, name=ARTIFACTS_INTACT,
             description="Every artifact of the latest sweep run's chains exists and matches its "
                         "SHA-256.")
def artifacts_intact(context: AssetCheckExecutionContext,
                     n4a_store: N4AStoreResource) -> AssetCheckResult:
    """Check the latest sweep run's artifacts on disk."""
    with n4a_store.open_store() as store:
        run_id = _current_run_id(context, store)
        if run_id is None:
            return CheckOutcome(False, "the workspace has no run yet").as_result()
        return verify_run_artifacts(store, run_id).as_result()


@asset_check(asset=SWEEP_RUN, name=WORKSPACE_VERIFIED,
             description="The whole workspace verifies clean (n4a verify): artifact files match "
                         "their hashes, claims equal the chains' references, predictions have "
                         "their arrays, no orphans or stray files.")
def workspace_verified(n4a_store: N4AStoreResource) -> AssetCheckResult:
    """Run ``store.verify()`` and report it."""
    with n4a_store.open_store() as store:
        return report_outcome(store.verify()).as_result()


ASSET_CHECKS = [predictions_have_arrays, artifacts_intact, workspace_verified]
CHECK_KEYS = {
    WORKSPACE_VERIFIED: AssetCheckKey(SWEEP_RUN, WORKSPACE_VERIFIED),
    PREDICTIONS_HAVE_ARRAYS: AssetCheckKey(PREDICTION_ARRAYS, PREDICTIONS_HAVE_ARRAYS),
    ARTIFACTS_INTACT: AssetCheckKey(SWEEP_RUN, ARTIFACTS_INTACT),
}
