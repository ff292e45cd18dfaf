"""Scoring a shortlist with a calibration: the fused logit, identity support, and the same as a (Q, G) matrix.

One query's hits and an evaluation's score matrix are scored by the same function (:func:`shortlist_scores`), row
by row, so the product and its benchmark cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wildtrack.matching.calibration import ScoreFusion
from wildtrack.matching.shortlist import shortlist

__all__ = ["fused_matrix", "probability_matrix", "shortlist_scores", "with_identity_support"]


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


def shortlist_scores(calibration: ScoreFusion, cosines: np.ndarray, inliers: np.ndarray, identities: Any = None,
                     identity_weight: float = 0.0) -> np.ndarray:
    """The re-ranking score of one query's shortlist: fused logit, plus identity support when weighted."""
    fused = calibration.logit(cosines, inliers)
    if not identity_weight:
        return np.asarray(fused, dtype=np.float64)
    if identities is None:
        raise ValueError("identity support needs one gallery identity per shortlisted photo")
    return with_identity_support(fused, identities, identity_weight)


def fused_matrix(sim: np.ndarray, local: np.ndarray, calibration: ScoreFusion, k: int,
                 gallery_ids: Any = None, identity_weight: float = 0.0) -> np.ndarray:
    """A (Q, G) score matrix whose ranking re-orders only each query's global top-``k``.

    Shortlisted images get their fused *logit* (:func:`shortlist_scores`; logits, because probabilities of strong
    matches all round to 1.0 in float32 and would tie), with identity support when weighted. Every other image
    gets its cosine shifted to lie at least 1 below the query's lowest shortlisted score: the rest keeps its
    global order below the shortlist, so re-ranking never pulls in an image the global search did not propose.
    """
    sim = np.asarray(sim, dtype=np.float64)
    local = np.asarray(local)
    if local.shape != sim.shape:
        raise ValueError(f"local {local.shape} and sim {sim.shape} differ in shape")
    top = shortlist(sim, k)
    rows = np.arange(len(sim))[:, None]
    out = sim.copy()
    inside = np.zeros(sim.shape, dtype=bool)
    inside[rows, top] = True
    if identity_weight and (gallery_ids is None or len(gallery_ids) != sim.shape[1]):
        raise ValueError("identity support needs one gallery identity per column of sim")
    g_ids = np.asarray([str(i) for i in gallery_ids], dtype=object) if gallery_ids is not None else None
    fused = np.zeros(top.shape)
    for r, t in enumerate(top):
        fused[r] = shortlist_scores(calibration, sim[r, t], local[r, t], None if g_ids is None else g_ids[t],
                                    identity_weight)
    if (~inside).any():
        highest_outside = np.where(inside, -np.inf, out).max(axis=1, keepdims=True)
        shift = highest_outside - fused.min(axis=1, keepdims=True) + 1.0
        out -= np.where(np.isfinite(shift), shift, 0.0)  # a row with nothing finite outside (masked) keeps it
    out[rows, top] = fused
    return out


def probability_matrix(sim: np.ndarray, local: np.ndarray, calibration: ScoreFusion, k: int) -> np.ndarray:
    """(Q, G) calibrated "same individual" probabilities of each query's global top-``k``; 0 elsewhere.

    The score the "new individual" decision reads after re-ranking: unlike the cosine it counts the geometric
    evidence, so a turtle confirmed by 30 inliers is accepted even when the scene made its cosine low.
    """
    sim = np.asarray(sim, dtype=np.float64)
    top = shortlist(sim, k)
    rows = np.arange(len(sim))[:, None]
    out = np.zeros(sim.shape)
    out[rows, top] = calibration.score(sim[rows, top], np.asarray(local)[rows, top])
    return np.where(np.isfinite(sim), out, 0.0)  # masked images (own encounter) are never a match
