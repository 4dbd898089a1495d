"""``WorkspaceStore.verify(repair=True)``: fix what can be fixed, never remove anything referenced.

In one maintenance transaction (no writer is between writing its files and its
COMMIT meanwhile, and none can start):

1. claims are recounted from the chains (``ref_count`` = references held);
2. artifacts left with no claim that no chain names are collected (rows, then files),
   except those created within ``grace`` seconds (a pipeline in flight may name them yet);
3. artifact files with no catalog row and temporary files under ``artifacts/``
   are removed after COMMIT, still under the lock (only commits write there).

Then array rows with no catalog prediction are tombstoned (another maintenance
transaction) and the arrays compacted, and temporary files elsewhere (array
parts, tombstones, templates, exports: written outside the catalog lock) are
removed once older than ``grace`` seconds. A final verify is returned.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..catalog.columns import decode_json_columns
from ..workspace import maintenance
from ..workspace.writes import now
from .report import VerifyReport
from .scan import artifact_files, remove_file, tmp_files
from .verify import DEFAULT_GRACE, Progress, chain_names, verify_store

if TYPE_CHECKING:
    from pathlib import Path

    from ..workspace.store import WorkspaceStore


def _fix_catalog(store: "WorkspaceStore", grace: float) -> dict[str, int]:
    """Steps 1-3 of the module docstring; return what was done."""
    catalog, uow = store._catalog, store._uow
    root = store.workspace_path / "artifacts"
    doomed: list["Path"] = []
    done: dict[str, int] = {}

    def fix(s: Any) -> None:
        held: Counter = Counter()
        for row in catalog.chain_reference_rows(s):
            held.update(chain_names(decode_json_columns("chains", row))[0])
        rows = catalog.artifact_claim_rows(s)
        recount = {a: held.get(a, 0) for a, _, n in rows if n != held.get(a, 0)}
        catalog.set_ref_counts(s, recount)
        # an artifact saved within the grace period may belong to a pipeline still in flight
        # whose chain is not committed yet: its row stays until a later repair or gc
        fresh = catalog.artifacts_created_since(s, now() - timedelta(seconds=grace))
        dead = catalog.collect_dead_artifacts(s, keep=set(uow.saved) | fresh)
        cataloged = {a for a, _, _ in rows} - {a for a, _ in dead}
        files, others = artifact_files(root)
        unreferenced = [p for a, (_, p) in files.items() if a not in cataloged]
        doomed.extend(unreferenced + [o.path for o in others])
        doomed.extend(f.path for f in tmp_files(root))
        done.update(claims_recounted=len(recount), artifacts_collected=len(dead),
                    unreferenced_files_removed=len(unreferenced) + len(others))

    def remove(_: Any) -> None:
        for path in doomed:
            remove_file(path)

    uow.commit(fix, after=remove, maintenance=True)
    done["stray_tmp_removed"] = len(doomed) - done["unreferenced_files_removed"]
    return done


def repair_store(store: "WorkspaceStore", *, grace: float = DEFAULT_GRACE,
                 progress: Progress | None = None) -> VerifyReport:
    """Repair the workspace behind ``store``; return the verify report taken afterwards.

    ``report.repaired`` says what was done. Findings left (``report.findings``)
    are what no repair can restore: missing or corrupted artifact files a chain
    still needs, predictions whose arrays are gone.
    """
    done = _fix_catalog(store, grace)
    done["orphan_arrays_tombstoned"] = len(maintenance.tombstone_orphans(store._uow, None))
    done["array_rows_compacted"] = store._uow.arrays.compact(None)
    root = store.workspace_path / "artifacts"
    outside = [f for f in tmp_files(store.workspace_path) if f.age >= grace and root not in f.path.parents]
    done["stray_tmp_removed"] += sum(remove_file(f.path) for f in outside)
    report = verify_store(store, grace=grace, progress=progress)
    report.repaired = done
    return report
