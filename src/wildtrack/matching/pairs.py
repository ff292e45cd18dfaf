"""Inlier counts of (query, catalogue photo) pairs, all pairs in one thread pool: one query's shortlist (a
search) and many queries' shortlists (an evaluation, a fit) go through the same :func:`count_inliers`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from wildtrack.features import LocalFeatures
from wildtrack.matching.geometry import Matcher

__all__ = ["count_inliers", "one_blas_thread"]


def one_blas_thread() -> threadpool_limits:
    """Pairs are matched in parallel threads; OpenBLAS threads inside each small product only contend with them
    (measured: 3× slower per pair with OpenBLAS' default threads)."""
    return threadpool_limits(limits=1, user_api="blas")


def count_inliers(matcher: Matcher, rows: Sequence[tuple[LocalFeatures, Sequence[LocalFeatures]]], workers: int,
                  progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """For each ``(query, gallery photos)`` row, the inlier count of every pair, in order; ``progress`` advances
    once per row as its last pair is counted."""
    pairs = [(q, g) for q, gallery in rows for g in gallery]
    ends = np.cumsum([len(gallery) for _, gallery in rows], dtype=np.int64)
    counts = np.zeros(len(pairs), dtype=np.int64)
    finished = 0

    def finish(done: int) -> None:
        nonlocal finished
        while finished < len(ends) and ends[finished] == done:
            finished += 1
            if progress:
                progress(1)

    finish(0)
    with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
        for n, result in enumerate(pool.map(lambda pair: matcher(*pair), pairs)):
            counts[n] = result.inliers
            finish(n + 1)
    return np.split(counts, ends[:-1]) if len(rows) else []
