"""The evaluation's retrieval panels and match pictures: what a biologist looks at to decide whether to trust it.

A panel ranks the gallery by the score it prints (the match probability after re-ranking, inliers and cosine on
the line below; the cosine otherwise), so its order and its numbers never disagree; its title's verdict is read
from that same order. Beside each panel, ``match_<n>.png`` draws the query and its first photo with the keypoint
pairs local matching verified (:mod:`wildtrack.matching.inlier_pairs`, drawn by
:mod:`wildtrack.visualize.matchview`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wildtrack.config import EvalConfig
from wildtrack.data import Record
from wildtrack.evaluate import rank_gallery, retrieval_metrics
from wildtrack.images import ImageError
from wildtrack.matching.inlier_pairs import match_evidence
from wildtrack.matching.pipeline import MatchingPipeline
from wildtrack.visualize.matchview import match_picture
from wildtrack.visualize.panels import PanelItem, choose_examples, panel_title, retrieval_panel

__all__ = ["PanelPlan", "RankedScores", "display_order", "plan_panels", "retrieval_pictures", "top_identities"]


@dataclass
class RankedScores:
    """What the evaluation ranked by: ``cosine`` always; after re-ranking also the match ``probability`` and
    ``inliers`` of each query's shortlist and the ``fused`` ranking score (identity support included)."""

    cosine: np.ndarray
    probability: np.ndarray | None = None
    inliers: np.ndarray | None = None
    fused: np.ndarray | None = None

    @property
    def reranked(self) -> bool:
        return self.probability is not None


def display_order(scores: RankedScores) -> np.ndarray:
    """``(Q, G)`` scores whose ranking is the panels' order: by match probability (the fused score breaking ties
    and ordering the rest) after re-ranking, else by cosine."""
    if not scores.reranked:
        return scores.cosine
    assert scores.probability is not None and scores.fused is not None
    out = np.empty(scores.cosine.shape, dtype=np.float64)
    positions = -np.arange(scores.cosine.shape[1], dtype=np.float64)
    for q in range(len(out)):
        order = np.lexsort((-scores.fused[q], -scores.probability[q]))  # last key first: probability, then fused
        out[q, order] = positions
    return out


def top_identities(order: np.ndarray, g_ids: list[str], k: int) -> list[int]:
    """Gallery positions of the best photo of each of the first ``k`` identities in ``order`` (one query's row
    of scores): a panel of five photos of the query's own turtle says nothing about the nearest other turtle."""
    shown: list[int] = []
    seen: set[str] = set()
    for j in rank_gallery(order[None, :])[0]:
        if g_ids[j] not in seen:
            seen.add(g_ids[j])
            shown.append(int(j))
            if len(shown) == k:
                break
    return shown


def identity_rank(order: np.ndarray, query_id: str, g_ids: list[str]) -> int:
    """Where the query's own turtle comes among the gallery's turtles (0: first), -1 when it has no photo there."""
    ranked = [g_ids[j] for j in top_identities(order, g_ids, len(set(g_ids)))]
    return ranked.index(query_id) if query_id in ranked else -1


@dataclass(frozen=True)
class PanelPlan:
    """One retrieval panel to draw: query ``query`` against ``columns`` (gallery positions, the best photo of each
    top identity) labelled with ``scores``. ``kind`` says what the panel shows: ``right`` or ``wrong`` (the
    product's final answer), or ``before``/``after`` re-ranking for a query that re-ranking put right."""

    query: int
    kind: str
    columns: list[int]
    scores: RankedScores
    own_rank: int  # the query's own turtle among the turtles of this ranking (0: first)

    @property
    def wrong(self) -> bool:
        """Framed as a failure: only when the product's own answer (after any re-ranking) is wrong."""
        return self.kind == "wrong"


