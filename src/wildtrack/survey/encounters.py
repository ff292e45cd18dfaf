"""Which photos of a card belong to one encounter (one turtle, one sighting).

The rule, in the order it is applied to the card's usable photos (``ok``):

1. **Folders.** A team that sorted its card into one sub-folder per sighting has already said which photos go
   together: with ``grouping="auto"`` the photos are grouped by folder when they lie in two or more sub-folders
   (photos directly under PHOTOS form one of their own), none of them a camera's own (``DCIM``, ``100CANON``…:
   a card straight from a camera is grouped by time, as is a card in one wrapping folder).
2. **Time.** Otherwise the photos are sorted by capture time and cut wherever two consecutive photos are more
   than ``gap`` apart (``--gap 10m``): a *time window*, a sighting by default.
3. **Appearance, within a time window.** Two turtles met in the same minute must not share an encounter, so a
   window is split by what the photos say about each other:

   - *same turtle*: two photos whose match probability (the catalogue's calibrated fusion of their embedding
     cosine and verified local inliers, as a catalogue match is scored) reaches the *link threshold*, or that
     the catalogue names as the same known turtle;
   - *different turtles*: two photos the catalogue names as two different known turtles.

   Links are taken strongest first and join two groups unless a pair across them is *different* (so one wrong
   link cannot chain two named turtles together). A photo left alone afterwards (no link at all: another side of
   the turtle, a blurred frame) joins the window's largest group, the time window being the default sighting,
   unless something says it is a different turtle (the catalogue names it as another turtle than one in that
   group). The link threshold is the catalogue's confident photo threshold where it has one, else its photo
   threshold but at least :data:`MIN_LINK_PROBABILITY`: wrongly joining two turtles is worse than leaving one
   turtle in two encounters, which identification and the new-turtle clustering then name alike, and a person
   renames alike. A photo joined by time alone may still be another turtle (one the catalogue does not hold), so
   an encounter holding one is never a confident verdict (:func:`split_window` says which they are): nothing is
   enrolled on its strength without a person.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePosixPath

import numpy as np

__all__ = ["FOLDERS", "GROUPINGS", "MIN_LINK_PROBABILITY", "TIME", "choose_grouping", "folder_groups",
           "link_threshold", "parse_gap", "split_by_appearance", "split_window", "time_windows"]

FOLDERS, TIME, AUTO = "folders", "time", "auto"
GROUPINGS = (AUTO, FOLDERS, TIME)
MIN_LINK_PROBABILITY = 0.5
_UNITS = {"s": 1, "m": 60, "h": 3600}
# what cameras write (DCF: DCIM/100CANON, 101_PANA...): folders of a card, not of sightings
_CAMERA_FOLDER = re.compile(r"DCIM|\d{3}[A-Za-z0-9_]{5}", re.IGNORECASE)


def parse_gap(text: str | int | float) -> int:
    """Seconds in ``30s``, ``10m``, ``1h`` or a plain number of seconds; ValueError naming the format otherwise."""
    value = str(text).strip().lower()
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", value)
    if not found:
        raise ValueError(f"--gap {text!r}: give a duration such as 30s, 10m or 1h")
    seconds = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"--gap {text!r}: must be more than 0")
    return round(seconds)


def _folder(photo: str) -> str:
    return str(PurePosixPath(photo).parent)


def choose_grouping(photos: Sequence[str], grouping: str = AUTO) -> str:
    """``folders`` or ``time`` for ``grouping`` (``auto`` looks at where the photos lie: see the module's rule)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping {grouping!r}: choose one of {', '.join(GROUPINGS)}")
    if grouping != AUTO:
        return grouping
    folders = {_folder(p) for p in photos}
    camera = any(_CAMERA_FOLDER.fullmatch(part) for f in folders for part in PurePosixPath(f).parts)
    return FOLDERS if len(folders - {"."}) >= 2 and not camera else TIME


def folder_groups(photos: Sequence[str], taken: dict[str, str | None]) -> list[list[str]]:
    """One group per folder, each in capture-time order (then path)."""
    groups: dict[str, list[str]] = {}
    for p in photos:
        groups.setdefault(_folder(p), []).append(p)
    return [sorted(g, key=lambda p: (taken.get(p) or "", p)) for _, g in sorted(groups.items())]


def time_windows(photos: Sequence[str], taken: dict[str, str | None], gap_s: int) -> list[list[str]]:
    """Photos in capture-time order, cut where two consecutive ones are more than ``gap_s`` seconds apart."""
    ordered = sorted(photos, key=lambda p: (taken.get(p) or "", p))
    windows: list[list[str]] = []
    last: datetime | None = None
    for p in ordered:
        when = datetime.fromisoformat(taken[p]) if taken.get(p) else None
        if not windows or when is None or last is None or (when - last).total_seconds() > gap_s:
            windows.append([])
        windows[-1].append(p)
        last = when
    return windows


def link_threshold(photo_threshold: float | None, confident_photo_threshold: float | None) -> float:
    """The probability at which two survey photos are taken to show the same turtle (see the module's rule)."""
    if confident_photo_threshold is not None:
        return float(confident_photo_threshold)
    return max(MIN_LINK_PROBABILITY, float(photo_threshold) if photo_threshold is not None else 0.0)


def split_by_appearance(same: np.ndarray, named: Sequence[str | None], threshold: float) -> list[list[int]]:
    """The groups of one time window's photos (:func:`split_window`, without which photos joined by time)."""
    return split_window(same, named, threshold)[0]


def split_window(same: np.ndarray, named: Sequence[str | None], threshold: float
                 ) -> tuple[list[list[int]], set[int]]:
    """The groups (positions, each in order, groups by their first photo) of one time window's photos, and the
    positions of the photos joined to their group by time alone (no link).

    ``same[i, j]``: the probability that photos i and j show the same turtle (NaN: not compared); ``named[i]``:
    the known turtle the catalogue names photo i, or None. See the module's rule.
    """
    n = len(named)
    same = np.asarray(same, dtype=np.float64)
    if same.shape != (n, n):
        raise ValueError(f"same is {same.shape}, expected ({n}, {n})")
    group = list(range(n))
    members: dict[int, list[int]] = {i: [i] for i in range(n)}

    def different(a: int, b: int) -> bool:
        return any(named[i] is not None and named[j] is not None and named[i] != named[j]
                   for i in members[a] for j in members[b])

    def join(a: int, b: int) -> None:
        keep, gone = min(a, b), max(a, b)
        for i in members.pop(gone):
            group[i] = keep
            members[keep].append(i)

    edges = []
    for i in range(n):
        for j in range(i + 1, n):
            p = same[i, j] if np.isfinite(same[i, j]) else 0.0
            if named[i] is not None and named[i] == named[j]:
                p = max(p, threshold)
            if p >= threshold:
                edges.append((-p, i, j))
    linked: set[int] = set()
    for _, i, j in sorted(edges):
        a, b = group[i], group[j]
        if a != b and not different(a, b):
            join(a, b)
            linked.update((i, j))
    lone = [i for i in range(n) if i not in linked and len(members[group[i]]) == 1]
    by_time: set[int] = set()
    if lone and members:
        largest = min(members, key=lambda g: (-len(members[g]), g))
        for i in lone:
            if group[i] != largest and not different(group[i], largest):
                by_time.add(i)
                if len(members[largest]) == 1:  # the largest was itself a lone photo: joined by time too
                    by_time.update(members[largest])
                join(group[i], largest)
                largest = group[i]
    return [sorted(m) for _, m in sorted(members.items(), key=lambda kv: min(kv[1]))], by_time
