"""Gather what an export needs from a workspace: the chain, its artifacts' bytes, its origin."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from n4a_store.bundles.layout import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    CHAIN_MEMBER,
    artifact_member,
    chain_artifact_ids,
    library_versions,
)
from n4a_store.bundles.jsonable import json_ready
from n4a_store.bundles.safety import sha256_hex
from n4a_store.errors import ArtifactIntegrityError, ArtifactNotFoundError, MissingParentError

# Chain keys carried into chain.json (the rest of a catalog row is workspace-specific).
CHAIN_KEYS = (
    "chain_id", "pipeline_id", "steps", "model_step_idx", "model_class", "preprocessings",
    "fold_strategy", "fold_artifacts", "shared_artifacts", "branch_path", "source_index",
    "created_at",
)


@dataclass
class ArtifactBytes:
    """One artifact's serialised bytes and catalog description."""

    artifact_id: str
    format: str
    operator_class: str
    artifact_type: str
    data: bytes


@dataclass
class ChainExport:
    """A chain ready to be written out: JSON-safe chain, artifact bytes and provenance."""

    chain: dict[str, Any]
    artifacts: dict[str, ArtifactBytes] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def model_step(self) -> dict[str, Any]:
        return self.chain["steps"][-1]

    @property
    def task_type(self) -> str:
        return self.model_step.get("task_type", "regression")

    def chain_json(self) -> bytes:
        """``chain.json`` bytes (stable key order)."""
        return json.dumps(self.chain, indent=2, sort_keys=True).encode("utf-8")

    def manifest(self, members: dict[str, bytes]) -> dict[str, Any]:
        """The bundle manifest for the given member bytes."""
        steps = self.chain["steps"]
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_class": self.chain.get("model_class"),
            "chain": {
                "chain_id": self.chain.get("chain_id"),
                "model_class": self.chain.get("model_class"),
                "preprocessings": self.chain.get("preprocessings"),
                "fold_strategy": self.chain.get("fold_strategy"),
                "task_type": self.task_type,
                "n_features_in": steps[0].get("n_features_in") if steps else None,
                "n_folds": len(self.chain.get("fold_artifacts") or {}) or 1,
                "steps": [s.get("operator_class") for s in steps],
            },
            "source": self.source,
            "libraries": library_versions(
                [a.operator_class for a in self.artifacts.values()]
                + [s.get("operator_class", "") for s in steps],
                [a.format for a in self.artifacts.values()]),
            "artifacts": {
                aid: {"member": artifact_member(aid, a.format), "format": a.format,
                      "operator_class": a.operator_class, "artifact_type": a.artifact_type,
                      "size_bytes": len(a.data)}
                for aid, a in self.artifacts.items()
            },
            "members": {name: {"sha256": sha256_hex(data), "size_bytes": len(data)}
                        for name, data in members.items()},
        }

    def members(self) -> dict[str, bytes]:
        """Every bundle member except the manifest, by zip name."""
        members = {CHAIN_MEMBER: self.chain_json()}
        for aid, artifact in self.artifacts.items():
            members[artifact_member(aid, artifact.format)] = artifact.data
        return members


def collect_chain(store: Any, chain_id: str) -> ChainExport:
    """Read a chain and the verified bytes of every artifact it uses.

    Raises:
        MissingParentError: no such chain.
        ArtifactNotFoundError / ArtifactIntegrityError: naming the artifact and the chain.
    """
    row = store.get_chain(chain_id)
    if row is None:
        raise MissingParentError("chain", chain_id)
    chain = json_ready({key: row.get(key) for key in CHAIN_KEYS})
    export = ChainExport(chain=chain, source=_source(store, row))
    for aid in chain_artifact_ids(chain):
        try:
            export.artifacts[aid] = read_artifact_bytes(store, aid, chain_id)
        except ArtifactNotFoundError:
            if store.get_chain(chain_id) is None:  # deleted (and collected) while being read
                raise MissingParentError("chain", chain_id) from None
            raise
    return export


def read_artifact_bytes(store: Any, artifact_id: str, chain_id: str) -> ArtifactBytes:
    """Read one artifact file and check it hashes to its id."""
    where = f"artifact {artifact_id!r} of chain {chain_id!r}"
    entry = store.get_artifact(artifact_id)
    if entry is None:
        raise ArtifactNotFoundError(f"{where} is not in the workspace catalog")
    try:
        data = store.get_artifact_path(artifact_id).read_bytes()
    except (FileNotFoundError, ArtifactNotFoundError) as error:
        raise ArtifactNotFoundError(f"{where}: its file is missing ({error})") from error
    if sha256_hex(data) != artifact_id:
        raise ArtifactIntegrityError(
            f"{where} is corrupted: its file's SHA-256 does not match its id")
    return ArtifactBytes(artifact_id=artifact_id, format=entry.get("format") or "joblib",
                         operator_class=entry.get("operator_class") or "",
                         artifact_type=entry.get("artifact_type") or "", data=data)


def _source(store: Any, chain_row: dict) -> dict[str, Any]:
    """Provenance of the chain: pipeline, run and dataset it came from."""
    pipeline = None
    try:
        pipeline = store.get_pipeline(chain_row.get("pipeline_id"))
    except Exception:  # provenance is informative only
        pipeline = None
    if not pipeline:
        return {"pipeline_id": chain_row.get("pipeline_id")}
    return json_ready({
        "pipeline_id": pipeline.get("pipeline_id"),
        "pipeline_name": pipeline.get("name"),
        "run_id": pipeline.get("run_id"),
        "dataset_name": pipeline.get("dataset_name"),
        "dataset_hash": pipeline.get("dataset_hash"),
        "metric": pipeline.get("metric"),
        "best_val": pipeline.get("best_val"),
        "best_test": pipeline.get("best_test"),
    })
