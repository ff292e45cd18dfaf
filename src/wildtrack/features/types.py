"""What a local-feature extractor produces, and what it reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from wildtrack.config import LocalFocus
from wildtrack.images import Photo

Source = Photo  # a photo on disk, its uploaded bytes, or its pixels decoded once (images.prepare_photo)
Focus = LocalFocus


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one image in a frame whose longer side is ``frame_side`` px, and their RootSIFT descriptors.

    ``xy`` is ``(N, 2)`` float32 in that common frame whatever size the JPEG was draft-decoded at, so pixel
    thresholds mean the same for every pair; ``xy * scale + offset`` is the point in the original image (the
    frame is the whole photo, or the turtle's square with ``focus="turtle"``).
    """

    xy: np.ndarray
    descriptors: np.ndarray  # (N, 128) float32, RootSIFT (unit L2 norm); (N, d) once projected, still unit norm
    frame_side: int
    scale: float
    offset: tuple[float, float] = (0.0, 0.0)  # original pixels of the frame's corner (a turtle crop's origin)

    def __len__(self) -> int:
        return len(self.xy)



class Extractor(Protocol):
    """What the matching needs of a local-feature extractor (one file each, registered in
    :data:`wildtrack.registry.EXTRACTORS`): ``raw(source)`` is what caches store, ``features(*raw)`` rebuilds
    matchable features from it, ``key()`` names every setting that changes the output."""

    name: ClassVar[str]
    version: ClassVar[int]
    projectable: ClassVar[bool]  # whether a PCA of the catalogue's descriptors may shorten them
    descriptor_dims: ClassVar[int]
    max_side: int
    max_keypoints: int
    focus: Focus

    def key(self) -> str: ...

    def raw(self, source: Source) -> tuple[Any, ...]: ...

    def features(self, *raw: Any) -> LocalFeatures: ...

    def __call__(self, source: Source) -> LocalFeatures: ...
