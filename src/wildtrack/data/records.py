"""The unit every stage passes around: one image of one known individual."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """One photo: where it is, whose it is, and when it was taken (if known).

    ``path`` is absolute; ``relpath`` is relative to the dataset root and is what artifacts store, so an
    index stays valid when a catalogue folder is moved.
    """

    path: Path
    identity: str
    relpath: str
    date: date | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def encounter(self) -> tuple[str, date | None]:
        """An encounter is one individual on one day: the unit that time-aware splits keep together."""
        return (self.identity, self.date)


@dataclass
class Dataset:
    """The usable records of one folder, plus what was skipped and why."""

    root: Path
    layout: str
    records: list[Record]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def identities(self) -> list[str]:
        return sorted({r.identity for r in self.records})

    def counts(self) -> Counter[str]:
        return Counter(r.identity for r in self.records)

    def fingerprint(self) -> dict[str, object]:
        """Counts plus a hash of the sorted (relpath, identity) list: cheap, stable provenance."""
        h = hashlib.sha256()
        for r in sorted(self.records, key=lambda r: r.relpath):
            h.update(f"{r.relpath}\t{r.identity}\n".encode())
        return {
            "num_images": len(self.records),
            "num_ids": len(self.identities),
            "files_sha256": h.hexdigest()[:16],
        }
