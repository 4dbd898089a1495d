"""Portable chain exports.

- ``.n4a`` bundle: a zip with ``manifest.json``, ``chain.json`` and the chain's artifacts,
  readable without a workspace (:func:`n4a_store.bundles.predict.predict`) and importable into
  one (:func:`n4a_store.bundles.importer.import_bundle`).
- ``.n4a.py`` script: a standalone Python file embedding the chain and its artifacts.

Submodules are imported on demand; nothing here is imported eagerly.
"""
