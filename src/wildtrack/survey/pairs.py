"""How alike two photos of the card are: the evidence grouping and the new-turtle clustering read.

A pair of survey photos is scored exactly as a photo against a catalogue photo: the embedding cosine, the
inliers the catalogue's matcher verifies between their local features (extracted once, in the survey's feature
store), and the catalogue's calibration of the two into a match probability. A global-only catalogue has no
local matching and no calibration: the score is the cosine, compared with cosine thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wildtrack.features import LocalFeatures
from wildtrack.matching.pipeline import MatchingPipeline

__all__ = ["PhotoPairs"]


class PhotoPairs:
    """Pair scores of the card's photos (rows of ``vectors``; ``features[i]`` their local features, or None for a
    global-only catalogue), each pair matched at most once."""

    def __init__(self, vectors: np.ndarray, features: Sequence[LocalFeatures] | None,
                 pipeline: MatchingPipeline | None) -> None:
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.features = features
        self.pipeline = pipeline if features is not None else None
        self._inliers: dict[tuple[int, int], int] = {}

    @property
    def by_probability(self) -> bool:
        return self.pipeline is not None

    def inliers(self, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        """Verified inliers of each (row, col) photo pair (0 on the diagonal and without local matching)."""
        out = np.zeros((len(rows), len(cols)), dtype=np.int64)
        if self.pipeline is None or self.features is None:
            return out
        for r, i in enumerate(rows):
            todo = [j for j in cols if j != i and (min(i, j), max(i, j)) not in self._inliers]
            if todo:
                counts = self.pipeline.count(self.features[i], [self.features[j] for j in todo])
                for j, c in zip(todo, counts, strict=True):
                    self._inliers[(min(i, j), max(i, j))] = int(c)
            out[r] = [0 if j == i else self._inliers[(min(i, j), max(i, j))] for j in cols]
        return out

    def scores(self, rows: Sequence[int], cols: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score, cosine, inliers) matrices of the pairs: the score is the match probability, or the cosine."""
        cos = self.vectors[list(rows)] @ self.vectors[list(cols)].T if len(rows) and len(cols) else np.zeros(
            (len(rows), len(cols)), np.float32)
        cos = np.asarray(cos, dtype=np.float64)
        inl = self.inliers(rows, cols)
        if self.pipeline is None:
            return cos, cos, inl
        return np.asarray(self.pipeline.calibration.score(cos, inl), dtype=np.float64), cos, inl

    def within(self, rows: Sequence[int], nearest: int) -> np.ndarray:
        """Scores of every pair of ``rows`` (a time window), each photo matched against its ``nearest`` photos by
        cosine only (NaN elsewhere), so a long window costs ``nearest`` matches per photo, not one per pair."""
        rows = list(rows)
        if len(rows) <= nearest + 1:
            return self.scores(rows, rows)[0]
        cos = self.vectors[rows] @ self.vectors[rows].T
        out = np.full((len(rows), len(rows)), np.nan)
        for r in range(len(rows)):
            near = [j for j in np.argsort(-cos[r], kind="stable") if j != r][:nearest]
            out[r, near] = self.scores([rows[r]], [rows[j] for j in near])[0][0]
        return np.fmax(out, out.T)

    def best_pair(self, rows: Sequence[int], cols: Sequence[int]) -> tuple[float, int, int, int, float]:
        """The most alike pair across two sets of photos: (score, row photo, col photo, inliers, cosine)."""
        score, cos, inl = self.scores(rows, cols)
        flat = int(np.lexsort((-inl.ravel(), -score.ravel()))[0])  # highest score, then most inliers; first on ties
        r, c = divmod(flat, len(cols))
        return float(score[r, c]), rows[r], cols[c], int(inl[r, c]), float(cos[r, c])
