"""Sweep configs: loading from YAML/JSON/dict and validation.

See ``docs/sweeps.md`` for the format. :func:`load_sweep_config` returns a
validated :class:`SweepConfig`; every error is a :class:`SweepConfigError`
naming the step (index and class) and the key.
"""

from __future__ import annotations

import copy
import importlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from n4a_store.sweep.errors import SweepConfigError
from n4a_store.sweep.generators import OR_KEY, RANGE_KEY, GeneratorError, is_generator
from n4a_store.sweep.generators import validate_generators
from n4a_store.sweep.scoring import METRICS, TASK_TYPES, default_metric

TOP_LEVEL_KEYS = {
    "name", "description", "datasets", "dataset", "task_type", "cv", "metric", "pipeline",
    "seed", "max_pipelines",
}
STEP_KEYS = {"class", "params"}
CV_KEYS = {"n_splits", "shuffle", "seed", "stratified"}
DATASET_KEYS = {
    "name", "chemotools", "path", "target", "test_path", "task_type", "drop_columns",
    "test_fraction",
}
CHEMOTOOLS_DATASETS = ("fermentation", "fermentation_train", "fermentation_test", "coffee")
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class CVConfig:
    """Cross-validation settings: K folds, optionally shuffled with a seed, stratified or not.

    ``stratified=None`` means "stratified for classification, plain KFold for regression".
    """

    n_splits: int = 5
    shuffle: bool = True
    seed: int = 0
    stratified: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "n_splits": self.n_splits, "shuffle": self.shuffle, "seed": self.seed,
            "stratified": self.stratified,
        }


@dataclass(frozen=True)
class DatasetConfig:
    """Where a dataset comes from.

    Attributes:
        name: Dataset name used in the store (``fermentation``, a file stem, or given).
        source: ``"chemotools"`` or ``"file"``.
        ref: The chemotools dataset name or the (resolved) file path.
        target: Target column (files; optional for chemotools datasets).
        test_path: Optional held-out test file with the same columns.
        task_type: ``"regression"`` / ``"classification"`` or ``None`` (inferred).
        drop_columns: Columns of the file that are neither features nor target.
        test_fraction: Hold out this fraction of the data as the test partition (seeded,
            stratified for classification) when the dataset has no test set of its own.
    """

    name: str
    source: str
    ref: str
    target: str | None = None
    test_path: str | None = None
    task_type: str | None = None
    drop_columns: tuple[str, ...] = ()
    test_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the normalised dict form of the config)."""
        out: dict[str, Any] = {"name": self.name}
        if self.source == "chemotools":
            out["chemotools"] = self.ref
        else:
            out["path"] = self.ref
        for key in ("target", "test_path", "task_type", "test_fraction"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.drop_columns:
            out["drop_columns"] = list(self.drop_columns)
        return out


@dataclass
class SweepConfig:
    """A validated sweep config.

    Attributes:
        name: Sweep name (used as the run name by default).
        datasets: Datasets to run every pipeline on.
        pipeline: The raw pipeline (steps with generator keys), JSON-compatible.
        task_type: ``"regression"``, ``"classification"`` or ``None`` (inferred per dataset).
        cv: Cross-validation settings.
        metric: Ranking metric or ``None`` (rmse for regression, accuracy for classification).
        seed: Seed injected as ``random_state`` into operators that take one and were not given one.
        max_pipelines: Refuse configs expanding to more pipelines than this.
        description: Free text.
        source: Where the config was loaded from (file path, ``builtin:<name>`` or ``None``).
    """

    name: str
    datasets: list[DatasetConfig]
    pipeline: list[Any]
    task_type: str | None = None
    cv: CVConfig = field(default_factory=CVConfig)
    metric: str | None = None
    seed: int = 0
    max_pipelines: int = 10_000
    description: str = ""
    source: str | None = None

    def metric_for(self, task_type: str) -> str:
        """The ranking metric for a dataset of ``task_type``."""
        return self.metric or default_metric(task_type)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form; ``load_sweep_config(cfg.to_dict())`` gives an equal config."""
        out: dict[str, Any] = {
            "name": self.name,
            "datasets": [d.to_dict() for d in self.datasets],
            "cv": self.cv.to_dict(),
            "seed": self.seed,
            "max_pipelines": self.max_pipelines,
            "pipeline": copy.deepcopy(self.pipeline),
        }
        if self.description:
            out["description"] = self.description
        if self.task_type is not None:
            out["task_type"] = self.task_type
        if self.metric is not None:
            out["metric"] = self.metric
        return out


