"""One "same individual" score from the global cosine and the local inlier count.

Neither score alone is trustworthy on field photos: the cosine confuses turtles photographed on the same reef,
and a few inliers can be chance matches on sand or coral. A logistic regression on ``[cosine, log1p(inliers)]``,
fitted on labelled (query, gallery) pairs from a held-out part of the catalogue, weighs the two and turns them
into a probability-like score. ``log1p`` because the evidence of 10 → 20 inliers is worth more than 210 → 220.

Both weights are constrained to be ≥ 0, so the fused score never *decreases* when either the cosine or the
inlier count increases: more evidence can only help a candidate. scikit-learn has no bound-constrained logistic
regression, so a feature that comes out with a negative weight (which only happens on noisy or tiny fitting
sets) is dropped and the model refitted on the other one; the dropped weight is exactly 0, which keeps the
monotonicity guarantee and documents itself in the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.evaluate import rank_gallery

__all__ = ["ScoreFusion", "fused_similarity", "match_probabilities", "shortlist_pairs", "shortlist_scores",
           "with_identity_support"]

FORMAT = "wildtrack-score-fusion-v1"


def _features(global_scores: np.ndarray, inliers: np.ndarray) -> np.ndarray:
    g = np.asarray(global_scores, dtype=np.float64)
    n = np.log1p(np.maximum(np.asarray(inliers, dtype=np.float64), 0.0))
    g, n = np.broadcast_arrays(g, n)
    return np.stack([g.ravel(), n.ravel()], axis=1)


@dataclass
class ScoreFusion:
    """``sigmoid(bias + w_global · cosine + w_local · log1p(inliers))`` with ``w_global, w_local ≥ 0``.

    The default (unfitted) weights rank by the cosine alone, so an unfitted fusion changes nothing.
    """

    w_global: float = 1.0
    w_local: float = 0.0
    bias: float = 0.0
    num_pairs: int = 0  # pairs it was fitted on (0: not fitted)
    positive_rate: float | None = None

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        for name in ("w_global", "w_local", "bias"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
            setattr(self, name, value)
        if self.w_global < 0 or self.w_local < 0:
            raise ValueError(
                f"weights must be >= 0 for a monotonic fusion, got w_global={self.w_global}, w_local={self.w_local}"
            )

    def fit(self, global_scores: np.ndarray, inliers: np.ndarray, same_identity: np.ndarray,
            C: float = 1.0) -> ScoreFusion:
        """Fit on labelled pairs (one row per query × shortlisted gallery image). Returns ``self``.

        Features are standardised for the fit (so the L2 penalty ``C`` treats both alike), then the weights are
        folded back to raw units.
        """
        from sklearn.linear_model import LogisticRegression

        x = _features(global_scores, inliers)
        y = np.asarray(same_identity, dtype=bool).ravel()
        if len(y) != len(x):
            raise ValueError(f"{len(x)} score pairs but {len(y)} labels")
        if y.all() or not y.any():
            raise ValueError("fitting needs both same-identity and different-identity pairs")
        mean, std = x.mean(axis=0), x.std(axis=0)
        std[std == 0] = 1.0
        z = (x - mean) / std
        active = [0, 1]
        weights = np.zeros(2)
        intercept = 0.0
        while active:
            model = LogisticRegression(C=C, max_iter=1000).fit(z[:, active], y)
            coef = model.coef_.ravel()
            if (coef >= 0).all():
                weights[active] = coef
                intercept = float(model.intercept_[0])
                break
            active = [f for f, c in zip(active, coef, strict=True) if c >= 0]  # drop what went negative
        else:
            intercept = float(np.log(y.mean() / (1 - y.mean())))  # neither helps: the base rate
        raw = weights / std
        self.w_global, self.w_local = float(raw[0]), float(raw[1])
        self.bias = float(intercept - (raw * mean).sum())
        self.num_pairs, self.positive_rate = len(y), float(y.mean())
        self._check()
        return self

    def logit(self, global_scores: np.ndarray | float, inliers: np.ndarray | float) -> np.ndarray:
        g = np.asarray(global_scores, dtype=np.float64)
        n = np.log1p(np.maximum(np.asarray(inliers, dtype=np.float64), 0.0))
        return self.bias + self.w_global * g + self.w_local * n

    def score(self, global_scores: np.ndarray | float, inliers: np.ndarray | float) -> np.ndarray:
        """Probability-like "same individual" score in (0, 1); broadcasts like numpy."""
        return 1.0 / (1.0 + np.exp(-self.logit(global_scores, inliers)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": ["cosine", "log1p(inliers)"],
            "w_global": self.w_global,
            "w_local": self.w_local,
            "bias": self.bias,
            "num_pairs": self.num_pairs,
            "positive_rate": self.positive_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreFusion:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a score fusion ({FORMAT}) document: format={data.get('format')!r}")
        return cls(float(data["w_global"]), float(data["w_local"]), float(data["bias"]),
                   int(data.get("num_pairs", 0)), data.get("positive_rate"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScoreFusion:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _shortlist(sim: np.ndarray, k: int) -> np.ndarray:
    return rank_gallery(sim)[:, : min(k, sim.shape[1])]


def shortlist_pairs(sim: np.ndarray, local: np.ndarray, query_ids: Any, gallery_ids: Any, k: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cosine, inliers, same_identity)`` of every (query, top-``k`` gallery image) pair: the pairs a fusion
    is applied to, hence the ones to fit it on."""
    top = _shortlist(np.asarray(sim), k)
    rows = np.repeat(np.arange(len(top)), top.shape[1])
    cols = top.ravel()
    q = np.asarray([str(i) for i in query_ids], dtype=object)
    g = np.asarray([str(i) for i in gallery_ids], dtype=object)
    return np.asarray(sim)[rows, cols], np.asarray(local)[rows, cols], q[rows] == g[cols]


