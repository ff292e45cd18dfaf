"""From image hits to an identity decision.

A search returns images; biologists need an individual. Several photos of the same turtle in the top-k are
evidence for that turtle, so hits are first grouped per identity, then the best identity is accepted only if its
score reaches a calibrated threshold - otherwise the photo is reported as a possible new individual.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from wildtrack.index import Hit

AggregateMethod = Literal["max", "mean-top-n"]
METHODS: tuple[str, ...] = ("max", "mean-top-n")


@dataclass(frozen=True)
class IdentityScore:
    """One candidate individual: its score (what candidates are ordered by: the match probability after
    re-ranking, else the cosine), best-matching image, and how many hits support it. ``cosine`` is that image's
    cosine similarity and ``inliers`` its verified keypoint matches (None without local re-ranking)."""

    identity: str
    score: float
    best_image_id: str
    support: int
    cosine: float | None = None
    inliers: int | None = None


@dataclass(frozen=True)
class Decision:
    """The answer for one query photo; ``identity`` is None when it looks like a new (or unknown) individual.

    ``score`` is the best candidate's score even when unknown, so a user can see how close it came;
    it is None only when there were no candidates at all (empty gallery).
    """

    identity: str | None
    score: float | None
    is_unknown: bool
    candidates: tuple[IdentityScore, ...]

    @property
    def best(self) -> IdentityScore | None:
        return self.candidates[0] if self.candidates else None


def aggregate_identities(hits: Iterable[Hit], method: AggregateMethod = "max", n: int = 3) -> list[IdentityScore]:
    """Group one query's hits by identity, best first.

    ``max`` scores an identity by its single closest image (robust when a turtle has few gallery photos);
    ``mean-top-n`` by the mean of its ``n`` closest images among the hits (fewer if it has fewer), which rewards
    consistent evidence over one lucky near-duplicate. Ties are broken by more support, then identity name,
    so the output never depends on hit order.
    """
    if method not in METHODS:
        raise ValueError(f"unknown aggregation {method!r}; choose one of {METHODS}")
    if n < 1:
        raise ValueError("n must be >= 1")
    by_id: dict[str, list[Hit]] = defaultdict(list)
    for h in hits:
        by_id[h.identity].append(h)
    scores = [_score(identity, group, method, n) for identity, group in by_id.items()]
    return sorted(scores, key=lambda s: (-s.score, -s.support, s.identity))


def _score(identity: str, group: list[Hit], method: AggregateMethod, n: int) -> IdentityScore:
    ranked = sorted(group, key=lambda h: (-h.score, h.rank, h.image_id))
    top = ranked if method == "max" else ranked[:n]
    score = top[0].score if method == "max" else math.fsum(h.score for h in top) / len(top)
    return IdentityScore(identity, float(score), ranked[0].image_id, len(group), float(ranked[0].score))


def decide(identity_scores: Sequence[IdentityScore], threshold: float | None) -> Decision:
    """Accept the best identity if its score is >= ``threshold``; else report a possible new individual.

    ``threshold=None`` always accepts the best candidate (closed-set use, e.g. when every turtle is catalogued).
    """
    if threshold is not None and math.isnan(threshold):
        raise ValueError("threshold is NaN")
    candidates = tuple(sorted(identity_scores, key=lambda s: (-s.score, -s.support, s.identity)))
    if not candidates:
        return Decision(None, None, True, candidates)
    best = candidates[0]
    unknown = threshold is not None and best.score < threshold
    return Decision(None if unknown else best.identity, best.score, unknown, candidates)


def decide_reranked(hits: list[Hit], threshold: float | None) -> Decision:
    """The turtle with the highest match probability among the re-ranked hits (the fusion's, which counts the
    local evidence); a new individual when it is below ``threshold``.

    Each candidate is scored by its best image's match probability and ordered by it (ties: the re-ranked
    order), so the list a user reads is ordered by the number it shows; that image's cosine and inliers ride
    along. This is the rule the threshold was calibrated for: a known turtle's best probability against the best
    probability of any other turtle (:func:`~wildtrack.evaluate.calibrate_open_set`). Hits outside the
    re-ranked shortlist carry no probability and name no candidate. ``hits`` must come from
    :meth:`~wildtrack.matching.pipeline.MatchingPipeline.rank`.
    """
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    if not hits:
        return Decision(None, None, True, ())
    if hits[0].match_probability is None:
        raise ValueError("decide_reranked needs re-ranked hits (the first one has no match probability)")
    best: dict[str, Hit] = {}
    support: dict[str, int] = defaultdict(int)
    for h in hits:
        support[h.identity] += 1
        p = h.match_probability
        if p is None or math.isnan(p):
            continue
        if h.identity not in best or p > best[h.identity].match_probability:  # type: ignore[operator]
            best[h.identity] = h
    ranked = sorted(best.values(), key=lambda h: (-h.match_probability, h.rank))  # type: ignore[operator]
    candidates = tuple(IdentityScore(h.identity, float(h.match_probability), h.image_id,  # type: ignore[arg-type]
                                     support[h.identity], float(h.score), h.inliers) for h in ranked)
    if not candidates:  # every probability NaN: never a confident match
        return Decision(None, float("nan"), True, candidates)
    top = candidates[0]
    unknown = threshold is not None and not top.score >= threshold
    return Decision(None if unknown else top.identity, top.score, unknown, candidates)
