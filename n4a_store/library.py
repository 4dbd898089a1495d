"""PipelineLibrary: reusable pipeline templates stored as JSON files in the workspace.

Each template is ``<workspace>/library/templates/<name>.json``::

    {"name": ..., "category": ..., "description": ..., "tags": [...], "metrics": {...},
     "pipeline_config": {...}, "created_at": "...", "updated_at": "...", "format_version": 1}

Names must be safe file names: 1-128 characters from letters, digits, ``_``,
``-`` and ``.``, starting with a letter or digit (no path separators, no ``..``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from n4a_store.bundles.jsonable import json_ready
from n4a_store.errors import InvalidInputError, N4AError
from n4a_store.fileio import write_atomic

__all__ = ["PipelineLibrary", "TemplateNotFoundError"]

TEMPLATE_FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                       *(f"lpt{i}" for i in range(1, 10))})


class TemplateNotFoundError(N4AError, KeyError):
    """No template with that name exists in the library."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "template not found"


class PipelineLibrary:
    """Save, list, load and delete pipeline templates of one workspace."""

    def __init__(self, workspace_path: str | Path) -> None:
        self.workspace_path = Path(workspace_path)
        self.templates_dir = self.workspace_path / "library" / "templates"

    def save_template(self, pipeline_config: Any, name: str, category: str = "general",
                      description: str = "", tags: list[str] | None = None,
                      metrics: dict[str, float] | None = None, *, overwrite: bool = True) -> Path:
        """Save a template (replacing one of the same name unless ``overwrite=False``)."""
        path = self._path(name)
        if not isinstance(category, str) or not category:
            raise InvalidInputError("category must be a non-empty string")
        tags = list(tags or [])
        if not all(isinstance(t, str) and t for t in tags):
            raise InvalidInputError(f"tags must be non-empty strings, got {tags!r}")
        if metrics is not None and not isinstance(metrics, dict):
            raise InvalidInputError("metrics must be a dict of name -> value")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        created_at = now
        if path.exists():
            if not overwrite:
                raise InvalidInputError(f"template {name!r} already exists")
            created_at = self._read(path, name).get("created_at", now)
        document = {
            "format_version": TEMPLATE_FORMAT_VERSION,
            "name": name,
            "category": category,
            "description": description or "",
            "tags": sorted(dict.fromkeys(tags)),
            "metrics": json_ready(metrics or {}),
            "pipeline_config": json_ready(pipeline_config, nan_to_none=False),
            "created_at": created_at,
            "updated_at": now,
        }
        try:
            text = json.dumps(document, indent=2, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"template {name!r} is not JSON-serialisable: {error}") from None
        return write_atomic(path, (text + "\n").encode("utf-8"))

    def list_templates(self, category: str | None = None,
                       tags: list[str] | None = None) -> list[dict[str, Any]]:
        """Template summaries (everything but the config), sorted by name.

        Args:
            category: Keep only templates of this category.
            tags: Keep only templates carrying every one of these tags.
        """
        if not self.templates_dir.is_dir():
            return []
        wanted = set(tags or [])
        found = []
        for path in sorted(self.templates_dir.glob("*.json")):
            name = path.stem
            if not _SAFE_NAME.match(name):
                continue
            document = self._read(path, name)
            if category is not None and document.get("category") != category:
                continue
            if not wanted <= set(document.get("tags") or []):
                continue
            found.append({k: v for k, v in document.items() if k != "pipeline_config"})
        return found

    def load_template(self, name: str) -> Any:
        """The pipeline configuration saved under ``name``."""
        return self.get_template(name)["pipeline_config"]

    def get_template(self, name: str) -> dict[str, Any]:
        """The whole template document (metadata and ``pipeline_config``)."""
        path = self._path(name)
        if not path.is_file():
            raise TemplateNotFoundError(f"template {name!r} not found in {self.templates_dir.name}/")
        return self._read(path, name)

    def delete_template(self, name: str) -> bool:
        """Delete a template; return False if it did not exist."""
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name \
                or name.endswith(".") or name.split(".", 1)[0].lower() in _RESERVED:
            raise InvalidInputError(
                f"template name {name!r} is not a safe file name: use 1-128 letters, digits, "
                f"'_', '-' or '.', starting with a letter or digit")
        return self.templates_dir / f"{name}.json"

    @staticmethod
    def _read(path: Path, name: str) -> dict[str, Any]:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise InvalidInputError(f"template {name!r} is not valid JSON: {error}") from None
        if not isinstance(document, dict) or "pipeline_config" not in document:
            raise InvalidInputError(f"template {name!r} is not a pipeline template")
        return document
