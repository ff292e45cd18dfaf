"""The same new turtle met twice in a day gets one provisional id: clustering the "new individual" encounters.

Every pair of new encounters is scored by its most alike pair of photos (:meth:`PhotoPairs.best_pair`: the match
probability of their embedding cosine and verified inliers, or the cosine for a global-only catalogue). Pairs at
or above the catalogue's *encounter* threshold (the score at which the catalogue would have named a known turtle
from an encounter) are linked, and each connected component is one new turtle, ``new-001``, ``new-002``… in the
order of its first encounter (ids the catalogue already holds are skipped). The links are kept as the evidence a
person checks before accepting the id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["Link", "NewTurtle", "cluster_new_encounters", "provisional_ids"]


@dataclass(frozen=True)
class Link:
    """Evidence that encounters ``a`` and ``b`` show the same turtle: their best photo pair and its score."""

    a: str
    b: str
    score: float
    inliers: int
    a_photo: int
    b_photo: int


@dataclass
class NewTurtle:
    id: str
    encounters: list[str]
    links: list[Link] = field(default_factory=list)


def provisional_ids(count: int, taken: set[str]) -> list[str]:
    """``new-001``… skipping any the catalogue already holds."""
    out, n = [], 0
    while len(out) < count:
        n += 1
        name = f"new-{n:03d}"
        if name not in taken:
            out.append(name)
    return out


def cluster_new_encounters(encounters: Sequence[tuple[str, Sequence[int]]],
                           best_pair: Callable[[Sequence[int], Sequence[int]], tuple[float, int, int, int, float]],
                           threshold: float | None, taken: set[str]) -> list[NewTurtle]:
    """New turtles from ``encounters`` (id, its photos' positions; in encounter order). ``best_pair(rows, cols)``
    scores two encounters; ``threshold`` None links nothing (each encounter its own turtle)."""
    n = len(encounters)
    links: list[Link] = []
    for i in range(n):
        for j in range(i + 1, n):
            score, pa, pb, inliers, _cos = best_pair(list(encounters[i][1]), list(encounters[j][1]))
            if threshold is not None and score >= threshold:
                links.append(Link(encounters[i][0], encounters[j][0], round(score, 6), inliers, pa, pb))
    index = {e: k for k, (e, _) in enumerate(encounters)}
    rows = [index[link.a] for link in links]
    cols = [index[link.b] for link in links]
    graph = coo_matrix((np.ones(len(links)), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False) if n else (0, np.zeros(0, int))
    order: list[int] = []
    for lab in label:
        if int(lab) not in order:
            order.append(int(lab))
    names = provisional_ids(len(order), taken)
    turtles = []
    for name, lab in zip(names, order, strict=True):
        members = [encounters[k][0] for k in range(n) if label[k] == lab]
        turtles.append(NewTurtle(name, members, [link for link in links if link.a in members]))
    return turtles
