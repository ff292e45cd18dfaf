"""The keypoint pairs behind a match score, for a picture a biologist can check by eye.

A match probability is only believable when one can see *which* scute edges and spots agree: the same
correspondences the geometric check counted, drawn between the two photos (as HotSpotter and Wildbook show a
match). Points come back in each photo's original pixels, so any drawing code can use them without knowing our
feature frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wildtrack.features import LocalFeatures, Source
from wildtrack.matching.geometry import Correspondences
from wildtrack.matching.pipeline import MatchingPipeline

__all__ = ["MatchEvidence", "match_evidence", "original_pixels", "pair_evidence"]


@dataclass(frozen=True)
class MatchEvidence:
    """Inlier pairs of a query photo and a catalogue photo: ``query_xy[i]`` matches ``target_xy[i]``, both
    ``(N, 2)`` float (x, y) in their own photo's original pixels. ``matches`` counts the ratio-test matches
    before geometric verification; ``inliers`` is ``len(query_xy)``, the count the re-ranking used."""

    query_xy: np.ndarray
    target_xy: np.ndarray
    matches: int

    @property
    def inliers(self) -> int:
        return len(self.query_xy)


def original_pixels(features: LocalFeatures, rows: np.ndarray) -> np.ndarray:
    """Keypoints ``rows`` of ``features`` in the original image's pixels (``xy * scale + offset``)."""
    xy = np.asarray(features.xy, dtype=np.float64)[rows]
    return xy * features.scale + np.asarray(features.offset, dtype=np.float64)


def pair_evidence(a: LocalFeatures, b: LocalFeatures, found: Correspondences) -> MatchEvidence:
    """:class:`MatchEvidence` of correspondences already found between ``a`` and ``b``."""
    keep = np.asarray(found.inlier, dtype=bool)
    return MatchEvidence(original_pixels(a, found.query[keep]), original_pixels(b, found.target[keep]),
                         len(found.query))


def match_evidence(query: Source, target: str | Path, pipeline: MatchingPipeline) -> MatchEvidence:
    """The inlier pairs ``pipeline`` finds between a query photo (a path or its bytes) and a catalogue photo,
    with the same features and matcher as its inlier counts (so the pairs drawn are the inliers counted)."""
    a, b = pipeline.cache.get(query), pipeline.cache.get(target)
    return pair_evidence(a, b, pipeline.matcher.correspondences(a, b))
