"""Several photos of one encounter, one answer: the verdict of the most confident photo."""

from __future__ import annotations

import numpy as np
import pytest

from wildtrack.decide.encounter import encounter_retrieval, pool_encounter, pool_encounter_rows
from wildtrack.decide.identity import Decision, IdentityScore
from wildtrack.evaluate import calibrate_open_set
from wildtrack.index import Hit


def _hit(identity: str, image: str, cosine: float, probability: float | None, rank: int = 1) -> Hit:
    return Hit(image, f"{identity}/{image}.jpg", identity, None, cosine, rank, None, probability)


def _decision(identity: str, score: float, threshold: float = 0.5) -> Decision:
    unknown = score < threshold
    return Decision(None if unknown else identity, score, unknown, (IdentityScore(identity, score, "x", 1),))


def test_one_confident_photo_names_the_turtle_that_the_other_photos_missed():
    photos = [[_hit("t2", "a", 0.8, 0.20), _hit("t1", "b", 0.7, 0.10, 2)],   # a side the catalogue lacks
              [_hit("t1", "c", 0.6, 0.95), _hit("t2", "d", 0.5, 0.05, 2)],   # the head, matched with many inliers
              [_hit("t3", "e", 0.7, 0.30)]]
    decisions = [_decision("t2", 0.20), _decision("t1", 0.95), _decision("t3", 0.30)]
    verdict = pool_encounter(photos, decisions, by_probability=True, threshold=0.5)
    assert verdict.identity == "t1" and verdict.score == pytest.approx(0.95) and not verdict.is_unknown
    assert [c.identity for c in verdict.candidates] == ["t1", "t3", "t2"]  # the verdict first, then best scores
    assert {c.identity: c.support for c in verdict.candidates} == {"t1": 1, "t2": 1, "t3": 1}
    assert verdict.candidates[0].best_image_id == "c"


def test_a_single_photo_keeps_its_own_verdict():
    hits = [[_hit("t1", "a", 0.9, 0.7), _hit("t2", "b", 0.8, 0.8, 2)]]  # identity support put t1 first
    verdict = pool_encounter(hits, [_decision("t1", 0.7)], by_probability=True, threshold=0.5)
    assert verdict.identity == "t1" and verdict.score == pytest.approx(0.7)


def test_the_encounter_threshold_decides_and_none_always_names_the_turtle():
    hits = [[_hit("t1", "a", 0.9, 0.6)], [_hit("t1", "b", 0.8, 0.4)]]
    decisions = [_decision("t1", 0.6), _decision("t1", 0.4)]
    strict = pool_encounter(hits, decisions, by_probability=True, threshold=0.7)
    assert strict.is_unknown and strict.identity is None and strict.score == pytest.approx(0.6)
    assert strict.candidates[0].identity == "t1" and strict.candidates[0].support == 2
    assert pool_encounter(hits, decisions, by_probability=True, threshold=None).identity == "t1"


def test_without_reranking_the_cosines_are_pooled_and_unverified_hits_never_count():
    hits = [[_hit("t1", "a", 0.9, None), _hit("t2", "b", 0.95, None, 2)]]
    by_cosine = pool_encounter(hits, [_decision("t2", 0.95)], by_probability=False, threshold=None)
    assert by_cosine.identity == "t2" and by_cosine.candidates[0].score == pytest.approx(0.95)
    by_probability = pool_encounter(hits, [_decision("t2", 0.95)], by_probability=True, threshold=None)
    assert by_probability.candidates == ()  # no hit was re-ranked: nothing has a probability to pool


def test_an_encounter_needs_one_decision_per_photo():
    with pytest.raises(ValueError, match="one decision per photo"):
        pool_encounter([[_hit("t1", "a", 0.9, 0.5)]], [], by_probability=True, threshold=None)
    with pytest.raises(ValueError, match="at least one photo"):
        pool_encounter([], [], by_probability=True, threshold=None)


