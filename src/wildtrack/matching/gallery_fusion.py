"""A fitted re-ranking as the catalogue stores it (``fusion.json``) and every search reads it.

Only what applying the fit needs lives here; fitting it (pseudo-queries, metrics) is :mod:`wildtrack.matching.fit`,
which a server never imports.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wildtrack.features import EXTRACTORS, DescriptorProjection, FeatureCache, SiftExtractor
from wildtrack.matching.calibration import FORMAT as SCORE_FUSION_FORMAT
from wildtrack.matching.calibration import ScoreFusion
from wildtrack.matching.reranker import LocalReranker

__all__ = ["FUSION_FILE", "GalleryFusion"]

FUSION_FILE = "fusion.json"
# The fusion's weights are for inlier counts of projected descriptors: a new format name, so that a wildtrack
# from before projections refuses such a fusion.json instead of matching full RootSIFT against them.
PROJECTED_FUSION_FORMAT = "wildtrack-score-fusion-v1+projected-rootsift"


@dataclass
class GalleryFusion:
    """A fitted fusion, the shortlist length it was fitted for, how much an identity's other shortlisted
    photos support each of its images (:func:`~wildtrack.matching.fusion.with_identity_support`), the local
    features whose inlier counts it was fitted on (searches must extract and project the same), and the
    match-probability threshold of the "new individual" decision, calibrated on the same pseudo-queries."""

    fusion: ScoreFusion
    k: int
    pseudo_queries: int
    identity_weight: float = 0.0
    fit_report: dict[str, Any] | None = None
    extractor: SiftExtractor = field(default_factory=SiftExtractor)
    decision_threshold: float | None = None  # match probability below which a photo is a new individual
    projection: DescriptorProjection | None = None  # None: full 128-d RootSIFT
    # the same decision for several photos of one encounter (the best of them passes more often by chance)
    encounter_threshold: float | None = None

    def reranker(self, cache_dir: str | Path | None = None) -> LocalReranker:
        """A re-ranker that matches exactly as the fit did."""
        return LocalReranker(k=self.k, cache=FeatureCache(self.extractor, cache_dir=cache_dir,
                                                          projection=self.projection))

    def to_dict(self) -> dict[str, Any]:
        fusion = self.fusion.to_dict()
        if self.projection is not None:  # weights of projected inliers: a reader without projections must refuse
            fusion["format"] = PROJECTED_FUSION_FORMAT
        return {"k": self.k, "pseudo_queries": self.pseudo_queries, "identity_weight": self.identity_weight,
                "fusion": fusion, "fit_report": self.fit_report,
                "extractor": {"name": self.extractor.name, **asdict(self.extractor)},
                "decision_threshold": self.decision_threshold, "encounter_threshold": self.encounter_threshold,
                "projection": None if self.projection is None else self.projection.to_dict()}

    def summary(self) -> dict[str, Any]:
        """:meth:`to_dict` for reports (metrics.json, benchmarks): the projection by its size, not its basis."""
        return {**self.to_dict(), "projection": None if self.projection is None else {"dims": self.projection.dims}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GalleryFusion:
        # Fusions saved before the extractor was recorded were fitted on whole-frame features, and before the
        # projection was, on full RootSIFT.
        settings = dict(data.get("extractor", {"focus": "frame"}))
        name = settings.pop("name", SiftExtractor.name)
        if name not in EXTRACTORS:
            raise ValueError(f"fitted on features {name!r}, which this wildtrack does not have ({sorted(EXTRACTORS)})")
        extractor = EXTRACTORS[name](**settings)
        threshold = data.get("decision_threshold")
        encounter_threshold = data.get("encounter_threshold")  # None in files from before encounters
        projection = data.get("projection")
        fusion = dict(data["fusion"])
        if fusion.get("format") == PROJECTED_FUSION_FORMAT:
            if projection is None:
                raise ValueError("this fusion was fitted on projected RootSIFT but its projection is missing")
            fusion["format"] = SCORE_FUSION_FORMAT
        return cls(ScoreFusion.from_dict(fusion), int(data["k"]), int(data.get("pseudo_queries", 0)),
                   float(data.get("identity_weight", 0.0)), data.get("fit_report"), extractor,
                   None if threshold is None else float(threshold),
                   None if projection is None else DescriptorProjection.from_dict(projection),
                   None if encounter_threshold is None else float(encounter_threshold))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FUSION_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> GalleryFusion | None:
        path = Path(directory) / FUSION_FILE
        return cls.from_dict(json.loads(path.read_text())) if path.is_file() else None
