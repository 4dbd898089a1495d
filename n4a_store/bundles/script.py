"""Render a chain as a standalone ``.n4a.py`` script (template ``script.n4a.py.tmpl``).

The script embeds the replay engine's source verbatim, the chain as JSON, and
every artifact as base64 keyed by its SHA-256; it checks each hash before
unpickling anything. It needs numpy, joblib and the model's own libraries.
"""

from __future__ import annotations

import base64
import json
import re
from importlib import resources
from pathlib import Path

from n4a_store.bundles.collect import ChainExport

TEMPLATE_NAME = "script.n4a.py.tmpl"
_MARKER = re.compile(r"@@[A-Z_]+@@")
_FUTURE_IMPORT = "from __future__ import annotations\n"


def engine_source() -> str:
    """Source of n4a_store.chains.engine, minus its ``__future__`` import (the script has one)."""
    from n4a_store.chains import engine

    source = Path(engine.__file__).read_text(encoding="utf-8")
    return source.replace(_FUTURE_IMPORT, "", 1)


def render_script(export: ChainExport) -> str:
    """The text of the standalone script for one chain."""
    template = resources.files("n4a_store.bundles").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")
    manifest = export.manifest(export.members())
    libraries = ", ".join(f"{name} {version}" for name, version in sorted(manifest["libraries"].items()))
    artifact_lines = []
    for aid, artifact in export.artifacts.items():
        encoded = base64.encodebytes(artifact.data).decode("ascii")
        artifact_lines.append(f'    "{aid}": """\n{encoded}""",')
    replacements = {
        "@@CHAIN_ID@@": _one_line(export.chain.get("chain_id")),
        "@@MODEL_CLASS@@": _one_line(export.chain.get("model_class")),
        "@@PREPROCESSINGS@@": _one_line(export.chain.get("preprocessings") or "(none)"),
        "@@TASK_TYPE@@": _one_line(export.task_type),
        "@@CREATED_AT@@": _one_line(manifest["created_at"]),
        "@@LIBRARIES@@": _one_line(libraries),
        "@@MANIFEST_JSON@@": repr(json.dumps(manifest, sort_keys=True)),
        "@@CHAIN_JSON@@": repr(json.dumps(export.chain, sort_keys=True)),
        "@@FORMATS_JSON@@": repr(json.dumps({aid: a.format for aid, a in export.artifacts.items()})),
        "@@ARTIFACT_DATA@@": "\n".join(artifact_lines),
        "@@ENGINE@@": engine_source(),
    }
    # One pass, so text inserted for one marker is never scanned for another.
    return _MARKER.sub(lambda match: replacements[match.group(0)], template)


def _one_line(value: object) -> str:
    """A value safe to place inside the script's docstring."""
    return str(value).replace("\\", "/").replace('"""', "'''").replace("\n", " ")
