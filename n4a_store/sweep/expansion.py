"""Expand a sweep config into concrete pipelines (:class:`PipelineSpec`)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from n4a_store.sweep.config import import_class
from n4a_store.sweep.errors import SweepConfigError
from n4a_store.sweep.generators import count_expansions, iter_expansions

if TYPE_CHECKING:
    from n4a_store.sweep.config import SweepConfig

WAVELENGTHS_MARKER = "$wavelengths"


@dataclass(frozen=True)
class StepSpec:
    """One concrete step: an importable class path and its constructor parameters.

    Attributes:
        class_path: ``package.module.Class``.
        params: Constructor parameters (JSON values; a nested ``{"class", "params"}`` dict is
            built into an object; the string ``"$wavelengths"`` becomes the dataset's wavelengths).
        source_idx: Index of the entry of the config's ``pipeline`` list this step came from.
    """

    class_path: str
    params: dict[str, Any] = field(default_factory=dict)
    source_idx: int = 0

    @property
    def short_name(self) -> str:
        """The class name without its module."""
        return self.class_path.rsplit(".", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        """The step as it appears in an expanded config."""
        return {"class": self.class_path, "params": self.params}


@dataclass(frozen=True)
class PipelineSpec:
    """One expanded pipeline of a sweep.

    Attributes:
        index: Position in the sweep (0-based, document order of the generators).
        name: ``"0001_SNV-PLSR_3fa2c1"``: 1-based index, abbreviated step classes, key prefix.
        key: Stable 16-hex hash of the expanded steps (usable as a Dagster partition key).
        steps: Concrete steps, the model last.
        generator_choices: One dict per generator site: ``path``, ``generator``, ``index``, ``value``.
        expanded_config: The fully resolved pipeline config stored with ``begin_pipeline``.
    """

    index: int
    name: str
    key: str
    steps: tuple[StepSpec, ...]
    generator_choices: list[dict[str, Any]]
    expanded_config: dict[str, Any]

    @property
    def model(self) -> StepSpec:
        """The model (last) step."""
        return self.steps[-1]

    @property
    def preprocessings(self) -> str:
        """Display string of the transformer steps, e.g. ``"StandardNormalVariate>SavitzkyGolay"``."""
        return ">".join(step.short_name for step in self.steps[:-1])


def expand_pipelines(cfg: SweepConfig) -> list[PipelineSpec]:
    """Expand every generator of ``cfg.pipeline`` into concrete, validated pipelines.

    Identical expansions (two routes to the same steps) are kept once. The order is the
    document order of the generator sites, the first site varying slowest.

    Raises:
        SweepConfigError: the expansion is larger than ``cfg.max_pipelines``, a class cannot be
            imported, or a pipeline is malformed (model not last, a transformer without
            ``transform``...); the message names the step and the key.
    """
    total = count_expansions(cfg.pipeline)
    if total > cfg.max_pipelines:
        raise SweepConfigError(
            f"the pipeline expands to {total} pipelines, more than max_pipelines="
            f"{cfg.max_pipelines}", key="max_pipelines",
        )
    specs: list[PipelineSpec] = []
    seen: set[str] = set()
    for entries, choices in iter_expansions(cfg.pipeline, "pipeline"):
        steps = _flatten(entries)
        _validate_steps(steps)
        key = pipeline_key(steps)
        if key in seen:
            continue
        seen.add(key)
        index = len(specs)
        name = f"{index + 1:04d}_{'-'.join(_abbrev(s.short_name) for s in steps)}_{key[:6]}"
        expanded = {
            "name": name,
            "key": key,
            "pipeline": [s.to_dict() for s in steps],
            "task_type": cfg.task_type,
            "metric": cfg.metric,
            "cv": cfg.cv.to_dict(),
            "seed": cfg.seed,
        }
        specs.append(PipelineSpec(index, name, key, tuple(steps), choices, expanded))
    return specs


def pipeline_key(steps: list[StepSpec] | tuple[StepSpec, ...]) -> str:
    """Stable short hash of concrete steps (canonical JSON, SHA-256, 16 hex chars)."""
    payload = json.dumps([s.to_dict() for s in steps], sort_keys=True, separators=(",", ":"),
                         default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _abbrev(class_name: str) -> str:
    capitals = re.findall(r"[A-Z0-9]", class_name)
    if len(class_name) > 6 and len(capitals) >= 2:
        return "".join(capitals)
    return class_name


def _flatten(entries: list[Any]) -> list[StepSpec]:
    steps: list[StepSpec] = []
    for idx, entry in enumerate(entries):
        items = entry if isinstance(entry, list) else [entry]
        for item in items:
            if item is None:
                continue
            if isinstance(item, str):
                steps.append(StepSpec(item, {}, idx))
                continue
            params = item.get("params") or {}
            if not isinstance(params, dict):
                raise SweepConfigError(f"must be a mapping of constructor arguments, got {params!r}",
                                       step_idx=idx, step_class=str(item.get("class")), key="params")
            steps.append(StepSpec(item["class"], dict(params), idx))
    return steps


def _validate_steps(steps: list[StepSpec]) -> None:
    if not steps:
        raise SweepConfigError("an expansion leaves the pipeline empty (every step skipped)",
                               key="pipeline")
    last = len(steps) - 1
    for pos, step in enumerate(steps):
        cls = _import_step_class(step.class_path, step.source_idx, "class")
        for pname, pvalue in step.params.items():
            _validate_nested(pvalue, step, f"params.{pname}")
        if pos == last:
            if not hasattr(cls, "fit") or not hasattr(cls, "predict"):
                raise SweepConfigError(
                    "the last step must be a model with fit() and predict()",
                    step_idx=step.source_idx, step_class=step.class_path, key="class",
                )
        elif not hasattr(cls, "fit") or not (hasattr(cls, "transform") or hasattr(cls, "fit_transform")):
            raise SweepConfigError(
                "every step before the model must be a transformer with fit() and transform()"
                + (" (is the model in the wrong place?)" if hasattr(cls, "predict") else ""),
                step_idx=step.source_idx, step_class=step.class_path, key="class",
            )


def _import_step_class(path: Any, step_idx: int, key: str) -> type:
    if not isinstance(path, str) or "." not in path:
        raise SweepConfigError(f"must be a dotted import path like 'package.module.Class', got {path!r}",
                               step_idx=step_idx, key=key)
    try:
        return import_class(path)
    except Exception as exc:  # ImportError, or anything a module raises at import time
        raise SweepConfigError(f"cannot import {path!r}: {exc}", step_idx=step_idx,
                               step_class=path, key=key) from exc


def _validate_nested(value: Any, step: StepSpec, key: str) -> None:
    if isinstance(value, dict):
        if "class" in value and set(value) <= {"class", "params"}:
            _import_step_class(value["class"], step.source_idx, f"{key}.class")
            params = value.get("params") or {}
            if not isinstance(params, dict):
                raise SweepConfigError("must be a mapping", step_idx=step.source_idx,
                                       step_class=step.class_path, key=f"{key}.params")
            _validate_nested(params, step, f"{key}.params")
            return
        for k, v in value.items():
            _validate_nested(v, step, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _validate_nested(v, step, f"{key}[{i}]")
