"""Which catalogue photos the expensive matcher looks at: each query's global top ``k``."""

from __future__ import annotations

from typing import Any

import numpy as np

from wildtrack.vectors import rank_gallery

__all__ = ["shortlist", "shortlist_pairs"]


def shortlist(sim: np.ndarray, k: int) -> np.ndarray:
    """``(Q, min(k, G))`` gallery columns of each query's best ``k`` by ``sim``, best first."""
    return rank_gallery(np.asarray(sim))[:, : min(k, np.asarray(sim).shape[1])]


def shortlist_pairs(sim: np.ndarray, local: np.ndarray, query_ids: Any, gallery_ids: Any, k: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cosine, inliers, same_identity)`` of every (query, top-``k`` gallery image) pair: the pairs a fusion
    is applied to, hence the ones to fit it on."""
    top = shortlist(sim, k)
    rows = np.repeat(np.arange(len(top)), top.shape[1])
    cols = top.ravel()
    q = np.asarray([str(i) for i in query_ids], dtype=object)
    g = np.asarray([str(i) for i in gallery_ids], dtype=object)
    return np.asarray(sim)[rows, cols], np.asarray(local)[rows, cols], q[rows] == g[cols]