def load_sweep_config(source: str | Path | dict[str, Any] | SweepConfig) -> SweepConfig:
    """Load and validate a sweep config.

    Args:
        source: A ``.yaml``/``.yml``/``.json`` file path, ``"builtin:<name>"``, a dict in the
            config format, or an already loaded :class:`SweepConfig` (returned as is).

    Returns:
        The validated :class:`SweepConfig`. Relative dataset paths in a file are resolved
        against the file's directory.

    Raises:
        SweepConfigError: naming the step index/class and key at fault.
        FileNotFoundError: when the config file does not exist.
    """
    if isinstance(source, SweepConfig):
        return source
    base_dir: Path | None = None
    origin: str | None = None
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    elif isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        from n4a_store.sweep.builtin import builtin_path

        path = builtin_path(source[len(BUILTIN_PREFIX):])
        raw = _read_file(path)
        origin = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"sweep config file not found: {path}")
        raw = _read_file(path)
        base_dir = path.resolve().parent
        origin = str(path)
    if not isinstance(raw, dict):
        raise SweepConfigError(f"a sweep config must be a mapping, got {type(raw).__name__}")
    cfg = _parse(raw, base_dir)
    cfg.source = origin
    from n4a_store.sweep.expansion import expand_pipelines

    expand_pipelines(cfg)  # full validation: every expansion imports and is well formed
    return cfg


def _read_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SweepConfigError(f"cannot parse {path.name}: {exc}") from exc