def test_encounter_retrieval_counts_encounters_and_photos():
    g_ids = ["t1", "t1", "t2", "t3"]
    # encounter A (t1): photo 0 wrongly prefers t2 weakly, photo 1 finds t1 confidently -> right
    # encounter B (t2): one photo, wrong (t3) -> wrong; encounter C (t9): not in the catalogue
    scores = np.array([[0.1, 0.2, 0.3, 0.0],
                       [0.9, 0.1, 0.2, 0.0],
                       [0.0, 0.0, 0.2, 0.6],
                       [0.5, 0.0, 0.0, 0.0]])
    figures = encounter_retrieval(scores, scores, ["t1", "t1", "t2", "t9"], g_ids, ["A", "A", "B", "C"])
    assert figures["num_encounters"] == 2 and figures["num_encounters_without_match"] == 1
    assert figures["accuracy"] == pytest.approx(0.5)
    assert figures["photos"] == pytest.approx(2 / 3, abs=1e-4)  # A's two photos right, B's one wrong
    assert figures["photos_per_encounter"] == pytest.approx(1.5)


def test_the_ranking_picks_each_photos_turtle_and_the_scores_its_confidence():
    g_ids = ["t1", "t2"]
    ranking = np.array([[0.2, 0.9], [0.8, 0.1]])  # photo 0 says t2, photo 1 says t1
    probability = np.array([[0.9, 0.3], [0.6, 0.1]])  # ... with confidence 0.3 and 0.6: t1 wins
    assert encounter_retrieval(ranking, probability, ["t1", "t1"], g_ids, ["A", "A"])["accuracy"] == 1.0


def test_pooled_rows_take_each_gallery_photos_best_score_and_refuse_mixed_identities():
    scores = np.array([[0.1, 0.7], [0.5, 0.2], [0.3, 0.3]])
    pooled, ids, groups = pool_encounter_rows(scores, ["t1", "t1", "t2"], ["A", "A", "B"])
    assert ids == ["t1", "t2"] and groups == [[0, 1], [2]]
    assert np.allclose(pooled, [[0.5, 0.7], [0.3, 0.3]])
    with pytest.raises(ValueError, match="mixes identities"):
        pool_encounter_rows(scores, ["t1", "t2", "t2"], ["A", "A", "B"])


def test_the_best_of_several_photos_needs_a_higher_threshold_for_the_same_false_accepts():
    """Impostor scores of unrelated photos: their maximum over an encounter of 5 is high more often."""
    rng = np.random.default_rng(0)
    n_enc, per = 200, 5
    q_ids = [f"q{e}" for e in range(n_enc) for _ in range(per)]
    g_ids = ["g0", "g1"]
    own = rng.normal(1.0, 0.3, (n_enc * per, 1))
    other = rng.normal(0.0, 0.3, (n_enc * per, 1))
    scores = np.hstack([own, other])
    q_as_g = ["g0"] * len(q_ids)  # every query's own turtle is g0
    photo_threshold = calibrate_open_set(scores, q_as_g, g_ids, 0.05)[0]
    pooled, ids, _ = pool_encounter_rows(scores, q_as_g, q_ids)
    encounter_threshold = calibrate_open_set(pooled, ids, g_ids, 0.05)[0]
    assert encounter_threshold > photo_threshold + 0.1


def test_a_photo_without_a_finite_score_never_decides():
    hits = [[_hit("t2", "a", 0.9, float("nan"))], [_hit("t1", "b", 0.8, 0.6)]]
    decisions = [Decision("t2", float("nan"), False, (IdentityScore("t2", float("nan"), "a", 1),)),
                 _decision("t1", 0.6)]
    verdict = pool_encounter(hits, decisions, by_probability=True, threshold=0.5)
    assert verdict.identity == "t1" and verdict.score == pytest.approx(0.6)
    assert [c.identity for c in verdict.candidates] == ["t1"]  # the NaN hit is no evidence either
