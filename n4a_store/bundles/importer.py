"""``import_bundle``: bring a ``.n4a`` bundle back into a workspace as a chain.

A chain must belong to a pipeline, and a pipeline to a run, so each import
creates a small provenance record:

- a run named ``"imported <bundle file name>"`` whose ``metadata`` holds
  ``{"source": "bundle_import", "bundle": <file name>, "source_chain_id": ...}``;
- one pipeline in it (``dataset_name`` from the bundle's source pipeline, or
  ``"imported"``) whose ``expanded_config`` records the bundle's manifest summary;
- the chain, saved with ``save_chain``. Run and pipeline are completed at once.

The bundle is fully verified (see :mod:`n4a_store.bundles.safety`) before any
artifact is deserialised. Artifacts are stored through ``save_artifact``; if
re-serialisation yields different bytes, the chain's artifact ids are remapped
to the new ids, so the imported chain always refers to what the workspace holds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from n4a_store.bundles.predict import deserialize
from n4a_store.bundles.safety import VerifiedBundle, read_verified_bundle

IMPORTED_DATASET = "imported"


def import_bundle(store: Any, bundle_path: str | Path, *, expected_sha256: str | None = None,
                  key: str | bytes | None = None) -> str:
    """Import a verified bundle into ``store``; return the new chain id.

    ``expected_sha256`` and ``key`` prove the bundle's origin as in :func:`predict`.
    """
    started = time.perf_counter()
    bundle = read_verified_bundle(bundle_path, expected_sha256=expected_sha256, key=key)
    manifest = bundle.manifest
    source = manifest.get("source") or {}
    summary = manifest.get("chain") or {}
    source_chain_id = bundle.chain.get("chain_id")
    run_id = store.begin_run(
        f"imported {bundle.path.name}",
        {"imported_bundle": bundle.path.name, "source": source},
        [{"name": source.get("dataset_name") or IMPORTED_DATASET,
          "hash": source.get("dataset_hash") or ""}],
        metadata={"source": "bundle_import", "bundle": bundle.path.name,
                  "source_chain_id": source_chain_id,
                  "bundle_created_at": manifest.get("created_at")},
    )
    pipeline_id = None
    try:
        pipeline_id = store.begin_pipeline(
            run_id, f"imported_{str(summary.get('model_class') or 'chain').rsplit('.', 1)[-1]}",
            {"imported_bundle": bundle.path.name, "chain": summary,
             "libraries": manifest.get("libraries") or {}},
            [], source.get("dataset_name") or IMPORTED_DATASET, source.get("dataset_hash") or "",
        )
        id_map = _store_artifacts(store, bundle)
        chain = remap_chain(bundle.chain, id_map)
        chain_id = store.save_chain(
            pipeline_id,
            steps=chain["steps"],
            model_step_idx=chain["model_step_idx"],
            model_class=chain["model_class"],
            preprocessings=chain.get("preprocessings") or "",
            fold_strategy=chain.get("fold_strategy") or "per_fold",
            fold_artifacts=chain.get("fold_artifacts") or {},
            shared_artifacts=chain.get("shared_artifacts") or {},
            branch_path=chain.get("branch_path"),
            source_index=chain.get("source_index"),
        )
        store.complete_pipeline(
            pipeline_id, _score(source.get("best_val")), _score(source.get("best_test")),
            source.get("metric") or "", int((time.perf_counter() - started) * 1000))
        store.complete_run(run_id, {"imported_chain_id": chain_id, "source_chain_id": source_chain_id})
    except BaseException as error:
        if pipeline_id is not None:
            store.fail_pipeline(pipeline_id, f"bundle import failed: {error}")
        store.fail_run(run_id, f"bundle import failed: {error}")
        raise
    return chain_id


def _store_artifacts(store: Any, bundle: VerifiedBundle) -> dict[str, str]:
    """Save every bundle artifact in the workspace; return {bundle id: workspace id}."""
    id_map: dict[str, str] = {}
    for artifact_id, (fmt, data) in bundle.artifacts.items():
        entry = bundle.manifest["artifacts"][artifact_id]
        operator_class = entry.get("operator_class") or ""
        artifact_type = entry.get("artifact_type") or "transformer"
        save_bytes = getattr(store, "save_artifact_bytes", None)
        if callable(save_bytes):
            id_map[artifact_id] = save_bytes(data, operator_class, artifact_type, fmt)
        else:
            id_map[artifact_id] = store.save_artifact(deserialize(data, fmt), operator_class,
                                                      artifact_type, fmt)
    return id_map


def remap_chain(chain: dict, id_map: dict[str, str]) -> dict:
    """A copy of ``chain`` with every artifact id replaced through ``id_map``."""
    def swap(aid: Any) -> Any:
        return id_map.get(aid, aid) if isinstance(aid, str) else aid

    steps = []
    for step in chain.get("steps") or []:
        step = dict(step)
        step["artifact_id"] = swap(step.get("artifact_id"))
        step["fold_artifacts"] = {k: swap(v) for k, v in (step.get("fold_artifacts") or {}).items()}
        steps.append(step)
    out = dict(chain)
    out["steps"] = steps
    out["fold_artifacts"] = {k: swap(v) for k, v in (chain.get("fold_artifacts") or {}).items()}
    out["shared_artifacts"] = {k: swap(v) for k, v in (chain.get("shared_artifacts") or {}).items()}
    return out


def _score(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
