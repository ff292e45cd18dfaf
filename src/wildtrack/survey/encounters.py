"""Which photos of a card belong to one encounter (one turtle, one sighting).

The rule, in the order it is applied to the card's usable photos (``ok``):

1. **Folders.** A team that sorted its card into one sub-folder per sighting has already said which photos go
   together: with ``grouping="auto"`` the photos are grouped by folder when they lie in two or more sub-folders,
   or all in one sub-folder; each folder is one encounter (photos directly under PHOTOS form one of their own).
2. **Time.** Otherwise the photos are sorted by capture time and cut wherever two consecutive photos are more
   than ``gap`` apart (``--gap 10m``): a *time window*, a sighting by default.
3. **Appearance, within a time window.** Two turtles met in the same minute must not share an encounter, so a
   window is split by what the photos say about each other:

   - *same turtle*: two photos whose match probability (the catalogue's calibrated fusion of their embedding
     cosine and verified local inliers, as a catalogue match is scored) reaches the *link threshold*, or that
     the catalogue names as the same known turtle;
   - *different turtles*: two photos the catalogue names as two different known turtles.

   Links are taken strongest first and join two groups unless a pair across them is *different* (so one wrong
   link cannot chain two named turtles together). The groups left are then joined too, the most alike pair of
   groups first (their best cross-pair probability, however low), as long as nothing says they are different
   turtles: the time window is the default sighting, and photos of one turtle often share no evidence at all
   (other sides of it, a blurred frame), while two turtles met together are told apart by the catalogue naming
   them. The link threshold is the catalogue's confident photo threshold where it has one, else its photo
   threshold but at least :data:`MIN_LINK_PROBABILITY`. Two turtles the catalogue does not hold, met in the same
   window, stay in one encounter: it is a new individual, so a person reviews it in any case.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import PurePosixPath

import numpy as np

__all__ = ["FOLDERS", "GROUPINGS", "MIN_LINK_PROBABILITY", "TIME", "choose_grouping", "folder_groups",
           "link_threshold", "parse_gap", "split_by_appearance", "time_windows"]

FOLDERS, TIME, AUTO = "folders", "time", "auto"
GROUPINGS = (AUTO, FOLDERS, TIME)
MIN_LINK_PROBABILITY = 0.5
_UNITS = {"s": 1, "m": 60, "h": 3600}


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
    """``folders`` or ``time`` for ``grouping`` (``auto`` looks at where the photos lie)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping {grouping!r}: choose one of {', '.join(GROUPINGS)}")
    if grouping != AUTO:
        return grouping
    folders = {_folder(p) for p in photos}
    sub = folders - {"."}
    return FOLDERS if len(sub) >= 2 or (len(sub) == 1 and len(folders) == 1) else TIME


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
    """The groups (positions, each in order, groups by their first photo) of one time window's photos.

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
    for _, i, j in sorted(edges):
        a, b = group[i], group[j]
        if a != b and not different(a, b):
            join(a, b)
    _join_alike_groups(same, named, members, join)
    return [sorted(m) for _, m in sorted(members.items(), key=lambda kv: min(kv[1]))]


def _join_alike_groups(same: np.ndarray, named: Sequence[str | None], members: dict[int, list[int]],
                       join: Callable[[int, int], None]) -> None:
    """Join the linked groups, the most alike pair first (best cross-pair probability; none compared counts as
    0), until only groups that two different named turtles keep apart are left. Each group holds at most one
    named turtle (a join never mixes two), so "different" is a comparison of names."""
    keys = sorted(members)
    if len(keys) < 2:
        return
    alike = np.nan_to_num(same, nan=0.0)
    best_to = np.stack([alike[members[k]].max(axis=0) for k in keys])  # (groups, photos)
    evidence = np.stack([best_to[:, members[k]].max(axis=1) for k in keys], axis=1)  # (groups, groups)
    names = [next((named[i] for i in members[k] if named[i] is not None), None) for k in keys]
    code = {name: n for n, name in enumerate(sorted({x for x in names if x is not None}))}
    turtle = np.array([-1 if x is None else code[x] for x in names])  # -1: no named turtle
    alive = np.ones(len(keys), dtype=bool)
    upper = np.triu(np.ones((len(keys), len(keys)), dtype=bool), 1)
    while True:
        apart = (turtle[:, None] >= 0) & (turtle[None, :] >= 0) & (turtle[:, None] != turtle[None, :])
        allowed = upper & alive[:, None] & alive[None, :] & ~apart
        if not allowed.any():
            return
        a, b = np.unravel_index(np.argmax(np.where(allowed, evidence, -np.inf)), evidence.shape)
        join(keys[a], keys[b])  # the group with the smaller key keeps its members: keys are sorted, so ``a``
        evidence[a] = evidence[:, a] = np.maximum(evidence[a], evidence[b])
        turtle[a] = turtle[a] if turtle[a] >= 0 else turtle[b]
        alive[b] = False
