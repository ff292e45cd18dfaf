"""Aggregating image hits into identities and deciding known vs new individual."""

from __future__ import annotations

import random

import numpy as np
import pytest

from wildtrack.decide.identity import Decision, IdentityScore, aggregate_identities, decide
from wildtrack.index import GalleryIndex, Hit


def hits(*pairs: tuple[str, float]) -> list[Hit]:
    ranked = sorted(enumerate(pairs), key=lambda p: -p[1][1])
    return [
        Hit(f"img{i}", f"{ident}/{i}.jpg", ident, None, score, rank)
        for rank, (i, (ident, score)) in enumerate(ranked, 1)
    ]


def test_max_takes_each_identitys_closest_image():
    out = aggregate_identities(hits(("A", 0.9), ("B", 0.8), ("A", 0.7), ("C", 0.1)))
    assert [(s.identity, s.score, s.support) for s in out] == [("A", 0.9, 2), ("B", 0.8, 1), ("C", 0.1, 1)]
    assert out[0].best_image_id == "img0"


def test_mean_top_n_rewards_consistent_evidence():
    h = hits(("A", 0.95), ("B", 0.8), ("B", 0.75), ("A", 0.3), ("A", 0.2), ("B", 0.7), ("A", 0.1))
    out = aggregate_identities(h, method="mean-top-n", n=3)
    assert [s.identity for s in out] == ["B", "A"]
    assert out[0].score == pytest.approx(0.75) and out[1].score == pytest.approx((0.95 + 0.3 + 0.2) / 3)
    assert out[1].best_image_id == "img0" and out[1].support == 4
    one = aggregate_identities(hits(("A", 0.6)), method="mean-top-n", n=5)
    assert one[0].score == pytest.approx(0.6)  # fewer images than n: mean of what there is
    assert aggregate_identities(h, method="mean-top-n", n=1) == aggregate_identities(h, method="max")


def test_ties_are_deterministic_whatever_the_hit_order():
    h = hits(("B", 0.5), ("A", 0.5), ("C", 0.5), ("C", 0.4))
    expected = [("C", 2), ("A", 1), ("B", 1)]  # same score: more support first, then name
    for seed in range(5):
        shuffled = h[:]
        random.Random(seed).shuffle(shuffled)
        assert [(s.identity, s.support) for s in aggregate_identities(shuffled)] == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_identities([], method="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must"):
        aggregate_identities([], method="mean-top-n", n=0)
    with pytest.raises(ValueError, match="NaN"):
        decide([], float("nan"))
    assert aggregate_identities([]) == []


def test_decide_known_unknown_and_threshold_edge():
    scores = [IdentityScore("B", 0.6, "b1", 1), IdentityScore("A", 0.8, "a1", 2)]
    known = decide(scores, 0.7)
    assert known == Decision("A", 0.8, False, (scores[1], scores[0])) and known.best == scores[1]
    unknown = decide(scores, 0.85)
    assert unknown.identity is None and unknown.is_unknown and unknown.score == 0.8 and len(unknown.candidates) == 2
    assert decide(scores, 0.8).identity == "A"  # a score equal to the threshold is accepted
    assert decide(scores, None).identity == "A"  # closed set: always the best
    empty = decide([], 0.5)
    assert empty.is_unknown and empty.identity is None and empty.score is None and empty.best is None


def test_search_aggregate_decide_end_to_end():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 32))
    x = np.concatenate([c + 0.1 * rng.standard_normal((4, 32)) for c in centres])
    meta = [{"path": f"T{i // 4}/{i}.jpg", "identity": f"T{i // 4}"} for i in range(20)]
    idx = GalleryIndex.build(x, meta, "fp")
    query = centres[2] + 0.1 * rng.standard_normal(32)
    scores = aggregate_identities(idx.search(query, 10)[0], method="mean-top-n", n=3)
    assert scores[0].identity == "T2" and scores[0].support == 4
    assert decide(scores, 0.5).identity == "T2"
    stranger = rng.standard_normal(32)
    assert decide(aggregate_identities(idx.search(stranger, 10)[0]), 0.5).is_unknown


def _reranked(*rows: tuple[str, float, float]) -> list[Hit]:
    """Hits in re-ranked order: (identity, cosine, match probability)."""
    return [Hit(f"img{i}", f"{ident}/{i}.jpg", ident, None, cos, i + 1, inliers=10, match_probability=p)
            for i, (ident, cos, p) in enumerate(rows)]


def test_after_reranking_the_decision_reads_the_match_probability_of_the_first_identity():
    from wildtrack.decide.identity import decide_reranked

    # t2 has the better cosine but local matching put t1 first with a high match probability.
    hits = _reranked(("t1", 0.40, 0.93), ("t2", 0.70, 0.20), ("t1", 0.35, 0.80))
    d = decide_reranked(hits, threshold=0.5)
    assert (d.identity, d.score, d.is_unknown) == ("t1", 0.93, False)
    assert [c.identity for c in d.candidates] == ["t1", "t2"]  # match probability order, not cosine order
    assert [(c.score, c.cosine, c.inliers, c.support) for c in d.candidates] == [(0.93, 0.40, 10, 2),
                                                                                 (0.20, 0.70, 10, 1)]
    unknown = decide_reranked(hits, threshold=0.95)
    assert unknown.identity is None and unknown.is_unknown and unknown.score == 0.93
    assert decide_reranked(hits, threshold=None).identity == "t1"
    with pytest.raises(ValueError, match="finite"):
        decide_reranked(hits, threshold=float("nan"))


def test_reranked_candidates_are_ordered_by_the_match_probability_they_show():
    from wildtrack.decide.identity import decide_reranked

    # Identity support put t3's two photos ahead of t4's single, more probable one: the candidates (what a user
    # reads, best first) follow the probability they display, and the verdict is the most probable turtle.
    hits = _reranked(("t3", 0.5, 0.60), ("t3", 0.5, 0.58), ("t4", 0.4, 0.70), ("t5", 0.9, 0.10))
    hits.append(Hit("img9", "t6/9.jpg", "t6", None, 0.95, 5))  # outside the shortlist: no probability
    d = decide_reranked(hits, threshold=0.5)
    scores = [c.score for c in d.candidates]
    assert scores == sorted(scores, reverse=True) == [0.70, 0.60, 0.10]
    assert (d.identity, d.score) == ("t4", 0.70)
    assert "t6" not in {c.identity for c in d.candidates}
