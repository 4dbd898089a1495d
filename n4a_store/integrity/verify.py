"""The checks of ``WorkspaceStore.verify``: read-only, on any catalog and array backend.

A *snapshot* is taken first, in one maintenance transaction of the catalog
(it waits for commits in flight and holds new ones off for the few
milliseconds it lasts): the catalog's artifacts, chains and predictions, the
array backend's ids per dataset and the files under ``artifacts/``. Inside it
no writer is between writing its files and its COMMIT, so a file or array row
without a catalog record belongs to a writer that died. Hashing the artifact
files, the slow part, happens afterwards; a problem found then is confirmed
against the catalog again, so a concurrent delete or gc is not reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..artifacts.codec import content_hash
from ..catalog.columns import decode_json_columns
from ..workspace.writes import chain_artifact_refs
from .report import Finding, VerifyReport
from .scan import DiskFile, artifact_files, tmp_files

if TYPE_CHECKING:
    from ..workspace.store import WorkspaceStore

#: ``progress(phase, done, total)``, called as the checks advance
Progress = Callable[[str, int, int], None]
#: temporary files younger than this (seconds) may belong to a write in flight
DEFAULT_GRACE = 300.0


@dataclass
class Snapshot:
    """Catalog, array ids and artifact files seen together, with no commit in flight."""

    artifacts: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (format, ref_count)
    claims: Counter = field(default_factory=Counter)  # id -> references the chains hold
    named: dict[str, set[str]] = field(default_factory=dict)  # chain_id -> artifact ids it names
    predictions: dict[str, tuple[str, bool]] = field(default_factory=dict)  # id -> (dataset, has_arrays)
    array_ids: dict[str, set[str]] = field(default_factory=dict)  # dataset -> ids with arrays
    files: dict[str, tuple[str, Path]] = field(default_factory=dict)
    other_files: list[DiskFile] = field(default_factory=list)
    artifact_tmp: list[DiskFile] = field(default_factory=list)  # dead: only commits write there


def chain_names(chain: dict[str, Any]) -> tuple[list[str], set[str]]:
    """(claims a decoded chain holds, every artifact id it names)."""
    claims = chain_artifact_refs(chain)
    named = set(claims)
    for step in chain.get("steps") or []:
        if isinstance(step, dict) and isinstance(step.get("artifact_id"), str):
            named.add(step["artifact_id"])
    return claims, named


def take_snapshot(store: "WorkspaceStore") -> Snapshot:
    """Everything verify compares, under one maintenance transaction."""
    snap = Snapshot()
    catalog, arrays = store._catalog, store._uow.arrays
    root = store.workspace_path / "artifacts"

    def read(s: Any) -> None:
        snap.files, snap.other_files = artifact_files(root)
        snap.artifact_tmp = tmp_files(root)
        for dataset in arrays.list_datasets():
            snap.array_ids[dataset] = set(arrays.list_keys(dataset))
        snap.artifacts = {a: (f, n) for a, f, n in catalog.artifact_claim_rows(s)}
        for row in catalog.chain_reference_rows(s):
            claims, named = chain_names(decode_json_columns("chains", row))
            snap.claims.update(claims)
            snap.named[row["chain_id"]] = named
        snap.predictions = {p: (d, h) for p, d, h in catalog.prediction_array_rows(s)}

    store._uow.commit(read, maintenance=True)
    return snap


def _still_cataloged(store: "WorkspaceStore", artifact_ids: list[str]) -> set[str]:
    if not artifact_ids:
        return set()
    with store._catalog.reading() as s:
        return store._catalog.existing(s, "artifacts", "artifact_id", artifact_ids)


def check_artifacts(store: "WorkspaceStore", snap: Snapshot, report: VerifyReport,
                    progress: Progress | None) -> None:
    """Every artifact file exists and hashes to its id; no file lacks a catalog row."""
    bad: dict[str, Finding] = {}
    total = len(snap.artifacts)
    for done, (artifact_id, (fmt, _)) in enumerate(sorted(snap.artifacts.items()), 1):
        path = store._artifact_files.path(artifact_id, fmt)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            bad[artifact_id] = Finding("artifact_missing", artifact_id,
                                       store._artifact_files.relative_path(artifact_id, fmt))
        else:
            if content_hash(data) != artifact_id:
                bad[artifact_id] = Finding("artifact_corrupt", artifact_id,
                                           store._artifact_files.relative_path(artifact_id, fmt))
        if progress is not None:
            progress("artifacts", done, total)
    confirmed = _still_cataloged(store, sorted(bad))
    report.findings.extend(bad[a] for a in sorted(confirmed))
    for artifact_id, (_, path) in sorted(snap.files.items()):
        if artifact_id not in snap.artifacts and path.exists():
            report.findings.append(Finding("unreferenced_file", artifact_id, _rel(store, path)))
    for other in snap.other_files:
        report.findings.append(Finding("unreferenced_file", _rel(store, other.path),
                                       "not an artifact name"))
    report.checked["artifacts"] = total


def check_claims(snap: Snapshot, report: VerifyReport) -> None:
    """``ref_count`` equals the references the chains hold; every named artifact is cataloged."""
    for artifact_id, (_, ref_count) in sorted(snap.artifacts.items()):
        held = snap.claims.get(artifact_id, 0)
        if ref_count != held:
            report.findings.append(Finding("claims_mismatch", artifact_id,
                                           f"ref_count {ref_count}, chains hold {held}"))
    for chain_id, named in sorted(snap.named.items()):
        for artifact_id in sorted(named - set(snap.artifacts)):
            report.findings.append(Finding("chain_artifact_missing", chain_id, artifact_id))
    report.checked["chains"] = len(snap.named)


def check_arrays(store: "WorkspaceStore", snap: Snapshot, report: VerifyReport) -> None:
    """Predictions recorded with arrays have them; no arrays lack a prediction."""
    missing = [pid for pid, (dataset, has) in sorted(snap.predictions.items())
               if has and pid not in snap.array_ids.get(dataset, ())]
    if missing:  # confirm: a prediction deleted after the snapshot is not a loss
        with store._catalog.reading() as s:
            missing = sorted(store._catalog.existing(s, "predictions", "prediction_id", missing))
    report.findings.extend(Finding("arrays_missing", pid, snap.predictions[pid][0]) for pid in missing)
    for dataset, ids in sorted(snap.array_ids.items()):
        for pid in sorted(ids):
            if snap.predictions.get(pid, (None,))[0] != dataset:
                report.findings.append(Finding("orphan_arrays", pid, dataset))
    report.checked["predictions"] = len(snap.predictions)
    report.checked["array_rows"] = sum(len(ids) for ids in snap.array_ids.values())


def check_tmp(store: "WorkspaceStore", snap: Snapshot, report: VerifyReport, grace: float) -> None:
    """Temporary files of writes that will never finish.

    Under ``artifacts/`` only commits write, so one seen in the snapshot is dead
    whatever its age; elsewhere (array parts, tombstones, templates, exports are
    written outside the catalog lock) only those older than ``grace`` seconds count.
    """
    root = store.workspace_path / "artifacts"
    strays = list(snap.artifact_tmp) + [
        f for f in tmp_files(store.workspace_path) if f.age >= grace and root not in f.path.parents]
    report.findings.extend(Finding("stray_tmp", _rel(store, f.path), f"{f.age:.0f} s old")
                           for f in strays if f.path.exists())


def _rel(store: "WorkspaceStore", path: Path) -> str:
    try:
        return path.relative_to(store.workspace_path).as_posix()
    except ValueError:
        return str(path)


def verify_store(store: "WorkspaceStore", *, grace: float = DEFAULT_GRACE,
                 progress: Progress | None = None) -> VerifyReport:
    """Check the workspace behind ``store``; return a :class:`VerifyReport` (nothing is changed)."""
    report = VerifyReport(location=store.uri)
    snap = take_snapshot(store)
    check_artifacts(store, snap, report, progress)
    check_claims(snap, report)
    check_arrays(store, snap, report)
    check_tmp(store, snap, report, grace)
    return report
