"""Names and constants of the ``.n4a`` bundle layout, and the manifest's version record."""

from __future__ import annotations

import platform
import re
from functools import lru_cache
from importlib import metadata
from typing import Any, Iterable

BUNDLE_FORMAT = "n4a-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_MEMBER = "manifest.json"
CHAIN_MEMBER = "chain.json"
ARTIFACT_DIR = "artifacts"
FORMAT_EXTENSIONS = {"joblib": "joblib", "cloudpickle": "pkl"}
ARTIFACT_ID_PATTERN = re.compile(r"^[0-9a-f]{64}$")

# Libraries recorded in every manifest; those of the chain's operators are added.
BASE_LIBRARIES = ("numpy", "joblib")


def artifact_member(artifact_id: str, format: str) -> str:
    """Zip member name of an artifact: ``artifacts/<sha256>.<ext>``."""
    return f"{ARTIFACT_DIR}/{artifact_id}.{FORMAT_EXTENSIONS[format]}"


def chain_artifact_ids(chain: dict) -> list[str]:
    """Every artifact id a chain refers to, in first-seen order."""
    seen: dict[str, None] = {}
    for step in chain.get("steps") or []:
        if step.get("artifact_id"):
            seen[step["artifact_id"]] = None
        for aid in (step.get("fold_artifacts") or {}).values():
            seen[aid] = None
    for mapping in (chain.get("fold_artifacts") or {}, chain.get("shared_artifacts") or {}):
        for aid in mapping.values():
            if aid:
                seen[aid] = None
    return list(seen)


@lru_cache(maxsize=1)
def _module_distributions() -> dict[str, list[str]]:
    try:
        return dict(metadata.packages_distributions())
    except Exception:  # pragma: no cover - broken environments
        return {}


def distribution_of(module_name: str) -> str | None:
    """Installed distribution providing a top-level module (``sklearn`` -> ``scikit-learn``)."""
    top = module_name.split(".", 1)[0]
    dists = _module_distributions().get(top)
    return dists[0] if dists else None


def library_versions(operator_classes: Iterable[str], formats: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python, numpy, joblib, n4a and the libraries defining the operators."""
    names: dict[str, None] = dict.fromkeys(BASE_LIBRARIES)
    if "cloudpickle" in set(formats):
        names["cloudpickle"] = None
    for operator_class in operator_classes:
        dist = distribution_of(operator_class)
        if dist:
            names[dist] = None
    versions: dict[str, Any] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        versions["n4a"] = metadata.version("n4a")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        from n4a_store import __version__

        versions["n4a"] = __version__
    return versions


def installed_version(name: str) -> str | None:
    """Installed version of a distribution (``python`` for the interpreter), or ``None``."""
    if name == "python":
        return platform.python_version()
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