def plan_panels(scores: RankedScores, q_ids: list[str], g_ids: list[str], examples: int, topk: int,
                seed: int = 0) -> list[PanelPlan]:
    """Which queries to draw and how: successes and failures of the final answer (half each where there are
    enough); a failure is only ever one the product made. When the final answer names every query right but the
    global search alone did not, the last two panels are one such query before and after re-ranking."""
    final = display_order(scores)
    ranks = retrieval_metrics(final, q_ids, g_ids, ks=(1,)).first_correct_rank

    def plan(qi: int, kind: str, used: RankedScores, order: np.ndarray) -> PanelPlan:
        return PanelPlan(qi, kind, top_identities(order[qi], g_ids, topk), used,
                         identity_rank(order[qi], q_ids[qi], g_ids))

    plans = [plan(qi, "right" if ranks[qi] == 0 else "wrong", scores, final)
             for qi in choose_examples(ranks, examples, seed=seed)]
    if scores.reranked and examples and not (ranks > 0).any():
        global_ranks = retrieval_metrics(scores.cosine, q_ids, g_ids, ks=(1,)).first_correct_rank
        fixed = choose_examples(np.where((global_ranks > 0) & (ranks == 0), global_ranks, -1), 1, seed=seed)
        if fixed:
            keep = [p for p in plans if p.query != fixed[0]][: max(0, examples - 2)]
            plans = [*keep, plan(fixed[0], "before", RankedScores(scores.cosine), scores.cosine),
                     plan(fixed[0], "after", scores, final)]
    return plans


def _item(record: Record, q: Record, j: int, qi: int, scores: RankedScores) -> PanelItem:
    if not scores.reranked:
        return PanelItem(record.path, record.identity, float(scores.cosine[qi, j]), record.identity == q.identity,
                         "similarity")
    assert scores.probability is not None and scores.inliers is not None
    pairs = int(scores.inliers[qi, j])
    detail = f"{pairs} keypoint pair{'' if pairs == 1 else 's'} agree"
    return PanelItem(record.path, record.identity, float(scores.probability[qi, j]), record.identity == q.identity,
                     "P(same)", detail)


def _title(plan: PanelPlan, q: Record, first: Record) -> str:
    if plan.kind == "before":
        return (f"Query {q.identity}{f' on {q.date}' if q.date else ''}, BEFORE re-ranking (global search alone): "
                f"{first.identity} came first. Not WildTrack's answer: see the next picture")
    if plan.kind == "after":
        return (f"Query {q.identity}, AFTER re-ranking: RIGHT, {first.identity} first: re-ranking fixed the global "
                "search's mistake")
    return panel_title(q.identity, q.date, plan.own_rank, ", re-ranked" if plan.scores.reranked else "")


def retrieval_pictures(scores: RankedScores, query: list[Record], gallery: list[Record], cfg: EvalConfig,
                       out: Path, reranker: MatchingPipeline) -> tuple[list[Path], list[Path]]:
    """``retrieval_example_<n>.png`` panels (see :func:`plan_panels`; only a query the product named wrong is
    framed red) and, for each, a ``match_<n>.png`` of the query and the product's first answer; returns
    ``(panels, match pictures)``. A before/after pair shares one match picture: the corrected answer's."""
    q_ids, g_ids = [r.identity for r in query], [r.identity for r in gallery]
    panels, matches = [], []
    for n, plan in enumerate(plan_panels(scores, q_ids, g_ids, cfg.examples, cfg.topk, seed=cfg.seed)):
        q = query[plan.query]
        items = [_item(gallery[j], q, j, plan.query, plan.scores) for j in plan.columns]
        first = gallery[plan.columns[0]]
        panels.append(retrieval_panel(PanelItem(q.path, q.identity), items, out / f"retrieval_example_{n}.png",
                                      title=_title(plan, q, first), failure=plan.wrong))
        if plan.kind == "before":
            continue
        picture = _match_picture(q, first, items[0], reranker, out / f"match_{n}.png")
        if picture is not None:
            matches.append(picture)
    return panels, matches


def _match_picture(q: Record, first: Record, item: PanelItem, reranker: MatchingPipeline, path: Path) -> Path | None:
    """The query and the best photo of the turtle named first, the verified keypoint pairs drawn; None when a photo
    cannot be read."""
    try:
        evidence = match_evidence(q.path, first.path, reranker)
    except ImageError:
        return None
    verdict = "same turtle" if first.identity == q.identity else "ANOTHER turtle"
    score = f"{item.score_name} {item.score:.3f}" if item.score is not None else ""
    agree = (f"{evidence.inliers} keypoint pairs agree on one transform" if evidence.inliers
             else "no keypoint pairs agree (nothing to draw)")
    title = f"Query {q.identity} and WildTrack's first answer {first.identity} ({verdict}): {agree} · {score}"
    when = f" ({q.date})" if q.date else ""
    return match_picture(q.path, first.path, evidence.query_xy, evidence.target_xy, path,
                         f"query {q.identity}{when}: {Path(q.path).name}",
                         f"#1 {first.identity}" + (f" ({first.date})" if first.date else "") +
                         f": {Path(first.path).name}", title)
