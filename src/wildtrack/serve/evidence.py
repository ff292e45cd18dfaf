"""What lets a user trust an answer: match evidence (an uploaded photo and a catalogued one, their verified
keypoint pairs drawn) and the operating point (where the new-individual thresholds come from).

The page asks for it when a card is clicked (``POST /match`` with the same photo and the card's ``image_id``):
nothing about an upload is kept between requests, so the photo travels again. It is decoded exactly as
``/predict`` decodes it and matched with the catalogue's own features and matcher, so the pairs drawn are the
inliers ``/predict`` counted.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from wildtrack.config import MatchingConfig
from wildtrack.decide.policy import DecisionPolicy
from wildtrack.images import ImageError
from wildtrack.matching.inlier_pairs import match_evidence
from wildtrack.matching.pipeline import MatchingPipeline, build_pipeline
from wildtrack.serve.schemas import MatchingInfo, OperatingPointInfo
from wildtrack.serve.service import Catalogue, Upload
from wildtrack.serve.uploads import UploadError
from wildtrack.visualize.matchview import match_picture_png

__all__ = ["MATCH_RESPONSE", "EvidencePicture", "evidence_picture", "matching_info", "operating_point_info"]

MATCH_RESPONSE = {"content": {"image/png": {}}, "description": "the two photos side by side, the verified keypoint "
                  "pairs drawn between them; header X-WildTrack-Inliers: how many pairs"}

log = logging.getLogger(__name__)

_fallback: MatchingPipeline | None = None
_fallback_lock = threading.Lock()


@dataclass(frozen=True)
class EvidencePicture:
    png: bytes
    inliers: int
    matches: int

    @property
    def headers(self) -> dict[str, str]:
        """The pair count for clients that show it beside the picture; never cached (a photo is not an URL)."""
        return {"X-WildTrack-Inliers": str(self.inliers), "Cache-Control": "no-store"}


def _pipeline(cat: Catalogue) -> MatchingPipeline:
    """The catalogue's pipeline (the fit's features and matcher); a global-only catalogue matches whole frames
    with default RootSIFT (no turtle locator to load), which still shows what agrees."""
    global _fallback
    if cat.searcher.pipeline is not None:
        return cat.searcher.pipeline
    with _fallback_lock:
        if _fallback is None:
            _fallback = build_pipeline(MatchingConfig(local_features="rootsift", local_focus="frame",
                                                      local_max_side=800, local_keypoints=1500, rerank_k=1))
        return _fallback


def evidence_picture(cat: Catalogue, upload: Upload, image_id: str) -> EvidencePicture:
    """The picture of ``upload`` against catalogued image ``image_id`` (UploadError 404 for an unknown id)."""
    target = cat.image_file(image_id)
    row = cat.index.row(image_id)
    photo = cat.prepare(upload).image
    evidence = match_evidence(photo, target, _pipeline(cat))
    title = (f"{evidence.inliers} keypoint pair{'s' if evidence.inliers != 1 else ''} agree on one geometric "
             f"transform (of {evidence.matches} pairs that looked alike before that check)")
    try:
        png = match_picture_png(photo, target, evidence.query_xy, evidence.target_xy,
                                f"your photo: {Path(upload.name).name[:40]}",
                                f"{row.identity}: {Path(row.path).name[:40]}" + (f" ({row.date})" if row.date else ""),
                                title)
    except (ImageError, OSError) as exc:  # the catalogued photo is damaged (the upload was decoded above)
        log.warning("match evidence for %s: %s", image_id, exc)
        raise UploadError(404, f"image {image_id!r} is catalogued but its file cannot be read (see `wildtrack "
                          "index check`)") from exc
    return EvidencePicture(png, evidence.inliers, evidence.matches)


def operating_point_info(policy: DecisionPolicy) -> OperatingPointInfo:
    """The thresholds a catalogue decides with, where they come from and the fit's rates (for /health)."""
    return OperatingPointInfo.model_validate(policy.to_dict())


def matching_info(cat: Catalogue) -> MatchingInfo | None:
    """The catalogue's local matching as fitted (preset, features, matcher, pretrained weights), for /health."""
    pipeline = cat.searcher.pipeline
    if pipeline is None:
        return None
    return MatchingInfo(preset=pipeline.preset, rerank_k=pipeline.k, features=pipeline.features_summary(),
                        extractor=pipeline.extractor_record(), matcher=pipeline.matcher_record(),
                        weights=pipeline.weights())
