"""Match evidence for the service: an uploaded photo and a catalogued one, their verified keypoint pairs drawn.

The page asks for it when a card is clicked (``POST /match`` with the same photo and the card's ``image_id``):
nothing about an upload is kept between requests, so the photo travels again. It is decoded exactly as
``/predict`` decodes it and matched with the catalogue's own features and matcher, so the pairs drawn are the
inliers ``/predict`` counted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from wildtrack.features import FeatureCache, SiftExtractor
from wildtrack.matching.evidence import match_evidence
from wildtrack.matching.reranker import LocalReranker
from wildtrack.serve.service import Catalogue, Upload
from wildtrack.visualize.matchview import match_picture_png

__all__ = ["EvidencePicture", "evidence_picture"]

_fallback: LocalReranker | None = None
_fallback_lock = threading.Lock()


@dataclass(frozen=True)
class EvidencePicture:
    png: bytes
    inliers: int
    matches: int


def _reranker(cat: Catalogue) -> LocalReranker:
    """The catalogue's re-ranker (the fit's features and matcher); a global-only catalogue matches whole frames
    with default RootSIFT (no turtle locator to load), which still shows what agrees."""
    global _fallback
    if cat.searcher.reranker is not None:
        return cat.searcher.reranker
    with _fallback_lock:
        if _fallback is None:
            _fallback = LocalReranker(k=1, cache=FeatureCache(SiftExtractor(focus="frame")))
        return _fallback


def evidence_picture(cat: Catalogue, upload: Upload, image_id: str) -> EvidencePicture:
    """The picture of ``upload`` against catalogued image ``image_id`` (UploadError 404 for an unknown id)."""
    target = cat.image_file(image_id)
    row = cat.index.row(image_id)
    photo = cat.prepare(upload).image
    evidence = match_evidence(photo, target, _reranker(cat))
    title = (f"{evidence.inliers} keypoint pair{'s' if evidence.inliers != 1 else ''} agree on one geometric "
             f"transform ({evidence.matches} similar-looking before the check)")
    png = match_picture_png(photo, target, evidence.query_xy, evidence.target_xy,
                            f"your photo: {Path(upload.name).name[:40]}",
                            f"{row.identity}: {Path(row.path).name[:40]}" + (f" ({row.date})" if row.date else ""),
                            title)
    return EvidencePicture(png, evidence.inliers, evidence.matches)
