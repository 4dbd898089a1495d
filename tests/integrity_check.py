"""Checks of a DuckDB workspace from OUTSIDE the API: plain duckdb, pyarrow and os (not a test module).

Nothing here imports n4a_store: the rules are restated from the docs, so a bug in
the store's own bookkeeping cannot hide itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pyarrow.parquet as pq

EXT = {"joblib": "joblib", "cloudpickle": "pkl"}
TMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
ARTIFACT = re.compile(r"^[0-9a-f]{64}\.(joblib|pkl)$")

#: violation categories that depend on the fixes of issue 9's defects 3 and 4 (branch speed)
SPEED_DEPENDENT = ("claims", "partial_pipeline")


def catalog(ws: Path) -> dict[str, Any]:
    """The catalog tables the checks need, read with a read-only DuckDB connection."""
    con = duckdb.connect(str(ws / "store.duckdb"), read_only=True)
    try:
        def rows(sql: str) -> list[tuple]:
            return con.execute(sql).fetchall()

        return {
            "pipelines": dict(rows("SELECT pipeline_id, status FROM pipelines")),
            "chains": rows("SELECT chain_id, pipeline_id, steps, model_step_idx, fold_artifacts, "
                           "shared_artifacts FROM chains"),
            "predictions": {r[0]: (r[1], r[2], r[3]) for r in rows(
                "SELECT prediction_id, pipeline_id, has_arrays, dataset_name FROM predictions")},
            "artifacts": {r[0]: (r[1], r[2]) for r in rows(
                "SELECT artifact_id, format, ref_count FROM artifacts")},
        }
    finally:
        con.close()


def chain_claims(steps: str, model_idx: int, fold: str, shared: str) -> tuple[list[str], set[str]]:
    """(claims a chain holds, ids it names): one claim per fold/shared value and per-step fold map."""
    claims = [v for v in json.loads(fold or "{}").values() if isinstance(v, str)]
    claims += [v for v in json.loads(shared or "{}").values() if isinstance(v, str)]
    named = set(claims)
    for step in json.loads(steps or "[]"):
        if isinstance(step.get("artifact_id"), str):
            named.add(step["artifact_id"])
        if step.get("step_idx") != model_idx and isinstance(step.get("fold_artifacts"), dict):
            per_fold = [v for v in step["fold_artifacts"].values() if isinstance(v, str)]
            claims += per_fold
            named |= set(per_fold)
    return claims, named


def array_ids(ws: Path, dataset: str) -> set[str]:
    """Prediction ids with arrays in a dataset's Parquet files, minus tombstones."""
    directory = ws / "arrays" / quote(dataset, safe="-_.")
    ids: set[str] = set()
    if directory.is_dir():
        for name in os.listdir(directory):
            if name.endswith(".parquet") and not name.startswith("."):
                try:
                    table = pq.read_table(directory / name, columns=["prediction_id"])
                except FileNotFoundError:
                    continue
                ids.update(table.column(0).to_pylist())
    tombs = ws / "arrays" / "_tombstones"
    if tombs.is_dir():
        for name in os.listdir(tombs):
            if name.endswith(".txt"):
                ids -= set((tombs / name).read_text().split())
    return ids


def leftovers(ws: Path, artifacts: dict[str, Any]) -> dict[str, int]:
    """Stray temporary files and artifact files without a catalog row."""
    tmp = unreferenced = 0
    for directory, subdirs, names in os.walk(ws):
        subdirs[:] = [d for d in subdirs if d != ".locks"]
        for name in names:
            if TMP.match(name):
                tmp += 1
            elif Path(directory).parent.name == "artifacts" and ARTIFACT.match(name) \
                    and name.split(".")[0] not in artifacts:
                unreferenced += 1
    return {"stray_tmp": tmp, "unreferenced_files": unreferenced}


def check(ws: Path, acks: list[dict[str, Any]]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Violations by category, and the leftovers counted, for a workspace no process writes to.

    Categories: ``acknowledged`` (a pipeline the writer was told was committed, not
    deleted since, is missing, incomplete, or lost arrays), ``artifacts`` (a chain
    names an artifact that is not cataloged, has no file or hashes differently),
    ``claims`` (ref_count differs from the references the chains hold), and
    ``partial_pipeline`` (rows of a pipeline that never completed, or of a failed one).
    """
    cat = catalog(ws)
    violations: dict[str, list[str]] = {"acknowledged": [], "artifacts": [], "claims": [],
                                        "partial_pipeline": []}
    deleting = {a["pipeline_id"] for a in acks if a["kind"] == "deleting"}
    committed = [a for a in acks if a["kind"] == "committed" and a["pipeline_id"] not in deleting]
    chains_by_pipeline: dict[str, set[str]] = {}
    for chain_id, pid, *_ in cat["chains"]:
        chains_by_pipeline.setdefault(pid, set()).add(chain_id)
    arrays = array_ids(ws, "wheat")
    for ack in committed:
        pid = ack["pipeline_id"]
        if cat["pipelines"].get(pid) != "completed":
            violations["acknowledged"].append(f"pipeline {pid}: {cat['pipelines'].get(pid)}")
            continue
        if ack["chain_id"] not in chains_by_pipeline.get(pid, ()):
            violations["acknowledged"].append(f"pipeline {pid}: chain {ack['chain_id']} missing")
        for pred in ack["predictions"]:
            row = cat["predictions"].get(pred)
            if row is None:
                violations["acknowledged"].append(f"prediction {pred} of {pid} missing")
            elif not row[1] or pred not in arrays:
                violations["acknowledged"].append(f"prediction {pred} of {pid}: arrays missing")
    held: Counter = Counter()
    for chain_id, pid, steps, model_idx, fold, shared in cat["chains"]:
        claims, named = chain_claims(steps, model_idx, fold, shared)
        held.update(claims)
        for artifact_id in sorted(named):
            entry = cat["artifacts"].get(artifact_id)
            if entry is None:
                violations["artifacts"].append(f"chain {chain_id}: {artifact_id} not cataloged")
                continue
            path = ws / "artifacts" / artifact_id[:2] / f"{artifact_id}.{EXT[entry[0]]}"
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                violations["artifacts"].append(f"chain {chain_id}: file of {artifact_id} missing")
                continue
            if digest != artifact_id:
                violations["artifacts"].append(f"chain {chain_id}: {artifact_id} hashes to {digest}")
    for artifact_id, (_, ref_count) in sorted(cat["artifacts"].items()):
        if ref_count != held.get(artifact_id, 0):
            violations["claims"].append(
                f"artifact {artifact_id[:12]}: ref_count {ref_count}, chains hold {held.get(artifact_id, 0)}")
    with_rows = set(chains_by_pipeline) | {p for p, *_ in cat["predictions"].values()}
    for pid in sorted(with_rows):
        status = cat["pipelines"].get(pid)
        if status != "completed":
            violations["partial_pipeline"].append(f"pipeline {pid} ({status}) has rows")
    return violations, leftovers(ws, cat["artifacts"])
