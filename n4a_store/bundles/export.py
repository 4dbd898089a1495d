"""``export_chain``: write a chain as a ``.n4a`` bundle or a standalone ``.n4a.py`` script."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from n4a_store.bundles.collect import ChainExport, collect_chain
from n4a_store.bundles.layout import ARTIFACT_DIR, MANIFEST_MEMBER
from n4a_store.errors import InvalidInputError
from n4a_store.fileio import atomic_path, write_atomic

EXPORT_FORMATS = ("n4a", "n4a.py")
# Fixed member timestamp so that a bundle's bytes depend only on its content and manifest.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def export_chain(store: Any, chain_id: str, output_path: str | Path, format: str = "n4a",
                 *, key: str | bytes | None = None) -> Path:
    """Export a chain as a ``.n4a`` bundle (``format="n4a"``) or a script (``format="n4a.py"``).

    The file is written atomically (temporary file, then rename). Parent directories are created.
    With a signing key (``key=`` or ``$N4A_BUNDLE_KEY``) the bundle carries ``manifest.sig``.

    Returns:
        The path written.
    """
    if format not in EXPORT_FORMATS:
        raise InvalidInputError(f"unknown export format {format!r}; expected one of {EXPORT_FORMATS}")
    export = collect_chain(store, chain_id)
    output_path = Path(output_path)
    if format == "n4a":
        return write_bundle(export, output_path, key=key)
    from n4a_store.bundles.script import render_script

    return write_atomic(output_path, render_script(export).encode("utf-8"))


def write_bundle(export: ChainExport, output_path: Path, *, key: str | bytes | None = None) -> Path:
    """Write ``manifest.json``, ``chain.json``, the artifacts (and ``manifest.sig``) into one zip."""
    from n4a_store.bundles.safety import SIGNATURE_MEMBER, sign_manifest, signing_key

    members = export.members()
    manifest = export.manifest(members)
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    secret = signing_key(key)
    with atomic_path(output_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            _add(archive, MANIFEST_MEMBER, manifest_bytes)
            if secret is not None:
                _add(archive, SIGNATURE_MEMBER, sign_manifest(manifest_bytes, secret))
            for name in sorted(members):
                _add(archive, name, members[name], compress=not name.startswith(f"{ARTIFACT_DIR}/"))
    return output_path


def _add(archive: zipfile.ZipFile, name: str, data: bytes, compress: bool = True) -> None:
    """Add one member. Artifacts are stored uncompressed: pickled float arrays barely
    compress (~15%) and inflating them would dominate bundle predict latency."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)
