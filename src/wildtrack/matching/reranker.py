"""One photo's local features against a list of catalogue photos: the work of re-ranking a shortlist.

Matching is far too slow for a whole catalogue, so it re-ranks the global search's shortlist: a query costs one
extraction plus K pair matches, with the gallery side read from an on-disk :class:`FeatureCache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from wildtrack.config import MatchingConfig
from wildtrack.features import (
    DescriptorProjection,
    Extractor,
    FeatureCache,
    LocalFeatures,
    Source,
    default_workers,
    make_extractor,
)
from wildtrack.matching import MATCHERS, Matcher, MutualNNMatcher
from wildtrack.matching.ratio_test import MatchResult, RansacMatcher

__all__ = ["LocalReranker", "local_reranker", "matcher_for", "one_blas_thread"]


def one_blas_thread() -> threadpool_limits:
    """Pairs are matched in parallel threads; OpenBLAS threads inside each small product only contend with them
    (measured: 3× slower per pair with OpenBLAS' default threads)."""
    return threadpool_limits(limits=1, user_api="blas")


class LocalReranker:
    """Features from ``cache`` matched by ``matcher``, for the first ``k`` entries of a shortlist."""

    def __init__(self, k: int = 20, cache: FeatureCache | None = None, workers: int | None = None,
                 matcher: Matcher | None = None):
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.cache = cache or FeatureCache()
        self.workers = default_workers(workers)
        self.matcher = matcher or RansacMatcher()

    def with_projection(self, projection: DescriptorProjection | None) -> LocalReranker:
        """The same matching settings and disk cache, comparing descriptors through ``projection``."""
        return LocalReranker(self.k, self.cache.with_projection(projection), self.workers, self.matcher)

    def match(self, a: LocalFeatures, b: LocalFeatures) -> MatchResult:
        return self.matcher(a, b)

    def match_many(self, query: LocalFeatures, gallery: Sequence[LocalFeatures]) -> list[MatchResult]:
        """One query against many gallery images, in parallel threads."""
        with one_blas_thread(), ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda g: self.match(query, g), gallery))

    def inliers(self, query: Source, gallery_paths: Sequence[str | Path]) -> np.ndarray:
        """Inlier counts of one query against each gallery image (one extraction, ``len(gallery_paths)`` matches)."""
        q = self.cache.get(query)
        gallery = self.cache.get_many(list(gallery_paths), self.workers)
        return np.asarray([m.inliers for m in self.match_many(q, gallery)], dtype=np.int64)


def matcher_for(extractor: Extractor, name: str = "auto") -> Matcher:
    """The matcher ``name`` (``MATCHERS``), or with ``"auto"`` the one each kind of local features is verified
    with: RootSIFT's ratio test, XFeat's mutual nearest neighbours (its learned descriptors have no reliable
    second-best distance), both then one RANSAC similarity."""
    if name == "auto":
        return MutualNNMatcher() if extractor.name == "xfeat" else RansacMatcher()
    if name not in MATCHERS:
        raise ValueError(f"unknown matcher {name!r}; known: auto, {', '.join(sorted(MATCHERS))}")
    return MATCHERS[name]()


def local_reranker(cfg: MatchingConfig, cache_dir: str | Path | None = None) -> LocalReranker:
    """The product's re-ranker for a matching configuration (a preset, or its overrides): its local features
    from the configured focus, matched by their matcher, for the top ``rerank_k``."""
    extractor = make_extractor(cfg.local_features, cfg.local_max_side, cfg.local_keypoints, cfg.local_focus)
    return LocalReranker(k=cfg.rerank_k, cache=FeatureCache(extractor, cache_dir=cache_dir),
                         matcher=matcher_for(extractor, cfg.local_matcher))
