"""Pictures that never mislead, checked by what they are drawn from: a panel is framed wrong only for a query the
product (after re-ranking) got wrong, a re-ranking fix is shown as a before/after pair that says so, and a panel
shows the best photo of each top turtle, so the nearest rival is always in view."""

from __future__ import annotations

import numpy as np
import pytest

from wildtrack.workflows.pictures import RankedScores, display_order, plan_panels, top_identities

G_IDS = ["A", "A", "A", "B", "B", "C", "D"]  # seven gallery photos of four turtles


def reranked(cosine: np.ndarray, probability: np.ndarray) -> RankedScores:
    return RankedScores(cosine, probability, np.zeros_like(cosine), probability + 0.01 * cosine)


def final_first(scores: RankedScores, qi: int) -> str:
    return G_IDS[int(np.argmax(display_order(scores)[qi]))]


def test_a_query_reranking_put_right_is_a_before_after_pair_never_a_failure():
    # query 0 (A): the global search puts B first, re-ranking puts A first; query 1 (B) right either way
    cosine = np.array([[0.80, 0.70, 0.60, 0.90, 0.50, 0.40, 0.30],
                       [0.40, 0.30, 0.20, 0.90, 0.80, 0.50, 0.10]])
    probability = np.array([[0.95, 0.90, 0.80, 0.20, 0.10, 0.05, 0.01],
                            [0.10, 0.10, 0.10, 0.97, 0.93, 0.20, 0.01]])
    plans = plan_panels(reranked(cosine, probability), ["A", "B"], G_IDS, examples=4, topk=3)
    assert not any(p.wrong for p in plans)
    kinds = [(p.query, p.kind) for p in plans]
    assert kinds[-2:] == [(0, "before"), (0, "after")], kinds
    before, after = plans[-2:]
    assert G_IDS[before.columns[0]] == "B" and not before.scores.reranked  # the global ranking, as it was
    assert G_IDS[after.columns[0]] == "A" and after.scores.reranked  # the product's answer


def test_only_a_query_the_product_named_wrong_is_framed_wrong():
    rng = np.random.default_rng(3)
    for trial in range(40):
        q_ids = list(rng.choice(["A", "B", "C", "D"], size=8))
        cosine, probability = rng.random((8, 7)), rng.random((8, 7))
        scores = reranked(cosine, probability)
        for plan in plan_panels(scores, q_ids, G_IDS, examples=6, topk=4, seed=trial):
            named = final_first(scores, plan.query)
            if plan.kind in ("right", "wrong", "after"):
                assert G_IDS[plan.columns[0]] == named  # these panels show the product's own first answer
            assert plan.wrong == (named != q_ids[plan.query]) or plan.kind == "before", (trial, plan)
            assert (plan.kind == "right") <= (named == q_ids[plan.query])


def test_a_failure_of_the_product_is_shown_and_no_before_after_pair_replaces_it():
    cosine = np.array([[0.9, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]])
    probability = np.array([[0.2, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]])
    plans = plan_panels(reranked(cosine, probability), ["A", "B"], G_IDS, examples=2, topk=3)
    assert [(p.query, p.kind) for p in plans] == [(1, "right"), (0, "wrong")]
    assert plans[1].own_rank == 1  # A comes second among turtles


@pytest.mark.parametrize("k", [1, 3, 4, 9])
def test_panels_show_the_best_photo_of_each_top_turtle(k):
    row = np.array([0.99, 0.98, 0.97, 0.50, 0.60, 0.20, 0.95])
    shown = top_identities(row, G_IDS, k)
    assert [G_IDS[j] for j in shown] == ["A", "D", "B", "C"][:k]  # the best rival (D) right after A
    assert shown[:3] == [0, 6, 4][:k]  # each turtle by its best photo
