"""Integrity of a workspace: ``verify`` checks every promise the store makes, ``repair`` restores it.

* :mod:`.report` - the structured report (findings, counts, what was repaired);
* :mod:`.scan` - what is on disk: artifact files, stray temporary files;
* :mod:`.verify` - the checks, read-only;
* :mod:`.repair` - the fixes, under the catalog's maintenance lock.
"""

from .report import Finding, VerifyReport
from .repair import repair_store
from .verify import verify_store

__all__ = ["Finding", "VerifyReport", "repair_store", "verify_store"]
