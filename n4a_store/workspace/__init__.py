"""The WorkspaceStore facade, split by concern.

* :mod:`.store` - the public API (thin methods that validate, buffer and delegate);
* :mod:`.writes` - argument validation and row building;
* :mod:`.commit` - the unit of work (buffer -> one transaction, file publish/rollback);
* :mod:`.maintenance` - deletes, gc and array compaction.
"""

from .store import WorkspaceStore
from .writes import chain_artifact_refs

__all__ = ["WorkspaceStore", "chain_artifact_refs"]
