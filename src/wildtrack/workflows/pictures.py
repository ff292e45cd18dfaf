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

__all__ = ["RankedScores", "display_order", "retrieval_pictures"]


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


def _item(record: Record, q: Record, j: int, qi: int, scores: RankedScores) -> PanelItem:
    cosine = float(scores.cosine[qi, j])
    if not scores.reranked:
        return PanelItem(record.path, record.identity, cosine, record.identity == q.identity, "cosine")
    assert scores.probability is not None and scores.inliers is not None
    detail = f"{int(scores.inliers[qi, j])} inliers · cosine {cosine:.3f}"
    return PanelItem(record.path, record.identity, float(scores.probability[qi, j]), record.identity == q.identity,
                     "P(same)", detail)


def retrieval_pictures(scores: RankedScores, query: list[Record], gallery: list[Record], cfg: EvalConfig,
                       out: Path, reranker: MatchingPipeline) -> tuple[list[Path], list[Path]]:
    """``retrieval_example_<n>.png`` panels (successes and failures, a failure framed red) and, for each, a
    ``match_<n>.png`` of the query and its first photo; returns ``(panels, match pictures)``.

    When the final ranking names every query right, one failure of the global ranking is shown instead of none
    (ranked and labelled by cosine, as the global search saw it)."""
    q_ids, g_ids = [r.identity for r in query], [r.identity for r in gallery]
    shown_scores = display_order(scores)
    ranks = retrieval_metrics(shown_scores, q_ids, g_ids, ks=(1,)).first_correct_rank
    how = ", re-ranked" if scores.reranked else ""
    shown = [(qi, scores, shown_scores, ranks[qi], how) for qi in choose_examples(ranks, cfg.examples, seed=cfg.seed)]
    if scores.reranked and cfg.examples and not (ranks > 0).any():
        global_only = RankedScores(scores.cosine)
        global_ranks = retrieval_metrics(scores.cosine, q_ids, g_ids, ks=(1,)).first_correct_rank
        failures = choose_examples(np.where(global_ranks > 0, global_ranks, -1), 1, seed=cfg.seed)
        shown[len(shown) - len(failures):] = [
            (qi, global_only, scores.cosine, global_ranks[qi], ", global ranking before re-ranking")
            for qi in failures]
    panels, matches = [], []
    for n, (qi, used, order, rank, note) in enumerate(shown):
        q = query[qi]
        top = rank_gallery(order[qi:qi + 1])[0, : cfg.topk]
        items = [_item(gallery[j], q, int(j), qi, used) for j in top]
        panels.append(retrieval_panel(PanelItem(q.path, q.identity), items, out / f"retrieval_example_{n}.png",
                                      title=panel_title(q.identity, q.date, int(rank), note)))
        picture = _match_picture(q, gallery[int(top[0])], items[0], reranker, out / f"match_{n}.png")
        if picture is not None:
            matches.append(picture)
    return panels, matches


def _match_picture(q: Record, first: Record, item: PanelItem, reranker: MatchingPipeline, path: Path) -> Path | None:
    """The query and its first photo, the verified keypoint pairs drawn; None when a photo cannot be read."""
    try:
        evidence = match_evidence(q.path, first.path, reranker)
    except ImageError:
        return None
    verdict = "same turtle" if first.identity == q.identity else "ANOTHER turtle"
    score = f"{item.score_name} {item.score:.3f}" if item.score is not None else ""
    title = (f"Query {q.identity} and its first match {first.identity} ({verdict}): {evidence.inliers} keypoint "
             f"pairs agree on one transform · {score}")
    when = f" ({q.date})" if q.date else ""
    return match_picture(q.path, first.path, evidence.query_xy, evidence.target_xy, path,
                         f"query {q.identity}{when}: {Path(q.path).name}",
                         f"#1 {first.identity}" + (f" ({first.date})" if first.date else "") +
                         f": {Path(first.path).name}", title)
