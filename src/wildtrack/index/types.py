"""What a catalogue holds and answers: gallery rows, search hits, and the errors of the index."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date as _date
from typing import Any

_DRIVE = re.compile(r"[A-Za-z]:/")  # a Windows drive, after backslashes became slashes


class GalleryIndexError(Exception):
    """Base class for catalogue index errors."""


class IndexNotFoundError(GalleryIndexError, FileNotFoundError):
    """The directory holds no committed index."""


class IndexMismatchError(GalleryIndexError):
    """The index was built for another model or embedding size than the caller's."""


class IndexLockedError(GalleryIndexError):
    """Another writer holds the index lock."""


class IndexCorruptError(GalleryIndexError):
    """No consistent committed generation could be read."""


class IndexConflictError(GalleryIndexError):
    """Saving would overwrite a catalogue, or changes, that this object never saw."""


@dataclass(frozen=True)
class MetaRow:
    """One gallery image; ``path`` is relative to the data root, ``date`` is ISO ``YYYY-MM-DD`` or None."""

    image_id: str
    path: str
    identity: str
    date: str | None = None

    @classmethod
    def coerce(cls, obj: MetaRow | Mapping[str, Any] | Any) -> MetaRow:
        """Accept a MetaRow, a dict (path, identity, [image_id], [date]) or a ``Record`` (relpath, identity, date)."""
        if isinstance(obj, MetaRow):
            return cls._make(obj.path, obj.identity, obj.date, obj.image_id)
        if isinstance(obj, Mapping):
            return cls._make(obj.get("path"), obj.get("identity"), obj.get("date"), obj.get("image_id"))
        path = getattr(obj, "relpath", None) or getattr(obj, "path", None)
        return cls._make(path, getattr(obj, "identity", None), getattr(obj, "date", None), None)

    @classmethod
    def _make(cls, path: Any, identity: Any, day: Any, image_id: Any) -> MetaRow:
        rel = _relative_posix(path)
        ident = "" if identity is None else str(identity).strip()
        if not ident:
            raise ValueError(f"meta row for {rel!r} has no identity")
        if isinstance(day, _date):
            day = day.isoformat()
        day = str(day).strip() if day not in (None, "") else None
        return cls(str(image_id) if image_id not in (None, "") else image_id_for(rel), rel, ident, day or None)


@dataclass(frozen=True)
class Hit:
    """One gallery image returned by a search; ``score`` is the cosine similarity, ``rank`` starts at 1.

    After local re-ranking, ``inliers`` counts the geometrically verified keypoint matches with the query and
    ``match_probability`` is the fitted pipeline's calibrated "same individual" score (both ``None`` for a
    global-only search, or an image outside the re-ranked shortlist), and ``rank_score`` is what the hits are
    ordered by (``None``: the cosine orders them).
    """

    image_id: str
    path: str
    identity: str
    date: str | None
    score: float
    rank: int
    inliers: int | None = None
    match_probability: float | None = None
    rank_score: float | None = None

    @property
    def order_score(self) -> float:
        """The score this hit's list is ordered by: ``rank_score`` after re-ranking, else the cosine."""
        return self.score if self.rank_score is None else self.rank_score


def image_id_for(path: str) -> str:
    """Stable id from the relative path: 64 bits keeps collisions negligible even at millions of images."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


def _relative_posix(path: Any) -> str:
    """POSIX separators, never absolute; plain string checks because catalogues can hold millions of rows."""
    if path in (None, ""):
        raise ValueError("meta row has no path")
    rel = str(path).replace("\\", "/")
    if rel.startswith("/") or _DRIVE.match(rel):
        raise ValueError(f"meta path must be relative to the data root, got {str(path)!r}")
    return rel
