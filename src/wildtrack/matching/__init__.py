"""Comparing a query with catalogue photos beyond the global cosine: pairwise matchers, the shortlist they look
at, the calibration that turns their evidence into a match probability, and applying or fitting it.

* :mod:`~wildtrack.matching.ratio_test` - a matcher: ratio-test correspondences counted as RANSAC inliers;
* :mod:`~wildtrack.matching.mnn` - a matcher for learned descriptors: mutual nearest neighbours, the same check;
* :mod:`~wildtrack.matching.lighterglue` - a learned matcher (XFeat features, ~1 s a pair: short shortlists only);
* :mod:`~wildtrack.matching.reranker` - one query against a list of catalogue photos (features from the cache);
* :mod:`~wildtrack.matching.shortlist` - which photos each query's matcher sees (global top ``k``);
* :mod:`~wildtrack.matching.collect` - inlier counts of many queries' shortlists at once (evaluation, fitting);
* :mod:`~wildtrack.matching.calibration` - cosine + inliers → one monotone probability (``ScoreFusion``);
* :mod:`~wildtrack.matching.fusion` - applying it to shortlists, with identity support;
* :mod:`~wildtrack.matching.gallery_fusion` - the fitted whole as ``fusion.json`` stores it;
* :mod:`~wildtrack.matching.rerank` - re-ranking one query's hits (the CLI's and the service's path);
* :mod:`~wildtrack.matching.fit` - fitting it on a catalogue (never imported by a server).
"""

from wildtrack.matching.lighterglue import LighterGlueMatcher  # imports torch only when used
from wildtrack.matching.mnn import MutualNNMatcher
from wildtrack.matching.ratio_test import RansacMatcher

Matcher = RansacMatcher | MutualNNMatcher | LighterGlueMatcher

MATCHERS: dict[str, type[Matcher]] = {cls.name: cls for cls in (RansacMatcher, MutualNNMatcher, LighterGlueMatcher)}


def matcher_from_dict(data: dict) -> Matcher:
    """The matcher a saved fit recorded with ``to_dict()`` (its ``name`` picks the class; RANSAC when absent)."""
    name = data.get("name", RansacMatcher.name)
    if name not in MATCHERS:
        raise ValueError(f"unknown matcher {name!r}; known: {', '.join(sorted(MATCHERS))}")
    return MATCHERS[name].from_dict(data)


__all__ = ["MATCHERS", "LighterGlueMatcher", "Matcher", "MutualNNMatcher", "RansacMatcher", "matcher_from_dict"]
