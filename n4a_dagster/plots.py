"""Plots for the Dagster UI, as PNG images embedded in Markdown metadata.

* a pipeline partition: predicted vs true and residuals per partition (train / val / test),
  each fold in its own colour plus the pooled out-of-fold (val) or fold-averaged (test)
  predictions; for classification, the confusion matrices of the pooled val and the test
  predictions;
* the leaderboard: the cross-validated score against each swept parameter.

Dagster's UI renders Markdown metadata, including ``data:image/png;base64`` images.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import polars as pl
from dagster import MetadataValue

from n4a_store.ranking import BEST_FOLD, direction_label

PARTITIONS = ("train", "val", "test")
_DPI = 80


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_markdown(fig: Any, alt: str, tight: bool = True) -> MetadataValue:
    """The figure as a PNG image in a Markdown metadata value (the figure is closed).

    ``tight=False`` keeps the figure's own margins: one draw instead of two (the tight
    bounding box draws the figure once to measure it), for the plots of every step.
    """
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight" if tight else None)
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def load_partition_arrays(store: Any, pipeline_id: str) -> list[dict[str, Any]]:
    """Every prediction of a pipeline with its arrays (fold, partition, y_true, y_pred)."""
    frame = store.query_predictions(pipeline_id=pipeline_id)
    out = []
    for prediction_id in frame["prediction_id"].to_list():
        record = store.get_prediction(prediction_id, load_arrays=True)
        if record is not None and record.get("y_true") is not None:
            out.append(record)
    return out


def regression_plots(records: list[dict[str, Any]], title: str) -> dict[str, MetadataValue]:
    """``predicted_vs_true`` and ``residuals`` images: one panel per partition."""
    plt = _pyplot()
    parts = [p for p in PARTITIONS if any(r["partition"] == p for r in records)]
    images = {}
    for name, residual in (("predicted_vs_true", False), ("residuals", True)):
        fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 3.8), squeeze=False)
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.84, wspace=0.28)
        for index, (ax, part) in enumerate(zip(axes[0], parts)):
            rows = sorted((r for r in records if r["partition"] == part),
                          key=lambda r: (r["fold_id"] == BEST_FOLD, str(r["fold_id"])))
            lo, hi = np.inf, -np.inf
            for r in rows:
                y, p = np.asarray(r["y_true"], float), np.asarray(r["y_pred"], float).ravel()
                pooled = r["fold_id"] == BEST_FOLD
                label = ("pooled" if part == "val" else "fold mean") if pooled else f"fold {r['fold_id']}"
                ax.scatter(y, p - y if residual else p, s=14 if pooled else 8,
                           marker="x" if pooled else "o", alpha=0.9 if pooled else 0.45,
                           color="black" if pooled else None, label=label)
                lo, hi = min(lo, y.min(), p.min()), max(hi, y.max(), p.max())
            if residual:
                ax.axhline(0.0, color="grey", lw=1)
                ax.set_ylabel("predicted - true")
            else:
                ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
                ax.set_ylabel("predicted")
            ax.set_xlabel("true")
            ax.set_title(part)
            # a fixed corner: "best" searches every point for the emptiest place (slow)
            ax.legend(fontsize=7, loc="upper left")
        fig.suptitle(f"{title}: {name.replace('_', ' ')}")
        images[name] = png_markdown(fig, f"{name} {title}", tight=False)
    return images


def confusion_plot(records: list[dict[str, Any]], title: str,
                   labels: list[str] | None = None) -> dict[str, MetadataValue]:
    """``confusion_matrix`` image: pooled val and test predictions (rows true, columns predicted)."""
    plt = _pyplot()
    chosen = [r for r in records if r["fold_id"] == BEST_FOLD and r["partition"] in ("val", "test")]
    if not chosen:
        return {}
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 3.8), squeeze=False)
    for ax, r in zip(axes[0], sorted(chosen, key=lambda r: r["partition"] != "val")):
        y = np.asarray(r["y_true"]).astype(int)
        p = np.asarray(r["y_pred"]).ravel().astype(int)
        k = int(max(y.max(), p.max())) + 1
        matrix = np.zeros((k, k), dtype=int)
        np.add.at(matrix, (y, p), 1)
        ax.imshow(matrix, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8)
        names = labels if labels and len(labels) == k else [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{r['partition']} ({'pooled' if r['partition'] == 'val' else 'fold vote/mean'})")
    fig.suptitle(f"{title}: confusion matrix")
    return {"confusion_matrix": png_markdown(fig, f"confusion matrix {title}")}


def pipeline_plots(store: Any, pipeline_id: str, title: str,
                   labels: list[str] | None = None) -> dict[str, MetadataValue]:
    """The plots of one pipeline partition (empty when it has no arrays)."""
    records = load_partition_arrays(store, pipeline_id)
    if not records:
        return {}
    if records[0].get("task_type") == "classification":
        return confusion_plot(records, title, labels)
    return regression_plots(records, title)


def _choice_label(value: Any) -> Any:
    """A swept value as a plot coordinate: numbers stay numbers, steps become class names."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dict) and "class" in value:
        return str(value["class"]).rsplit(".", 1)[-1]
    if isinstance(value, list):
        return ">".join(str(_choice_label(v)) for v in value) or "none"
    return json.dumps(value, default=str)[:30]


def parameter_plot(pipelines: pl.DataFrame, dataset_name: str) -> dict[str, MetadataValue]:
    """``score_vs_parameters`` image: best_val of each completed pipeline against each swept
    parameter (one panel per generator choice path)."""
    plt = _pyplot()
    done = pipelines.filter((pl.col("status") == "completed") & pl.col("best_val").is_not_null()
                            & (pl.col("dataset_name") == dataset_name))
    if done.height == 0:
        return {}
    metric = done["metric"][0]
    axes_data: dict[str, list[tuple[Any, float]]] = {}
    for row in done.iter_rows(named=True):
        choices = row["generator_choices"]
        if isinstance(choices, str):
            choices = json.loads(choices)
        for choice in choices or []:
            axes_data.setdefault(str(choice.get("path")), []).append(
                (_choice_label(choice.get("value")), float(row["best_val"])))
    if not axes_data:
        return {}
    fig, axes = plt.subplots(1, len(axes_data), figsize=(4.2 * len(axes_data), 3.6), squeeze=False)
    for ax, (path, points) in zip(axes[0], axes_data.items()):
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        if all(isinstance(x, (int, float)) for x in xs):
            ax.scatter(xs, ys, s=18)
        else:
            cats = list(dict.fromkeys(str(x) for x in xs))
            ax.scatter([cats.index(str(x)) for x in xs], ys, s=18)
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(path)
        ax.set_ylabel(f"val {metric}")
    fig.suptitle(f"{dataset_name}: cross-validated {metric} ({direction_label(metric)}) "
                 f"by swept parameter")
    return {"score_vs_parameters": png_markdown(fig, f"score vs parameters {dataset_name}")}
