"""Several photos of one encounter, one answer.

A field team photographs a turtle several times during one sighting: head, both sides, from different angles.
Each photo alone often carries no usable evidence (another side than the catalogue holds, caustics, a small turtle
in the frame), but one photo of the set that matches the catalogue with many inliers settles the whole encounter.
So each photo is identified on its own, and the encounter takes the verdict of its most confident photo (the
highest match probability after re-ranking, else cosine): a known turtle as soon as one photo is sure of it, a
new individual only when none is. For a single photo that is its own verdict.

On the real sample under half the photos carry local evidence, but most later encounters have at least one
such photo, so far more encounters are named right than single photos (``docs/accuracy.md``: "Encounters",
and "What limits Recall@1" for the share of encounters with evidence).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from wildtrack.decide.identity import Decision, IdentityScore
from wildtrack.index import Hit

__all__ = ["encounter_keys", "encounter_report", "encounter_retrieval", "most_confident", "pool_encounter",
           "pool_encounter_rows"]


def most_confident(confidences: Sequence[float]) -> int:
    """The rule that names an encounter: the position of its most confident photo (the first on ties; NaN never
    wins). One photo's hits (:func:`pool_encounter`) and an evaluation's score rows (:func:`encounter_retrieval`)
    both decide with it."""
    values = np.asarray(confidences, dtype=np.float64)
    return int(np.argmax(np.where(np.isnan(values), -np.inf, values)))


def encounter_keys(records: Sequence[Any]) -> list[Hashable]:
    """Which photos were taken together: one turtle on one day (``Record.encounter``); an undated photo is an
    encounter of its own, since nothing says it was taken with the turtle's other undated photos."""
    return [r.encounter if r.date is not None else ("photo", str(r.path)) for r in records]


def pool_encounter(photo_hits: Sequence[Sequence[Hit]], photo_decisions: Sequence[Decision],
                   by_probability: bool, threshold: float | None) -> Decision:
    """One verdict for an encounter from each photo's ranked hits and own decision.

    The turtle and score are those of the most confident photo (the first on ties); it is a new individual when
    that score is below ``threshold`` (calibrated for encounters: the best of several photos passes a photo's
    threshold more often by chance; None always names the turtle). The candidates list every
    turtle the photos found, that photo's turtle first, then by their best score over all photos: the match
    probability when ``by_probability`` (hits outside a re-ranked shortlist carry none and do not count), else
    the cosine; ``support`` counts the photos whose closest turtle it is (accepted or not).
    """
    if not photo_hits or len(photo_hits) != len(photo_decisions):
        raise ValueError(f"an encounter needs one decision per photo and at least one photo, got "
                         f"{len(photo_hits)} hit lists and {len(photo_decisions)} decisions")
    best: dict[str, tuple[float, Hit]] = {}
    for hits in photo_hits:
        for h in hits:
            score = h.match_probability if by_probability else h.score
            if score is None or not math.isfinite(score):
                continue
            if h.identity not in best or score > best[h.identity][0]:
                best[h.identity] = (float(score), h)
    votes = Counter(d.best.identity for d in photo_decisions if d.best is not None)
    candidates = sorted((IdentityScore(identity, score, h.image_id, votes[identity], float(h.score), h.inliers)
                         for identity, (score, h) in best.items()),
                        key=lambda s: (-s.score, -s.support, s.identity))
    scored = [d for d in photo_decisions if d.score is not None and math.isfinite(d.score) and d.best is not None]
    if not scored:
        return Decision(None, None, True, tuple(candidates))
    verdict = scored[most_confident([d.score for d in scored])]  # type: ignore[misc]
    lead = verdict.best.identity  # type: ignore[union-attr]
    candidates.sort(key=lambda s: s.identity != lead)  # stable: the rest keep their order
    score = float(verdict.score)  # type: ignore[arg-type]
    unknown = threshold is not None and not score >= threshold
    return Decision(None if unknown else lead, score, unknown, tuple(candidates))


