"""The unit of work: each pipeline's buffered rows and files committed together, in one transaction.

Rows that belong to a pipeline (its own row, chains, predictions and their
arrays, logs) accumulate in one :class:`~n4a_store.catalog.pending.PendingWrites`
*per pipeline in flight* (:attr:`UnitOfWork.open`), so no action on one pipeline
commits or loses another's rows. ``complete_pipeline`` commits that pipeline's
buffer alone (inside ``store.batch()`` it joins :attr:`UnitOfWork.ready`, the
finished pipelines committed together when the block ends). Artifacts saved by
the process wait in :attr:`UnitOfWork.artifacts` until a chain names them.

:meth:`UnitOfWork.commit` writes one such set of rows in one catalog transaction:

1. rows whose pipeline, run or chain another process deleted meanwhile are dropped
   (their pipelines stay locked until COMMIT where the backend has row locks);
2. claims are counted from the chains committed: every reference a chain holds
   is one claim (:func:`~.writes.chain_artifact_refs`); artifacts saved by this
   process that the chains name are inserted with those claims, the others get
   them added, and the files of the new ones are written (so a concurrent gc
   either saw the claim or finished before the file was checked);
3. arrays are staged with the array backend and their references recorded;
4. rows are bulk-inserted (one statement per table), completions applied, then an
   optional ``extra(session)``.

The files of a commit (new artifacts, array parts) are written on a helper thread
(:class:`~.file_work.FileWork`) while the rows are inserted: each is fsynced, renamed
and its directory synced once (:func:`~n4a_store.fileio.batched_directory_syncs`),
and COMMIT waits until they are durable.
If anything fails, the transaction rolls back, files written for it are removed
and the rows stay buffered for a retry.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from typing import Any, Callable

from ..arrays.base import ArrayBackend, StagedArrays
from ..artifacts.base import ArtifactBackend
from ..catalog.base import Session
from ..catalog.pending import PendingArtifact, PendingWrites, artifact_table
from ..catalog.sql import SqlCatalog
from ..errors import MissingParentError
from .file_work import FileWork

#: a single pipeline buffering more rows than this is committed in parts
AUTO_FLUSH_ROWS = 20_000
_RETRIES = 5
#: key under which a buffered chain row carries the artifact references it holds
REFS_KEY = "_refs"


class UnitOfWork:
    """The write buffers of one store and the caches of ids it knows exist."""

    def __init__(self, catalog: SqlCatalog, arrays: ArrayBackend, artifacts: ArtifactBackend) -> None:
        self.catalog = catalog
        self.arrays = arrays
        self.artifacts = artifacts
        #: rows of each pipeline in flight, by pipeline id
        self.open: dict[str, PendingWrites] = {}
        #: finished pipelines whose commit ``store.batch()`` deferred
        self.ready = PendingWrites()
        #: artifacts saved by this process whose bytes are kept (see PendingArtifact)
        self.saved: dict[str, PendingArtifact] = {}
        #: pipelines dropped at commit because another process deleted them (or their run)
        self.lost: set[str] = set()
        self.pipelines: dict[str, tuple[str, str | None]] = {}
        self.chains: set[str] = set()
        self.runs: set[str] = set()
        self.batch_depth = 0

    # -- buffers ----------------------------------------------------------------------
    def buffer(self, pipeline_id: str) -> PendingWrites:
        """The buffer of one pipeline in flight (created on first use)."""
        buf = self.open.get(pipeline_id)
        if buf is None:
            buf = self.open[pipeline_id] = PendingWrites()
        return buf

    def buffers(self) -> tuple[PendingWrites, ...]:
        """Every buffer of this store: pipelines in flight, then the batch's finished ones."""
        return (*self.open.values(), self.ready)

    def buffered_row(self, table: str, key: str, value: Any) -> dict[str, Any] | None:
        """A row this process buffers (read-your-writes by id), or None.

        ``table`` is ``pipelines``, ``chains``, ``predictions`` or ``arrays`` (the
        array records of buffered predictions).
        """
        for buf in self.buffers():
            if table == "pipelines":
                found = buf.pipelines.get(value)
                if found is not None:
                    return dict(found)
                continue
            for row in getattr(buf, table):
                if row.get(key) == value:
                    return dict(row)
        return None

    def unstored_artifacts(self) -> bool:
        """True when an artifact saved here has not been written to the workspace yet."""
        return any(not item.stored for item in self.saved.values())

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
        """Ids neither saved by this process nor in the catalog, sorted."""
        missing = {a for a in artifact_ids if a not in self.saved}
        if not missing:
            return []
        with self.catalog.reading() as s:
            known = self.catalog.existing(s, "artifacts", "artifact_id", missing)
        return sorted(missing - known)

    # -- committing -------------------------------------------------------------------
    def maybe_autoflush(self, pipeline_id: str | None = None) -> None:
        """Commit a buffer that grew past :data:`AUTO_FLUSH_ROWS` rows (bounded memory)."""
        if self.ready.size() >= AUTO_FLUSH_ROWS:
            self.commit_ready()
        buf = self.open.get(pipeline_id) if pipeline_id is not None else None
        if buf is not None and buf.size() >= AUTO_FLUSH_ROWS:
            self.commit(rows=buf)
            self.open[pipeline_id] = PendingWrites()  # type: ignore[index]

    def commit_all(self) -> None:
        """Commit every buffer, pipelines in flight included (an explicit ``flush()``)."""
        everything = PendingWrites()
        everything.merge(self.ready)
        for buf in self.open.values():
            everything.merge(buf)
        if everything.is_empty() and not self.unstored_artifacts():
            return
        self.commit(rows=everything, unnamed=True)
        self.ready = PendingWrites()
        self.open = {}

    def commit_ready(self, *, unnamed: bool = False) -> None:
        """Commit the finished pipelines ``batch()`` deferred (and, with ``unnamed``, saved artifacts)."""
        if self.ready.is_empty() and not (unnamed and self.unstored_artifacts()):
            return
        self.commit(rows=self.ready, unnamed=unnamed)
        self.ready = PendingWrites()

    def commit(self, extra: Callable[[Session], Any] | None = None,
               after: Callable[[Any], None] | None = None, *, maintenance: bool = False,
               rows: PendingWrites | None = None, unnamed: bool = False) -> Any:
        """Commit ``rows`` plus ``extra(session)`` in one transaction; return its result.

        ``rows`` is one pipeline's buffer (or the finished pipelines of a batch); it
        is left unchanged when the commit fails, except for rows that can never be
        committed (their pipeline was deleted elsewhere). With ``unnamed``, artifacts
        saved here that no chain names yet are stored too, without claims.
        ``after(result)`` runs once the transaction committed, while the backend
        still excludes conflicting writers (file removal of deleted rows). With
        ``maintenance`` the transaction is a gc/delete (see ``SqlCatalog.writing``).
        """
        for attempt in range(_RETRIES):
            try:
                return self._commit_once(extra, after, maintenance, rows or PendingWrites(), unnamed)
            except Exception as error:  # the buffer was kept: retry transient conflicts
                if attempt == _RETRIES - 1 or not self.catalog.is_transient(error):
                    raise
                time.sleep(0.01 * (2 ** attempt))
        return None  # pragma: no cover - the loop always returns or raises

    def _artifact_rows(self, refs: Counter[str], unnamed: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Rows to insert (saved here, with their claims) and claims to add to cataloged ones."""
        new: list[dict[str, Any]] = []
        claims: dict[str, int] = {}
        for artifact_id, count in sorted(refs.items()):
            item = self.saved.get(artifact_id)
            if item is not None:
                new.append({**item.row, "ref_count": count})
            else:
                claims[artifact_id] = count
        if unnamed:
            new.extend({**item.row, "ref_count": 0} for aid, item in sorted(self.saved.items())
                       if not item.stored and aid not in refs)
        return new, claims

    def _commit_once(self, extra: Callable[[Session], Any] | None,
                     after: Callable[[Any], None] | None, maintenance: bool,
                     pending: PendingWrites, unnamed: bool) -> Any:
        if pending.is_empty() and extra is None and not (unnamed and self.unstored_artifacts()):
            return None
        staged: StagedArrays | None = None
        files: FileWork | None = None
        box: dict[str, Any] = {}
        on_commit = (lambda: after(box.get("result"))) if after is not None else None
        catalog = self.catalog
        refs: Counter[str] = Counter()
        new: list[dict[str, Any]] = []
        try:
            with catalog.writing(after_commit=on_commit, maintenance=maintenance) as s:
                self._drop_orphans(s, pending)
                for chain in pending.chains:
                    refs.update(chain[REFS_KEY])
                new, claims = self._artifact_rows(refs, unnamed)
                if new or claims:
                    catalog.add_artifact_claims(s, artifact_table(new), claims)
                # the files (new artifacts, arrays) are written and synced on another thread
                # while this one inserts the rows; COMMIT waits for them to be durable
                files = FileWork()
                for row in new:
                    files.add_artifact(self.artifacts, row["artifact_id"], row["format"],
                                       self.saved[row["artifact_id"]].data)
                if pending.arrays:
                    staged = self.arrays.stage(pending.arrays, s, defer_files=True, normalized=True)
                    files.add(staged.write)
                    for row in pending.predictions:
                        ref = staged.refs.get(row["prediction_id"])
                        if ref is not None:
                            row["array_ref"] = ref
                files.start()
                for name in ("pipelines", "chains", "predictions", "logs"):
                    if getattr(pending, name):
                        catalog.insert_rows(s, name, pending.table(name))
                if pending.completions:
                    catalog.apply_completions(s, pending.table("completions"))
                box["result"] = extra(s) if extra is not None else None
                files.wait()  # files durable here; the rows follow them at COMMIT
        except BaseException:
            if files is not None:
                files.settle()
                for artifact_id, fmt in files.created:
                    self.artifacts.remove(artifact_id, fmt)
            if staged is not None:
                staged.discard()
            for row in pending.predictions:
                row.pop("array_ref", None)
            raise
        self._after_commit(refs, new)
        return box["result"]

    def _after_commit(self, refs: Counter[str], new: list[dict[str, Any]]) -> None:
        """Account committed references against saves; forget bytes no pipeline can still name."""
        for row in new:
            self.saved[row["artifact_id"]].stored = True
        for artifact_id, count in refs.items():
            item = self.saved.get(artifact_id)
            if item is None:
                continue
            item.named += count
            if item.named >= item.saves:
                del self.saved[artifact_id]

    def _drop_orphans(self, s: Session, pending: PendingWrites) -> None:
        """Drop buffered rows whose pipeline, run or chain another process deleted meanwhile.

        They can never be committed. A warning names what was dropped, and
        ``complete_pipeline`` of such a pipeline raises ``MissingParentError``. The
        surviving pipelines (and runs) stay locked against deletes until COMMIT.
        """
        begun = set(pending.pipelines)
        pipeline_ids = {r["pipeline_id"] for r in pending.chains + pending.predictions + pending.logs}
        pipeline_ids |= set(pending.completions)
        pipeline_ids -= begun
        lost: set[str] = set()
        if pipeline_ids:
            lost = pipeline_ids - self.catalog.existing(s, "pipelines", "pipeline_id", pipeline_ids,
                                                        lock="share")
        if begun:
            run_ids = {r["run_id"] for r in pending.pipelines.values()}
            gone_runs = run_ids - self.catalog.existing(s, "runs", "run_id", run_ids, lock="share")
            lost |= {p for p, r in pending.pipelines.items() if r["run_id"] in gone_runs}
            self.runs -= gone_runs
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
            pending.pipelines.pop(pid, None)
            self.pipelines.pop(pid, None)
        self.lost |= lost
        self.chains -= gone | dropped.chain_ids()
        warnings.warn(
            f"dropped buffered rows of pipeline(s) {', '.join(sorted(lost))}: deleted by another "
            f"process before they could be committed",
            RuntimeWarning, stacklevel=5,
        )
