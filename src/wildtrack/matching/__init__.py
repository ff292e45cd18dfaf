"""Comparing a query with catalogue photos beyond the global cosine: pairwise matchers, the shortlist they look
at, the calibration that turns their evidence into a match probability, and the pipeline that applies it.

* :mod:`~wildtrack.matching.geometry` - the geometric check every matcher ends with; what a matcher is;
* :mod:`~wildtrack.matching.ratio_test` - a matcher: ratio-test correspondences counted as RANSAC inliers;
* :mod:`~wildtrack.matching.mnn` - a matcher for learned descriptors: mutual nearest neighbours, the same check;
* :mod:`~wildtrack.matching.lighterglue` - a learned matcher (XFeat features, ~1 s a pair: short shortlists only);
* :mod:`~wildtrack.matching.shortlist` - which photos each query's matcher sees (global top ``k``);
* :mod:`~wildtrack.matching.calibration` - cosine + inliers → one monotone probability (``ScoreFusion``);
* :mod:`~wildtrack.matching.pipeline` - the re-ranking pipeline (extractor, matcher, calibration, identity
  support) as ``fusion.json`` records it, for one photo's hits or a whole score matrix;
* :mod:`~wildtrack.matching.inlier_pairs` - the inlier pairs in the photos' pixels, for match pictures;
* :mod:`~wildtrack.matching.fit` - fitting it on a catalogue (never imported by a server).

Matchers are registered in :data:`wildtrack.registry.MATCHERS` (re-exported here).
"""

from wildtrack.matching.geometry import GeometricMatcher, Matcher
from wildtrack.registry import AUTO_MATCHER, EXTRACTORS, MATCHERS


def matcher_from_dict(data: dict) -> Matcher:
    """The matcher a saved fit recorded with ``to_dict()`` (its ``name`` picks the class; the ratio test when
    absent)."""
    name = data.get("name", "ratio-test")
    return MATCHERS[name].from_dict(data)


def matcher_for(extractor_name: str, name: str = AUTO_MATCHER) -> Matcher:
    """The matcher ``name`` with its default settings, or with ``"auto"`` the one the extractor's registry entry
    names (RootSIFT: the ratio test; XFeat: mutual nearest neighbours, as its learned descriptors have no
    reliable second-best distance)."""
    if name == AUTO_MATCHER:
        name = EXTRACTORS.entry(extractor_name).matcher or "ratio-test"
    return MATCHERS[name]()


__all__ = ["MATCHERS", "GeometricMatcher", "Matcher", "matcher_for", "matcher_from_dict"]