def pool_encounter_rows(scores: np.ndarray, query_ids: Sequence[Any], encounters: Sequence[Hashable]
                        ) -> tuple[np.ndarray, list[str], list[list[int]]]:
    """``(E, G)`` scores of each encounter (the best over its photos, per gallery image), its identity, and its
    photos' rows: the input :func:`~wildtrack.evaluate.calibrate_open_set` needs to set an encounter's
    new-individual threshold, since the best of several photos is more often high by chance than one photo."""
    scores = np.asarray(scores, dtype=np.float64)
    q = [str(i) for i in query_ids]
    if len(encounters) != len(q) or len(q) != len(scores):
        raise ValueError(f"{len(scores)} score rows, {len(q)} query ids and {len(encounters)} encounter keys differ")
    groups: dict[Hashable, list[int]] = {}
    for row, key in enumerate(encounters):
        groups.setdefault(key, []).append(row)
    ids = []
    for rows in groups.values():
        truths = sorted({q[r] for r in rows})
        if len(truths) != 1:
            raise ValueError(f"an encounter mixes identities {truths}")
        ids.append(truths[0])
    pooled = np.stack([scores[rows].max(axis=0) for rows in groups.values()]) if groups else scores[:0]
    return pooled, ids, list(groups.values())


def encounter_retrieval(ranking: np.ndarray, scores: np.ndarray, query_ids: Sequence[Any],
                        gallery_ids: Sequence[Any], encounters: Sequence[Hashable]) -> dict[str, Any]:
    """How often :func:`pool_encounter`'s rule names each query encounter's turtle.

    Each photo's verdict is the identity of its first image by ``ranking`` (``(Q, G)``: fused scores after
    re-ranking, else cosines), with that image's ``scores`` value as its confidence (match probabilities after
    re-ranking, else the same cosines); the encounter takes its most confident photo's verdict. ``encounters``
    groups the query photos, as a team knows which photos it took during one sighting. ``accuracy`` counts each
    encounter whose turtle is in the catalogue once; ``photos`` weighs them by their number of photos, to set
    beside per-photo Recall@1.
    """
    _, ids, groups = pool_encounter_rows(scores, query_ids, encounters)
    return _accuracy(ranking, scores, gallery_ids, ids, groups)


def _accuracy(ranking: np.ndarray, scores: np.ndarray, gallery_ids: Sequence[Any], ids: list[str],
              groups: list[list[int]]) -> dict[str, Any]:
    """:func:`encounter_retrieval` on encounters already grouped by :func:`pool_encounter_rows`."""
    ranking, scores = np.asarray(ranking, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    g = np.asarray([str(i) for i in gallery_ids], dtype=object)
    if ranking.shape != scores.shape or ranking.shape[1:] != (len(g),):
        raise ValueError(f"ranking {ranking.shape} and scores {scores.shape} must both be (queries, {len(g)})")
    first = np.argmax(np.where(np.isfinite(ranking), ranking, -np.inf), axis=1)
    confidence = scores[np.arange(len(scores)), first]
    confidence = np.where(np.isfinite(confidence), confidence, -np.inf)
    catalogued = set(g.tolist())
    right, photos = [], []
    for truth, rows in zip(ids, groups, strict=True):
        if truth in catalogued:
            lead = rows[most_confident(confidence[rows])]
            right.append(bool(g[first[lead]] == truth))
            photos.append(len(rows))
    n = len(right)
    return {
        "num_encounters": n,
        "num_encounters_without_match": len(groups) - n,
        "photos_per_encounter": round(float(np.mean(photos)), 2) if photos else 0.0,
        "accuracy": round(float(np.mean(right)), 4) if n else 0.0,
        "photos": round(float(np.dot(right, photos) / np.sum(photos)), 4) if n else 0.0,
        "rule": "the verdict of the encounter's most confident photo",
    }


def encounter_report(ranking: np.ndarray, scores: np.ndarray, query_ids: Sequence[Any], gallery_ids: Sequence[Any],
                     encounters: Sequence[Hashable], target_far: float = 0.05,
                     catalogue_threshold: float | None = None) -> dict[str, Any]:
    """:func:`encounter_retrieval` plus the new-individual figures per encounter: a threshold calibrated on these
    encounters at ``target_far`` (each encounter's best wrong turtle over its photos plays an unknown one) and,
    when given, the rates of the catalogue's fitted encounter threshold on them."""
    from wildtrack.evaluate import calibrate_open_set, open_set_rates

    pooled, ids, groups = pool_encounter_rows(scores, query_ids, encounters)
    figures = _accuracy(ranking, scores, gallery_ids, ids, groups)
    figures["open_set"] = calibrate_open_set(pooled, ids, gallery_ids, target_far)[1]
    if catalogue_threshold is not None and "note" not in figures["open_set"]:
        figures["open_set"]["catalogue_threshold"] = open_set_rates(pooled, ids, gallery_ids, catalogue_threshold)
    return figures
