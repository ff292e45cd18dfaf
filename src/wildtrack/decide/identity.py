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
    """One candidate individual: its aggregated score, best-matching image, and how many hits support it."""

    identity: str
    score: float
    best_image_id: str
    support: int


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
    return IdentityScore(identity, float(score), ranked[0].image_id, len(group))


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
    """The identity whose image the re-ranked list puts first, scored by that image's match probability (the
    fusion's, which counts the local evidence); a new individual when it is below ``threshold``.

    Candidates keep their cosine scores (best image per identity), in re-ranked order. ``hits`` must come from
    :func:`~wildtrack.matching.rerank.rerank_hits`: the first one carries its match probability.
    """
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    first: dict[str, Hit] = {}
    for h in hits:
        first.setdefault(h.identity, h)
    candidates = tuple(sorted(aggregate_identities(hits), key=lambda s: first[s.identity].rank))
    if not candidates:
        return Decision(None, None, True, candidates)
    best = candidates[0]
    probability = first[best.identity].match_probability
    if probability is None:
        raise ValueError("decide_reranked needs re-ranked hits (the first one has no match probability)")
    score = float(probability)
    unknown = threshold is not None and not score >= threshold  # NaN is never a confident match
    return Decision(None if unknown else best.identity, score, unknown, candidates)
