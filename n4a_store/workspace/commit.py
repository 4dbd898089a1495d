"""The unit of work: buffered rows and files committed together, in one transaction.

Rows that belong to a pipeline (chains, predictions and their arrays, logs) and
artifact claims accumulate in :class:`~n4a_store.catalog.pending.PendingWrites`.
:meth:`UnitOfWork.commit` writes them in one catalog transaction:

1. rows whose pipeline or chain another process deleted meanwhile are dropped
   (their pipelines stay locked until COMMIT where the backend has row locks);
2. artifact claims are upserted, then artifact files written (so a concurrent
   gc either saw the claim or finished before the file was checked);
3. arrays are staged with the array backend and their references recorded;
4. rows are bulk-inserted, completions applied, then an optional ``extra(session)``.

If anything fails, the transaction rolls back, files written for it are removed
and the buffer is kept for a retry.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

from ..arrays.base import ArrayBackend, StagedArrays
from ..artifacts.base import ArtifactBackend
from ..catalog.base import Session
from ..catalog.columns import decode_json_columns
from ..catalog.pending import PendingWrites
from ..catalog.sql import SqlCatalog
from ..errors import MissingParentError
from ..fileio import batched_directory_syncs
from .writes import chain_artifact_refs

#: a single pipeline buffering more rows than this is committed in parts
AUTO_FLUSH_ROWS = 20_000
_RETRIES = 5


class UnitOfWork:
    """The write buffer of one store and the caches of ids it knows exist."""

    def __init__(self, catalog: SqlCatalog, arrays: ArrayBackend, artifacts: ArtifactBackend) -> None:
        self.catalog = catalog
        self.arrays = arrays
        self.artifacts = artifacts
        self.pending = PendingWrites()
        self.pipelines: dict[str, tuple[str, str | None]] = {}
        self.chains: set[str] = set()
        self.runs: set[str] = set()
        self.batch_depth = 0

    # -- known ids ------------------------------------------------------------------
    def pipeline_owner(self, pipeline_id: str) -> tuple[str, str | None]:
        """(run_id, dataset_name) of a pipeline, cached; MissingParentError if unknown."""
        if not isinstance(pipeline_id, str):
            raise MissingParentError("pipeline", str(pipeline_id))
        info = self.pipelines.get(pipeline_id)
        if info is not None:
            return info
        with self.catalog.reading() as s:
            found = self.catalog.pipeline_owner(s, pipeline_id)
        if found is None:
            raise MissingParentError("pipeline", pipeline_id)
        self.pipelines[pipeline_id] = found
        return found

    def require_chain(self, chain_id: str) -> None:
        """MissingParentError unless the chain is buffered or in the catalog."""
        if not isinstance(chain_id, str):
            raise MissingParentError("chain", str(chain_id))
        if chain_id in self.chains:
            return
        with self.catalog.reading() as s:
            found = self.catalog.chain_exists(s, chain_id)
        if not found:
            raise MissingParentError("chain", chain_id)
        self.chains.add(chain_id)

    def require_run(self, run_id: str) -> None:
        """MissingParentError unless the run is in the catalog (cached)."""
        if not isinstance(run_id, str):
            raise MissingParentError("run", str(run_id))
        if run_id in self.runs:
            return
        with self.catalog.reading() as s:
            self.catalog.require_run(s, run_id)
        self.runs.add(run_id)

    def unknown_artifacts(self, artifact_ids: set[str]) -> list[str]:
        """Ids neither buffered nor in the catalog, sorted."""
        missing = {a for a in artifact_ids if a not in self.pending.artifacts}
        if not missing:
            return []
        with self.catalog.reading() as s:
            known = self.catalog.existing(s, "artifacts", "artifact_id", missing)
        return sorted(missing - known)

    # -- committing -------------------------------------------------------------------
    def maybe_autoflush(self) -> None:
        """Commit when the buffer grew past :data:`AUTO_FLUSH_ROWS` rows."""
        if self.pending.size() >= AUTO_FLUSH_ROWS:
            self.commit()

    def commit(self, extra: Callable[[Session], Any] | None = None,
               after: Callable[[Any], None] | None = None, *, maintenance: bool = False) -> Any:
        """Commit buffered rows plus ``extra(session)`` in one transaction; return its result.

        ``after(result)`` runs once the transaction committed, while the backend
        still excludes conflicting writers (file removal of deleted rows). With
        ``maintenance`` the transaction is a gc/delete (see ``SqlCatalog.writing``).
        """
        for attempt in range(_RETRIES):
            try:
                return self._commit_once(extra, after, maintenance)
            except Exception as error:  # the buffer was restored: retry transient conflicts
                if attempt == _RETRIES - 1 or not self.catalog.is_transient(error):
                    raise
                time.sleep(0.01 * (2 ** attempt))
        return None  # pragma: no cover - the loop always returns or raises

    def _commit_once(self, extra: Callable[[Session], Any] | None,
                     after: Callable[[Any], None] | None, maintenance: bool) -> Any:
        pending = self.pending
        if pending.is_empty() and extra is None:
            return None
        self.pending = PendingWrites()
        staged: StagedArrays | None = None
        created: list[tuple[str, str]] = []
        box: dict[str, Any] = {}
        on_commit = (lambda: after(box.get("result"))) if after is not None else None
        catalog = self.catalog
        try:
            with catalog.writing(after_commit=on_commit, maintenance=maintenance) as s, \
                    batched_directory_syncs():
                self._drop_orphans(s, pending)
                if pending.artifacts:
                    catalog.add_artifact_claims(s, pending.table("artifacts"))
                    for artifact_id in sorted(pending.artifacts):
                        item = pending.artifacts[artifact_id]
                        if self.artifacts.write(artifact_id, item.row["format"], item.data):
                            created.append((artifact_id, item.row["format"]))
                if pending.arrays:
                    staged = self.arrays.stage(pending.arrays, s)
                    for row in pending.predictions:
                        ref = staged.refs.get(row["prediction_id"])
                        if ref is not None:
                            row["array_ref"] = ref
                for name in ("pipelines", "chains", "predictions", "logs"):
                    if getattr(pending, name):
                        catalog.insert_rows(s, name, pending.table(name))
                if pending.completions:
                    catalog.apply_completions(s, pending.table("completions"))
                box["result"] = extra(s) if extra is not None else None
        except BaseException:
            if staged is not None:
                staged.discard()
            for artifact_id, fmt in created:
                self.artifacts.remove(artifact_id, fmt)
            for row in pending.predictions:
                row.pop("array_ref", None)
            self.pending = pending  # nothing was committed: keep it all for a retry
            raise
        return box["result"]

    def _drop_orphans(self, s: Session, pending: PendingWrites) -> None:
        """Drop buffered rows whose pipeline or chain another process deleted meanwhile.

        They can never be committed. Their artifact claims are withdrawn, and a
        warning names what was dropped (the call that triggered the commit may be
        about something else). The surviving pipelines stay locked against deletes
        until COMMIT.
        """
        pipeline_ids = {r["pipeline_id"] for r in pending.chains + pending.predictions + pending.logs}
        pipeline_ids |= set(pending.completions)
        pipeline_ids -= set(pending.pipelines)
        if not pipeline_ids:
            return
        found = self.catalog.existing(s, "pipelines", "pipeline_id", pipeline_ids, lock="share")
        lost = pipeline_ids - found
        chain_ids = {r["chain_id"] for r in pending.predictions if r["chain_id"]} - pending.chain_ids()
        gone: set[str] = set()
        if chain_ids:
            gone = chain_ids - self.catalog.existing(s, "chains", "chain_id", chain_ids)
            lost |= {r["pipeline_id"] for r in pending.predictions if r["chain_id"] in gone}
        if not lost:
            return
        dropped = pending.drop_pipelines(lost)
        pending.logs = [r for r in pending.logs if r["pipeline_id"] not in lost]
        for pid in lost:
            pending.completions.pop(pid, None)
            self.pipelines.pop(pid, None)
        self.chains -= gone | dropped.chain_ids()
        for chain in dropped.chains:
            for ref in chain_artifact_refs(decode_json_columns("chains", chain)):
                item = pending.artifacts.get(ref)
                if item is not None:
                    item.claims -= 1
        warnings.warn(
            f"dropped buffered rows of pipeline(s) {', '.join(sorted(lost))}: deleted by another "
            f"process before they could be committed",
            RuntimeWarning, stacklevel=5,
        )
