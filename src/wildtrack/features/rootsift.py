"""RootSIFT keypoints: OpenCV SIFT, Hellinger-normalised, from the turtle or the whole frame.

Global CNN embeddings see "a loggerhead on a reef"; what tells two loggerheads apart is the scute pattern of the
head and flippers, which SIFT keypoints on those scutes capture. OpenCV releases the GIL in SIFT, so plain threads
use every core.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import cv2
import numpy as np

from wildtrack.config import DEFAULT_FOCUS
from wildtrack.features.decode import focus_grey, focus_key
from wildtrack.features.types import Focus, LocalFeatures, Source

__all__ = ["SiftExtractor", "root_sift"]


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012): L1-normalise then square-root, so Euclidean distance between
    the results compares histograms by the Hellinger kernel, which is less dominated by a few large bins."""
    d = np.asarray(descriptors, dtype=np.float32)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d, out=d)



@dataclass(frozen=True)
class SiftExtractor:
    """SIFT on a grey image with its longer side at ``max_side`` px, keeping the ``max_keypoints`` strongest.

    ``contrast_threshold`` is half OpenCV's default, so low-contrast underwater photos still yield the full
    ``max_keypoints`` (at 0.04 many gave < 1000 and lost true matches). ``clahe`` equalises local contrast
    first; on the real photos it found no more true matches and costs 50 % more time, so it is off by default.
    ``focus="turtle"`` (default) extracts from the turtle's square found by
    :class:`~wildtrack.locate.TurtleLocator` at up to ``max_side`` px of its own, instead of from the whole
    frame: more keypoints on the scutes, fewer on sand and light patterns (whole-gallery matching on the real
    sample: Recall@1 0.43 → 0.53, ``docs/accuracy.md``). ``"saliency"`` extracts from the salient subject's box
    (:class:`~wildtrack.features.saliency.SaliencyLocator`, img-focus) cut from the full-resolution photo.
    ``"frame"`` is the whole photo, as before.
    Every field goes into the cache key, so changing one never serves stale features.
    """

    name: ClassVar[str] = "rootsift"
    version: ClassVar[int] = 1
    projectable: ClassVar[bool] = True  # a PCA of the catalogue's RootSIFT can shorten them (DescriptorProjection)
    descriptor_dims: ClassVar[int] = 128

    max_side: int = 800
    max_keypoints: int = 1500
    contrast_threshold: float = 0.02
    clahe: bool = False
    focus: Focus = DEFAULT_FOCUS

    def __post_init__(self) -> None:
        if self.focus not in ("frame", "turtle", "saliency"):
            raise ValueError(f"focus must be 'frame', 'turtle' or 'saliency', got {self.focus!r}")

    def key(self) -> str:
        fields = ",".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))
        return f"sift-v{self.version}[{fields}{focus_key(self.focus)}]"

    def grey(self, source: Source) -> tuple[np.ndarray, float, tuple[float, float]]:
        """The grey frame SIFT runs on, and the factor and offset back to the original's pixels."""
        grey, scale, offset = focus_grey(source, self.max_side, self.focus)
        if self.clahe:
            grey = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(grey)
        return grey, scale, offset

    def raw(self, source: Source) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
        """``(xy, uint8 SIFT descriptors, scale, offset)``: OpenCV's SIFT values are integers in 0..255, so
        uint8 is lossless and 4× smaller in the cache than float32."""
        grey, scale, offset = self.grey(source)
        sift = cv2.SIFT_create(nfeatures=self.max_keypoints, contrastThreshold=self.contrast_threshold)
        keypoints, desc = sift.detectAndCompute(grey, None)
        if desc is None or not keypoints:
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), scale, offset
        xy = np.asarray([kp.pt for kp in keypoints], dtype=np.float32)
        # nfeatures may keep a few more on response ties; keep the strongest exactly.
        if len(xy) > self.max_keypoints:
            keep = np.argsort([-kp.response for kp in keypoints], kind="stable")[: self.max_keypoints]
            xy, desc = xy[keep], desc[keep]
        return xy, np.clip(np.rint(desc), 0, 255).astype(np.uint8), scale, offset

    def features(self, xy: np.ndarray, desc: np.ndarray, scale: float, offset: tuple[float, float]) -> LocalFeatures:
        """:meth:`raw`'s output (fresh or read back from a cache) as matchable features."""
        return LocalFeatures(xy, root_sift(desc), self.max_side, scale, offset)

    def __call__(self, source: Source) -> LocalFeatures:
        return self.features(*self.raw(source))

