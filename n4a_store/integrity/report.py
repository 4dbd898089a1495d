"""The structured report of :meth:`WorkspaceStore.verify`."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

#: every kind of finding, with what it means
KINDS: dict[str, str] = {
    "artifact_missing": "an artifact in the catalog has no file",
    "artifact_corrupt": "an artifact file does not hash to its id",
    "chain_artifact_missing": "a chain names an artifact the catalog does not hold",
    "claims_mismatch": "an artifact's ref_count differs from the references the chains hold",
    "arrays_missing": "a prediction recorded with arrays has none in the array backend",
    "orphan_arrays": "arrays whose prediction is not in the catalog",
    "unreferenced_file": "an artifact file with no catalog row",
    "stray_tmp": "a temporary file left by an atomic write that never finished",
}

#: findings repair can fix without losing anything still referenced
REPAIRABLE = {"claims_mismatch", "orphan_arrays", "unreferenced_file", "stray_tmp"}


@dataclass(frozen=True)
class Finding:
    """One problem: its ``kind`` (see :data:`KINDS`), what it is about, and details."""

    kind: str
    subject: str
    detail: str = ""

    @property
    def repairable(self) -> bool:
        """True when ``repair`` fixes it (recount, remove, tombstone) without loss."""
        return self.kind in REPAIRABLE


@dataclass
class VerifyReport:
    """What ``verify`` checked and found; after a repair, also what was fixed."""

    location: str
    checked: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def counts(self) -> dict[str, int]:
        """Number of findings per kind."""
        return dict(sorted(Counter(f.kind for f in self.findings).items()))

    def of_kind(self, kind: str) -> list[Finding]:
        """The findings of one kind."""
        return [f for f in self.findings if f.kind == kind]

    @property
    def unrepairable(self) -> list[Finding]:
        """Findings repair cannot fix (data that is gone or damaged)."""
        return [f for f in self.findings if not f.repairable]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: location, ok, checked, counts, findings, repaired."""
        return {"location": self.location, "ok": self.ok, "checked": dict(self.checked),
                "counts": self.counts(), "findings": [asdict(f) for f in self.findings],
                "repaired": dict(self.repaired)}

    def summary(self) -> str:
        """One line per kind of finding (or ``clean``), for humans and assertion messages."""
        head = ", ".join(f"{n} {k}" for k, n in self.checked.items())
        if self.ok:
            return f"{self.location}: clean ({head})"
        lines = [f"{self.location}: {len(self.findings)} problem(s) ({head})"]
        for kind, n in self.counts().items():
            first = self.of_kind(kind)[0]
            lines.append(f"  {kind}: {n} ({KINDS[kind]}), e.g. {first.subject} {first.detail}".rstrip())
        return "\n".join(lines)