def _parse(raw: dict[str, Any], base_dir: Path | None) -> SweepConfig:
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise SweepConfigError(
            f"unknown top-level key(s) {unknown}; allowed: {sorted(TOP_LEVEL_KEYS)}", key=unknown[0]
        )
    if "datasets" in raw and "dataset" in raw:
        raise SweepConfigError("give either 'datasets' or 'dataset', not both", key="dataset")
    name = raw.get("name", "sweep")
    if not isinstance(name, str) or not name.strip():
        raise SweepConfigError("must be a non-empty string", key="name")
    task_type = raw.get("task_type")
    if task_type is not None and task_type not in TASK_TYPES:
        raise SweepConfigError(f"must be one of {list(TASK_TYPES)}, got {task_type!r}", key="task_type")
    metric = raw.get("metric")
    if metric is not None:
        if metric not in METRICS:
            raise SweepConfigError(f"unknown metric {metric!r}; known: {sorted(METRICS)}", key="metric")
        if task_type is not None and METRICS[metric].task_type != task_type:
            raise SweepConfigError(
                f"metric {metric!r} is for {METRICS[metric].task_type}, not {task_type}", key="metric"
            )
    seed = raw.get("seed", 0)
    if not _is_int(seed):
        raise SweepConfigError(f"must be an integer, got {seed!r}", key="seed")
    max_pipelines = raw.get("max_pipelines", 10_000)
    if not _is_int(max_pipelines) or max_pipelines < 1:
        raise SweepConfigError(f"must be a positive integer, got {max_pipelines!r}", key="max_pipelines")
    datasets_raw = raw.get("datasets", raw.get("dataset"))
    if datasets_raw is None:
        raise SweepConfigError("a sweep needs at least one dataset", key="datasets")
    if not isinstance(datasets_raw, list):
        datasets_raw = [datasets_raw]
    if not datasets_raw:
        raise SweepConfigError("a sweep needs at least one dataset", key="datasets")
    datasets = [_parse_dataset(d, i, base_dir) for i, d in enumerate(datasets_raw)]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise SweepConfigError(f"dataset names must be unique, got {names}", key="datasets")
    pipeline = raw.get("pipeline")
    if not isinstance(pipeline, list) or not pipeline:
        raise SweepConfigError("must be a non-empty list of steps, the model last", key="pipeline")
    for idx, node in enumerate(pipeline):
        _validate_step_node(node, idx, top_level=True)
    return SweepConfig(
        name=name.strip(),
        datasets=datasets,
        pipeline=pipeline,
        task_type=task_type,
        cv=_parse_cv(raw.get("cv", {}), int(seed)),
        metric=metric,
        seed=int(seed),
        max_pipelines=int(max_pipelines),
        description=str(raw.get("description", "") or ""),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_cv(raw: Any, seed: int) -> CVConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SweepConfigError(f"must be a mapping, got {type(raw).__name__}", key="cv")
    unknown = sorted(set(raw) - CV_KEYS)
    if unknown:
        raise SweepConfigError(f"unknown key; allowed: {sorted(CV_KEYS)}", key=f"cv.{unknown[0]}")
    n_splits = raw.get("n_splits", 5)
    if not _is_int(n_splits) or n_splits < 2:
        raise SweepConfigError(f"must be an integer >= 2, got {n_splits!r}", key="cv.n_splits")
    shuffle = raw.get("shuffle", True)
    if not isinstance(shuffle, bool):
        raise SweepConfigError(f"must be true or false, got {shuffle!r}", key="cv.shuffle")
    cv_seed = raw.get("seed", seed)
    if not _is_int(cv_seed):
        raise SweepConfigError(f"must be an integer, got {cv_seed!r}", key="cv.seed")
    stratified = raw.get("stratified")
    if stratified is not None and not isinstance(stratified, bool):
        raise SweepConfigError(f"must be true, false or null, got {stratified!r}", key="cv.stratified")
    return CVConfig(n_splits=n_splits, shuffle=shuffle, seed=cv_seed, stratified=stratified)


def _parse_dataset(raw: Any, idx: int, base_dir: Path | None) -> DatasetConfig:
    key = f"datasets[{idx}]"
    if isinstance(raw, str):
        if raw.startswith("chemotools:"):
            raw = {"chemotools": raw.split(":", 1)[1]}
        else:
            raise SweepConfigError(
                "a file dataset needs a mapping with 'path' and 'target' "
                f"(got the string {raw!r}); builtin datasets are written 'chemotools:<name>'",
                key=key,
            )
    if not isinstance(raw, dict):
        raise SweepConfigError(f"must be a mapping or 'chemotools:<name>', got {raw!r}", key=key)
    unknown = sorted(set(raw) - DATASET_KEYS)
    if unknown:
        raise SweepConfigError(f"unknown key; allowed: {sorted(DATASET_KEYS)}", key=f"{key}.{unknown[0]}")
    if ("chemotools" in raw) == ("path" in raw):
        raise SweepConfigError("give exactly one of 'chemotools' or 'path'", key=key)
    task_type = raw.get("task_type")
    if task_type is not None and task_type not in TASK_TYPES:
        raise SweepConfigError(f"must be one of {list(TASK_TYPES)}", key=f"{key}.task_type")
    test_fraction = raw.get("test_fraction")
    if test_fraction is not None and (
        not isinstance(test_fraction, int | float) or isinstance(test_fraction, bool)
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise SweepConfigError(f"must be a number in (0, 1), got {test_fraction!r}", key=f"{key}.test_fraction")
    drop = raw.get("drop_columns", [])
    if not isinstance(drop, list) or not all(isinstance(c, str) for c in drop):
        raise SweepConfigError("must be a list of column names", key=f"{key}.drop_columns")
    target = raw.get("target")
    if target is not None and not isinstance(target, str):
        raise SweepConfigError("must be a column name", key=f"{key}.target")
    if "chemotools" in raw:
        ref = raw["chemotools"]
        if ref not in CHEMOTOOLS_DATASETS:
            raise SweepConfigError(
                f"unknown chemotools dataset {ref!r}; known: {list(CHEMOTOOLS_DATASETS)}",
                key=f"{key}.chemotools",
            )
        if raw.get("test_path") is not None:
            raise SweepConfigError("test_path is only for file datasets", key=f"{key}.test_path")
        return DatasetConfig(
            name=str(raw.get("name", ref)), source="chemotools", ref=ref, target=target,
            task_type=task_type, drop_columns=tuple(drop),
            test_fraction=None if test_fraction is None else float(test_fraction),
        )
    path = raw["path"]
    if not isinstance(path, str) or not path:
        raise SweepConfigError("must be a file path", key=f"{key}.path")
    if target is None:
        raise SweepConfigError("a file dataset needs its target column", key=f"{key}.target")
    test_path = raw.get("test_path")
    if test_path is not None and not isinstance(test_path, str):
        raise SweepConfigError("must be a file path", key=f"{key}.test_path")
    return DatasetConfig(
        name=str(raw.get("name", Path(path).stem)),
        source="file",
        ref=_resolve(path, base_dir),
        target=target,
        test_path=None if test_path is None else _resolve(test_path, base_dir),
        task_type=task_type,
        drop_columns=tuple(drop),
        test_fraction=None if test_fraction is None else float(test_fraction),
    )


def parse_dataset_config(raw: dict[str, Any] | str, base_dir: Path | None = None) -> DatasetConfig:
    """Validate one dataset entry (``"chemotools:<name>"`` or a mapping) of a sweep config."""
    return _parse_dataset(raw, 0, base_dir)


def _resolve(path: str, base_dir: Path | None) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return str(p)


def _step_class_label(node: Any) -> str | None:
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and isinstance(node.get("class"), str):
        return node["class"]
    return None


def _validate_step_node(node: Any, idx: int, *, top_level: bool, path: str = "") -> None:
    """Check one raw pipeline entry (a step, a step-level generator, or a spliced list)."""
    label = _step_class_label(node)
    where = path or f"pipeline[{idx}]"
    if node is None:
        if top_level:
            raise SweepConfigError("a step cannot be null (use _or_ with null to make it optional)",
                                   step_idx=idx)
        return
    if isinstance(node, str):
        return
    if isinstance(node, list):
        if top_level:
            raise SweepConfigError("a step must be a mapping with 'class'; lists of steps are "
                                   "only allowed as _or_ alternatives", step_idx=idx)
        for j, item in enumerate(node):
            if item is None or isinstance(item, list):
                raise SweepConfigError(f"{where}[{j}]: a list alternative must hold steps",
                                       step_idx=idx)
            _validate_step_node(item, idx, top_level=False, path=f"{where}[{j}]")
        return
    if not isinstance(node, dict):
        raise SweepConfigError(f"a step must be a mapping with 'class', got {node!r}", step_idx=idx)
    if is_generator(node):
        if RANGE_KEY in node:
            raise SweepConfigError("_range_ cannot stand for a whole step (use _or_)",
                                   step_idx=idx, key=RANGE_KEY)
        try:
            validate_generators(node, where)
        except GeneratorError as exc:
            raise SweepConfigError(str(exc), step_idx=idx, key=OR_KEY) from exc
        for j, alternative in enumerate(node[OR_KEY]):
            _validate_step_node(alternative, idx, top_level=False, path=f"{where}._or_[{j}]")
        return
    unknown = sorted(set(node) - STEP_KEYS)
    if unknown:
        raise SweepConfigError(f"unknown step key; allowed: {sorted(STEP_KEYS)}",
                               step_idx=idx, step_class=label, key=unknown[0])
    if "class" not in node:
        raise SweepConfigError("every step needs 'class' (a dotted import path)",
                               step_idx=idx, key="class")
    cls = node["class"]
    try:
        validate_generators(cls, f"{where}.class")
        validate_generators(node.get("params", {}), f"{where}.params")
    except GeneratorError as exc:
        raise SweepConfigError(str(exc), step_idx=idx, step_class=label,
                               key="class" if exc.path.startswith(f"{where}.class") else
                               _param_key(exc.path, f"{where}.")) from exc
    if not (isinstance(cls, str) or is_generator(cls)):
        raise SweepConfigError(f"must be a dotted import path, got {cls!r}", step_idx=idx, key="class")
    params = node.get("params", {})
    if params is not None and not (isinstance(params, dict)):
        raise SweepConfigError(f"must be a mapping of constructor arguments, got {params!r}",
                               step_idx=idx, step_class=label, key="params")
    if isinstance(params, dict) and not is_generator(params):
        for pkey in params:
            if not isinstance(pkey, str):
                raise SweepConfigError("parameter names must be strings", step_idx=idx,
                                       step_class=label, key=f"params.{pkey}")


def _param_key(path: str, prefix: str) -> str:
    return path[len(prefix):] if path.startswith(prefix) else path


@lru_cache(maxsize=512)
def import_class(path: str) -> type:
    """Import ``package.module.Class`` and return the class (ImportError/AttributeError on failure)."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path like 'package.module.Class'")
    module = importlib.import_module(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if not callable(obj):
        raise ImportError(f"{path!r} is not a class")
    return obj