def with_identity_support(scores: np.ndarray, identities: Any, weight: float) -> np.ndarray:
    """Add to each shortlisted image's score ``weight ×`` (its identity's best + second-best score in the list).

    A turtle photographed several times in the catalogue should win on the evidence of several photos, not of
    its single luckiest one: one chance match on the background can lift one image of a wrong turtle, rarely
    two. An identity with a single image in the shortlist gets the list's lowest score as its second. With
    ``weight`` 0 the scores come back unchanged; within one identity the order never changes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if weight == 0 or scores.size == 0:
        return scores.copy()
    ids = np.asarray([str(i) for i in identities], dtype=object)
    if ids.shape != scores.shape:
        raise ValueError(f"{len(ids)} identities for {len(scores)} scores")
    out = scores.copy()
    floor = scores.min()
    for identity in np.unique(ids):
        members = ids == identity
        ranked = np.sort(scores[members])[::-1]
        second = ranked[1] if len(ranked) > 1 else floor
        out[members] += weight * (ranked[0] + second)
    return out


def shortlist_scores(fusion: ScoreFusion, cosines: np.ndarray, inliers: np.ndarray, identities: Any = None,
                     identity_weight: float = 0.0) -> np.ndarray:
    """The re-ranking score of one query's shortlist: fused logit, plus identity support when weighted."""
    fused = fusion.logit(cosines, inliers)
    if not identity_weight:
        return np.asarray(fused, dtype=np.float64)
    if identities is None:
        raise ValueError("identity support needs one gallery identity per column of sim")
    return with_identity_support(fused, identities, identity_weight)


def fused_similarity(sim: np.ndarray, local: np.ndarray, fusion: ScoreFusion, k: int,
                     gallery_ids: Any = None, identity_weight: float = 0.0) -> np.ndarray:
    """A (Q, G) score matrix whose ranking re-orders only each query's global top-``k``.

    Shortlisted images get their fused *logit* (``sigmoid`` of it is :meth:`ScoreFusion.score`; logits, because
    probabilities of strong matches all round to 1.0 in float32 and would tie), plus, with ``identity_weight``,
    the support of their identity's other shortlisted images (:func:`with_identity_support`). Every other image
    gets its cosine shifted to lie at least 1 below the query's lowest shortlisted score: the rest keeps its
    global order below the shortlist, so re-ranking never pulls in an image the global search did not propose.
    """
    sim = np.asarray(sim, dtype=np.float64)
    local = np.asarray(local)
    if local.shape != sim.shape:
        raise ValueError(f"local {local.shape} and sim {sim.shape} differ in shape")
    top = _shortlist(sim, k)
    rows = np.arange(len(sim))[:, None]
    out = sim.copy()
    inside = np.zeros(sim.shape, dtype=bool)
    inside[rows, top] = True
    if identity_weight and (gallery_ids is None or len(gallery_ids) != sim.shape[1]):
        raise ValueError("identity support needs one gallery identity per column of sim")
    g_ids = np.asarray([str(i) for i in gallery_ids], dtype=object) if gallery_ids is not None else None
    fused = np.zeros(top.shape)
    for r, t in enumerate(top):
        fused[r] = shortlist_scores(fusion, sim[r, t], local[r, t], None if g_ids is None else g_ids[t],
                                    identity_weight)
    if (~inside).any():
        highest_outside = np.where(inside, -np.inf, out).max(axis=1, keepdims=True)
        shift = highest_outside - fused.min(axis=1, keepdims=True) + 1.0
        out -= np.where(np.isfinite(shift), shift, 0.0)  # a row with nothing finite outside (masked) keeps it
    out[rows, top] = fused
    return out


def match_probabilities(sim: np.ndarray, local: np.ndarray, fusion: ScoreFusion, k: int) -> np.ndarray:
    """(Q, G) calibrated "same individual" probabilities of each query's global top-``k``; 0 elsewhere.

    The score the "new individual" decision reads after re-ranking: unlike the cosine it counts the geometric
    evidence, so a turtle confirmed by 30 inliers is accepted even when the scene made its cosine low.
    """
    sim = np.asarray(sim, dtype=np.float64)
    top = _shortlist(sim, k)
    rows = np.arange(len(sim))[:, None]
    out = np.zeros(sim.shape)
    out[rows, top] = fusion.score(sim[rows, top], np.asarray(local)[rows, top])
    return np.where(np.isfinite(sim), out, 0.0)  # masked images (own encounter) are never a match
