"""On-demand exports of workspace records: pipeline config (JSON), run (YAML), predictions (Parquet).

Each function takes the store first; ``WorkspaceStore`` exposes them as methods.
Files are written atomically (temporary file, then rename) and parent
directories are created.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from n4a_store.bundles.jsonable import json_ready
from n4a_store.catalog.columns import decode_json_columns
from n4a_store.errors import InvalidInputError, MissingParentError
from n4a_store.fileio import atomic_path, write_atomic

__all__ = ["export_pipeline_config", "export_predictions_parquet", "export_run"]

# Metrics where a smaller score is better; used to pick a run's best pipeline.
LOWER_IS_BETTER = frozenset({
    "rmse", "mse", "mae", "rmsep", "rmsecv", "sep", "mape", "log_loss", "logloss",
    "neg_r2", "bias", "median_absolute_error", "max_error",
})
HIGHER_IS_BETTER = frozenset({
    "r2", "accuracy", "balanced_accuracy", "f1", "f1_macro", "f1_weighted", "precision",
    "recall", "roc_auc", "auc", "rpd", "rpiq", "kappa", "mcc",
})
ARRAY_COLUMNS = ("y_true", "y_pred", "y_proba", "sample_indices", "weights")


def export_pipeline_config(store: Any, pipeline_id: str, output_path: str | Path) -> Path:
    """Write a pipeline's expanded configuration as JSON; return the path."""
    pipeline = store.get_pipeline(pipeline_id)
    if pipeline is None:
        raise MissingParentError("pipeline", pipeline_id)
    config = pipeline.get("expanded_config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            pass
    text = json.dumps(json_ready(config), indent=2, sort_keys=False) + "\n"
    return write_atomic(Path(output_path), text.encode("utf-8"))


def export_run(store: Any, run_id: str, output_path: str | Path) -> Path:
    """Write a run with its pipelines, their chains and best scores as YAML; return the path.

    Layout::

        run: {run_id, name, status, config, datasets, summary, metadata, ...}
        best: {pipeline_id, name, metric, best_val, best_test}   # when the metric's direction is known
        pipelines:
          - {pipeline_id, name, status, dataset_name, metric, best_val, best_test, ...,
             chains: [{chain_id, model_class, preprocessings, fold_strategy, n_folds, ...}]}
    """
    import yaml

    run = store.get_run(run_id)
    if run is None:
        raise MissingParentError("run", run_id)
    pipelines = store.list_pipelines(run_id=run_id).to_dicts()
    pipeline_docs = []
    for pipeline in pipelines:
        chains = store.get_chains_for_pipeline(pipeline["pipeline_id"]).to_dicts()
        doc = decode_json_columns("pipelines", pipeline)
        doc["chains"] = [_chain_summary(decode_json_columns("chains", c)) for c in chains]
        pipeline_docs.append(doc)
    document = {"run": run,
                "best": best_pipeline(pipelines),
                "pipelines": pipeline_docs}
    text = yaml.safe_dump(json_ready(document), sort_keys=False, allow_unicode=True)
    return write_atomic(Path(output_path), text.encode("utf-8"))


def best_pipeline(pipelines: list[dict]) -> dict | None:
    """The completed pipeline with the best validation score, when the metric's direction is known."""
    candidates = []
    for p in pipelines:
        metric = str(p.get("metric") or "").lower()
        score = p.get("best_val")
        if score is None or score != score or metric not in LOWER_IS_BETTER | HIGHER_IS_BETTER:
            continue
        candidates.append((score if metric in LOWER_IS_BETTER else -score, p))
    if not candidates:
        return None
    _, best = min(candidates, key=lambda item: item[0])
    return {k: best.get(k) for k in ("pipeline_id", "name", "metric", "best_val", "best_test")}


def export_predictions_parquet(store: Any, output_path: str | Path, *, with_arrays: bool = False,
                               **filters: Any) -> Path:
    """Write prediction records matching ``filters`` to Parquet; return the path.

    Args:
        store: An open ``WorkspaceStore``.
        output_path: Parquet file to write.
        with_arrays: Add list columns ``y_true``, ``y_pred``, ``y_proba`` (list of rows),
            ``sample_indices`` and ``weights`` loaded from the array store.
        **filters: The same keyword filters as ``store.query_predictions`` (AND semantics).

    Raises:
        InvalidInputError: an unknown filter name.
    """
    import polars as pl

    allowed = query_filter_names(store)
    unknown = sorted(set(filters) - allowed)
    if unknown:
        raise InvalidInputError(
            f"unknown prediction filter(s) {unknown}; expected some of: {', '.join(sorted(allowed))}")
    frame = store.query_predictions(**filters)
    if with_arrays:
        frame = _with_arrays(store, frame, pl)
    output_path = Path(output_path)
    with atomic_path(output_path) as tmp:
        frame.write_parquet(tmp, compression="zstd")
    return output_path


def query_filter_names(store: Any) -> set[str]:
    """Keyword arguments ``store.query_predictions`` accepts."""
    names: set[str] = set()
    has_var_kw = False
    for name, param in inspect.signature(store.query_predictions).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            has_var_kw = True
        elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.add(name)
    if has_var_kw:
        try:
            from n4a_store.catalog.columns import PREDICTION_FILTERS

            names |= set(PREDICTION_FILTERS)
        except ImportError:  # pragma: no cover
            pass
    return names


def _with_arrays(store: Any, frame: Any, pl: Any) -> Any:
    """Join the dense arrays of every prediction onto ``frame`` as list columns."""
    arrays: dict[str, dict] = {}
    if frame.height:
        arrays = store.load_arrays(frame.get_column("prediction_id").to_list())
    ids = frame.get_column("prediction_id").to_list()
    columns = {}
    for name in ARRAY_COLUMNS:
        values = []
        for pid in ids:
            value = (arrays.get(pid) or {}).get(name)
            values.append(None if value is None else _to_list(value))
        if name == "y_proba":
            dtype = pl.List(pl.List(pl.Float64))
        elif name == "sample_indices":
            dtype = pl.List(pl.Int64)
        else:
            dtype = pl.List(pl.Float64)
        columns[name] = pl.Series(name, values, dtype=dtype)
    return frame.with_columns(**columns)


def _to_list(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else list(value)


def _chain_summary(chain: dict) -> dict:
    fold_artifacts = chain.get("fold_artifacts") or {}
    steps = chain.get("steps") or []
    return {
        "chain_id": chain.get("chain_id"),
        "model_class": chain.get("model_class"),
        "preprocessings": chain.get("preprocessings"),
        "fold_strategy": chain.get("fold_strategy"),
        "n_folds": len(fold_artifacts) or 1,
        "steps": [{"step_idx": s.get("step_idx"), "operator_class": s.get("operator_class"),
                   "params": s.get("params")} for s in steps if isinstance(s, dict)],
        "branch_path": chain.get("branch_path"),
        "source_index": chain.get("source_index"),
        "created_at": chain.get("created_at"),
    }
