"""Local re-ranking as a stage of search: fit the score fusion on a catalogue, and apply it to one query.

The fusion is always fitted on the catalogue itself (each identity's latest encounter against its earlier ones,
time-aware), so it never sees the photos it will be asked about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.data import Record, validation_split
from wildtrack.evaluate import cosine_similarity
from wildtrack.index import Hit
from wildtrack.match.fusion import ScoreFusion, shortlist_pairs
from wildtrack.match.identity import Decision, aggregate_identities
from wildtrack.match.local import LocalReranker, local_scores_for_shortlist

FUSION_FILE = "fusion.json"


@dataclass
class GalleryFusion:
    """A fitted fusion plus the shortlist length it was fitted for."""

    fusion: ScoreFusion
    k: int
    pseudo_queries: int

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "pseudo_queries": self.pseudo_queries, "fusion": self.fusion.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GalleryFusion:
        return cls(ScoreFusion.from_dict(data["fusion"]), int(data["k"]), int(data.get("pseudo_queries", 0)))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FUSION_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> GalleryFusion | None:
        path = Path(directory) / FUSION_FILE
        return cls.from_dict(json.loads(path.read_text())) if path.is_file() else None


def fit_gallery_fusion(gallery: list[Record], embeddings: np.ndarray, k: int, reranker: LocalReranker | None = None,
                       seed: int = 0) -> GalleryFusion:
    """Fit cosine + inlier fusion on the catalogue's own latest encounters against its earlier ones."""
    reranker = reranker or LocalReranker(k=k)
    held = validation_split(gallery, seed=seed)
    position = {r.relpath: i for i, r in enumerate(gallery)}
    vq = [position[r.relpath] for r in held.query]
    vg = [position[r.relpath] for r in held.gallery]
    sim = cosine_similarity(embeddings[vq], embeddings[vg])
    local = local_scores_for_shortlist([gallery[i].path for i in vq], [gallery[i].path for i in vg], sim, k, reranker)
    pairs = shortlist_pairs(sim, local, [gallery[i].identity for i in vq], [gallery[i].identity for i in vg], k)
    return GalleryFusion(ScoreFusion().fit(*pairs), k, len(vq))


def rerank_hits(query: str | Path | bytes, hits: list[Hit], data_root: Path, fitted: GalleryFusion,
                reranker: LocalReranker | None = None) -> tuple[list[Hit], list[int]]:
    """Re-order the first ``k`` hits by fused score (the rest keep their order); returns hits and inliers.

    Hits keep their cosine ``score``: the fused value only decides the order.
    """
    reranker = reranker or LocalReranker(k=fitted.k)
    head, tail = hits[: fitted.k], hits[fitted.k:]
    if not head:
        return hits, []
    inliers = reranker.inliers(query, [data_root / h.path for h in head])
    fused = fitted.fusion.logit(np.array([h.score for h in head]), inliers)
    order = np.argsort(-np.asarray(fused), kind="stable")
    ranked = [replace(head[i], rank=n + 1) for n, i in enumerate(order)]
    ranked += [replace(h, rank=len(ranked) + n + 1) for n, h in enumerate(tail)]
    return ranked, [int(inliers[i]) for i in order] + [0] * len(tail)


def decide_reranked(hits: list[Hit], threshold: float | None) -> Decision:
    """The identity whose image the re-ranked list puts first; the threshold still reads its best cosine."""
    first: dict[str, int] = {}
    for h in hits:
        first.setdefault(h.identity, h.rank)
    candidates = tuple(sorted(aggregate_identities(hits), key=lambda s: first.get(s.identity, len(hits) + 1)))
    if not candidates:
        return Decision(None, None, True, candidates)
    best = candidates[0]
    unknown = threshold is not None and best.score < threshold
    return Decision(None if unknown else best.identity, best.score, unknown, candidates)
