"""Re-ranking one query's hits with a fitted :class:`GalleryFusion`: the one path the CLI and the service use."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from wildtrack.data import storage
from wildtrack.features import Source
from wildtrack.index import Hit
from wildtrack.matching.fusion import with_identity_support
from wildtrack.matching.gallery_fusion import GalleryFusion
from wildtrack.matching.reranker import LocalReranker

__all__ = ["rerank_hits"]


def rerank_hits(query: Source, hits: list[Hit], data_root: Path | str, fitted: GalleryFusion,
                reranker: LocalReranker | None = None) -> list[Hit]:
    """Re-order the first ``k`` hits by fused score with identity support (the rest keep their order).

    Hits keep their cosine ``score``; re-ranked ones also carry their ``inliers`` and the fusion's calibrated
    ``match_probability`` (identity support only decides the order, it is not a probability).
    """
    reranker = reranker or fitted.reranker()
    head, tail = hits[: fitted.k], hits[fitted.k:]
    if not head:
        return hits
    inliers = reranker.inliers(query, [storage.join(data_root, h.path) for h in head])
    cosines = np.array([h.score for h in head])
    logit = fitted.fusion.logit(cosines, inliers)
    probability = 1.0 / (1.0 + np.exp(-logit))
    fused = with_identity_support(logit, [h.identity for h in head], fitted.identity_weight)
    order = np.argsort(-fused, kind="stable")
    ranked = [replace(head[i], rank=n + 1, inliers=int(inliers[i]), match_probability=float(probability[i]))
              for n, i in enumerate(order)]
    return ranked + [replace(h, rank=len(ranked) + n + 1) for n, h in enumerate(tail)]
