"""Inlier counts for every (query, shortlisted photo) pair of an evaluation or a fit, all pairs in one pool."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from wildtrack.matching.reranker import LocalReranker, one_blas_thread
from wildtrack.matching.shortlist import shortlist
from wildtrack.progress import announce_total

__all__ = ["local_scores_for_shortlist"]


def local_scores_for_shortlist(
    query_paths: Sequence[str | Path],
    gallery_paths: Sequence[str | Path],
    sim: np.ndarray,
    k: int,
    reranker: LocalReranker | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(Q, G) inlier counts for each query's top-``k`` gallery images by ``sim``; 0 outside the shortlist.

    For evaluation: features of every image involved are extracted (or read from the cache) once, then all
    pairs are matched in a thread pool. ``k >= G`` matches every pair (local matching alone). ``progress`` is
    advanced once per photo whose features are read and once per query matched, after announcing that total
    (:mod:`wildtrack.progress`): on a cold cache the extraction is most of the time.
    """
    sim = np.asarray(sim)
    if sim.shape != (len(query_paths), len(gallery_paths)):
        raise ValueError(f"sim shape {sim.shape} does not match {len(query_paths)} × {len(gallery_paths)}")
    reranker = reranker or LocalReranker(k=k)
    k = min(k, len(gallery_paths))
    top = shortlist(sim, k)
    needed_g = sorted(set(top.ravel().tolist()))
    announce_total(progress, 2 * len(query_paths) + len(needed_g))
    feats_q = reranker.cache.get_many(query_paths, reranker.workers, progress)
    feats_g = dict(zip(needed_g, reranker.cache.get_many([gallery_paths[j] for j in needed_g], reranker.workers,
                                                         progress), strict=True))
    out = np.zeros(sim.shape, dtype=np.int64)

    def row(i: int) -> None:
        for j in top[i]:
            out[i, j] = reranker.match(feats_q[i], feats_g[int(j)]).inliers
        if progress:
            progress(1)

    with one_blas_thread(), ThreadPoolExecutor(reranker.workers) as pool:
        list(pool.map(row, range(len(query_paths))))
    return out
