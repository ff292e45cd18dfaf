"""Local re-ranking as a stage of search: fit the score fusion on a catalogue, and apply it to one query.

The fusion is always fitted on the catalogue itself, so it never sees the photos it will be asked about:
catalogue photos act as pseudo-queries against every *other* encounter (leave one encounter out), which is the
field question "this turtle on a new day" asked of data whose answers are known.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.data import Record
from wildtrack.evaluate import calibrate_open_set, cosine_similarity, retrieval_metrics
from wildtrack.index import Hit
from wildtrack.match.encounter import encounter_keys, pool_encounter_rows
from wildtrack.match.fusion import FORMAT as SCORE_FUSION_FORMAT
from wildtrack.match.fusion import (
    ScoreFusion,
    fused_similarity,
    match_probabilities,
    shortlist_pairs,
    shortlist_scores,
)
from wildtrack.match.identity import Decision, aggregate_identities
from wildtrack.match.local import (
    DescriptorProjection,
    FeatureCache,
    Focus,
    LocalReranker,
    SiftExtractor,
    local_scores_for_shortlist,
)
from wildtrack.progress import Advance, announce_total, next_stage

FUSION_FILE = "fusion.json"
IDENTITY_WEIGHTS = (0.0, 0.5, 1.0)  # candidates for the identity-support weight, chosen on the pseudo-queries
MAX_PSEUDO_QUERIES = 150  # bounds the fitting cost: pseudo-queries × k local matches
# The fusion's weights are for inlier counts of projected descriptors: a new format name, so that a wildtrack
# from before projections refuses such a fusion.json instead of matching full RootSIFT against them.
PROJECTED_FUSION_FORMAT = "wildtrack-score-fusion-v1+projected-rootsift"
PROJECTION_DIMS = 64  # RootSIFT dimensions kept for matching (DescriptorProjection); 0 keeps all 128
PROJECTION_IMAGES = 100  # catalogue photos whose descriptors fit the projection
PROJECTION_DESCRIPTORS = 50_000


class RerankFitError(ValueError):
    """The catalogue cannot teach the fusion anything (no turtle with two photos, or no wrong candidates)."""


@dataclass
class GalleryFusion:
    """A fitted fusion, the shortlist length it was fitted for, how much an identity's other shortlisted
    photos support each of its images (:func:`~wildtrack.match.fusion.with_identity_support`), the local
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
                "fusion": fusion, "fit_report": self.fit_report, "extractor": asdict(self.extractor),
                "decision_threshold": self.decision_threshold, "encounter_threshold": self.encounter_threshold,
                "projection": None if self.projection is None else self.projection.to_dict()}

    def summary(self) -> dict[str, Any]:
        """:meth:`to_dict` for reports (metrics.json, benchmarks): the projection by its size, not its basis."""
        return {**self.to_dict(), "projection": None if self.projection is None else {"dims": self.projection.dims}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GalleryFusion:
        # Fusions saved before the extractor was recorded were fitted on whole-frame features, and before the
        # projection was, on full RootSIFT.
        extractor = SiftExtractor(**data.get("extractor", {"focus": "frame"}))
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
        path = Path(directory) / FUSION_FILE
        return cls.from_bytes(path.read_bytes(), str(path)) if path.is_file() else None


def fit_projection(cache: FeatureCache, paths: list[str | Path], dims: int = PROJECTION_DIMS, seed: int = 0,
                   max_images: int = PROJECTION_IMAGES, max_descriptors: int = PROJECTION_DESCRIPTORS,
                   progress: Advance | None = None) -> DescriptorProjection | None:
    """A RootSIFT projection fitted on (a seeded sample of) the catalogue's own photos; None when they hold
    too few keypoints to estimate ``dims`` components. ``progress`` counts the sample's photos as their features
    are read (on a cold cache, extracted: most of the time)."""
    rng = np.random.default_rng(seed)
    sample = [paths[i] for i in sorted(rng.choice(len(paths), min(max_images, len(paths)), replace=False))]
    announce_total(progress, len(sample))
    raw = cache.with_projection(None).get_many(sample, progress=progress)
    descriptors = np.concatenate([f.descriptors for f in raw]) if raw else np.zeros((0, 128), np.float32)
    if len(descriptors) > max_descriptors:
        descriptors = descriptors[rng.choice(len(descriptors), max_descriptors, replace=False)]
    if len(descriptors) < 2 * dims:
        return None
    return DescriptorProjection.fit(descriptors, dims)


def local_reranker(k: int, focus: Focus = "turtle", cache_dir: str | Path | None = None) -> LocalReranker:
    """The product's re-ranker: default matching on the default features, from the turtle or the whole frame."""
    return LocalReranker(k=k, cache=FeatureCache(SiftExtractor(focus=focus), cache_dir=cache_dir))


def _own_groups(gallery: list[Record]) -> list[Any]:
    """What a pseudo-query must not be matched against: its encounter (same turtle, same day), or, when the
    photos carry no dates or no turtle was met twice, just the photo itself."""
    if any(r.date is not None for r in gallery):
        days: dict[str, set[Any]] = {}
        for r in gallery:
            days.setdefault(r.identity, set()).add(r.date)
        if any(len(d) > 1 for d in days.values()):
            return [r.encounter for r in gallery]
    return list(range(len(gallery)))


def _pseudo_queries(gallery: list[Record], groups: list[Any], limit: int, seed: int) -> list[int]:
    """Catalogue photos whose turtle has another group: all of them, or at most ``limit`` taken group by group
    (whole encounters, in seeded order), so that pooled encounters look like the ones searches will see."""
    per_identity: dict[str, set[Any]] = {}
    for r, g in zip(gallery, groups, strict=True):
        per_identity.setdefault(r.identity, set()).add(g)
    eligible = [i for i, r in enumerate(gallery) if len(per_identity[r.identity]) > 1]
    if len(eligible) <= limit:
        return eligible
    members: dict[str, list[int]] = {}
    for i in eligible:
        members.setdefault(str(groups[i]), []).append(i)
    chosen: list[int] = []
    for key in np.random.default_rng(seed).permutation(sorted(members)):
        chosen += members[key][: limit - len(chosen)]
        if len(chosen) == limit:
            break
    return sorted(chosen)


def fit_gallery_fusion(gallery: list[Record], embeddings: np.ndarray, k: int, reranker: LocalReranker | None = None,
                       seed: int = 0, max_pseudo_queries: int = MAX_PSEUDO_QUERIES,
                       target_far: float = 0.05, projection_dims: int = PROJECTION_DIMS,
                       progress: Advance | None = None) -> GalleryFusion:
    """Fit the RootSIFT projection, the cosine + inlier fusion, the identity-support weight and the
    new-individual threshold on the catalogue alone.

    Unless ``reranker`` already projects, its descriptors are first reduced to ``projection_dims`` principal
    components of the catalogue's (0: keep all 128); the fit then matches, and searches must match, through
    that projection (``GalleryFusion.reranker()``). ``progress`` follows the pseudo-queries' local matching
    (:func:`~wildtrack.match.local.local_scores_for_shortlist`), the long part.

    Each pseudo-query is a catalogue photo searched against the catalogue minus its own encounter (same turtle,
    same day; without dates, or with no turtle met on two days, minus the photo itself). Its top-``k`` are
    matched locally; the logistic fusion is fitted on those labelled pairs, then the identity weight that ranks
    the pseudo-queries best (Recall@1 + mAP) is kept from :data:`IDENTITY_WEIGHTS`. The decision threshold is
    the match probability at which ``target_far`` of the pseudo-queries' best *wrong* turtles would be accepted
    (each stands in for a turtle the catalogue does not hold); None when the catalogue has a single turtle. The
    encounter threshold is calibrated the same way on the pseudo-queries pooled by encounter (each encounter's
    best probability per catalogue photo), for :meth:`~wildtrack.search.CatalogueSearch.identify_encounter`;
    undated photos are encounters of one, so without dates it equals the photo threshold. When the catalogue
    holds more than ``max_pseudo_queries`` eligible photos, whole encounters are sampled.
    """
    reranker = reranker or LocalReranker(k=k)
    groups = _own_groups(gallery)
    queries = _pseudo_queries(gallery, groups, max_pseudo_queries, seed)
    if not queries:
        raise RerankFitError("fitting the re-ranking needs at least one turtle with two photos; the catalogue has "
                             "none")
    if reranker.cache.projection is None and projection_dims:
        # sampled from the pseudo-queries, whose features the fit reads anyway; its own bar, so that a cold
        # cache does not leave the fit's bar at 0 while the sample is extracted
        projection = fit_projection(reranker.cache, [gallery[i].path for i in queries], projection_dims, seed,
                                    progress=next_stage(progress, "reading features for the matching projection"))
        reranker = reranker.with_projection(projection)
    ids = [r.identity for r in gallery]
    sim = cosine_similarity(embeddings[queries], embeddings)
    group_of = np.asarray([str(g) for g in groups], dtype=object)
    for row, i in enumerate(queries):
        sim[row, group_of == group_of[i]] = -np.inf  # never its own encounter: the easy, uninformative case
    q_ids = [ids[i] for i in queries]
    fit_k = int(min(k, np.isfinite(sim).sum(axis=1).min()))  # small catalogue: never shortlist the own encounter
    local = local_scores_for_shortlist([gallery[i].path for i in queries], [r.path for r in gallery], sim, fit_k,
                                       reranker, progress)
    try:
        fusion = ScoreFusion().fit(*shortlist_pairs(sim, local, q_ids, ids, fit_k))
    except ValueError as exc:  # e.g. a single turtle: every shortlisted pair is a true match
        raise RerankFitError(f"cannot fit the re-ranking on this catalogue: {exc}") from exc
    report: dict[str, Any] = {}
    best_weight, best_score = 0.0, -np.inf
    floor = -1e6  # own-encounter photos: last (finite, as metrics require); they count as misses for every weight
    for weight in IDENTITY_WEIGHTS:
        fused = np.nan_to_num(fused_similarity(sim, local, fusion, fit_k, ids, weight), neginf=floor)
        result = retrieval_metrics(fused, q_ids, ids, ks=(1,))
        report[f"identity_weight={weight}"] = {"R@1": round(result.recall_at_k[1], 4), "mAP": round(result.mAP, 4)}
        if result.recall_at_k[1] + result.mAP > best_score + 1e-9:
            best_weight, best_score = weight, result.recall_at_k[1] + result.mAP
    global_only = retrieval_metrics(np.nan_to_num(sim, neginf=floor), q_ids, ids, ks=(1,))
    report["global_only"] = {"R@1": round(global_only.recall_at_k[1], 4), "mAP": round(global_only.mAP, 4)}
    probabilities = match_probabilities(sim, local, fusion, fit_k)
    threshold, report["open_set"] = calibrate_open_set(probabilities, q_ids, ids, target_far)
    # pseudo-queries of one encounter pooled: the threshold for the best of several photos
    pooled, encounter_ids, _ = pool_encounter_rows(probabilities, q_ids, encounter_keys([gallery[i] for i in queries]))
    encounter_threshold, report["encounter_open_set"] = calibrate_open_set(pooled, encounter_ids, ids, target_far)
    return GalleryFusion(fusion, k, len(queries), best_weight, report, reranker.cache.extractor, threshold,
                         reranker.cache.projection, encounter_threshold)


def rerank_hits(query: str | Path | bytes, hits: list[Hit], data_root: Path, fitted: GalleryFusion,
                reranker: LocalReranker | None = None) -> list[Hit]:
    """Re-order the first ``k`` hits by fused score with identity support (the rest keep their order).

    Hits keep their cosine ``score``; re-ranked ones also carry their ``inliers`` and the fusion's calibrated
    ``match_probability`` (identity support only decides the order, it is not a probability).
    """
    reranker = reranker or fitted.reranker()
    head, tail = hits[: fitted.k], hits[fitted.k:]
    if not head:
        return hits
    inliers = reranker.inliers(query, [data_root / h.path for h in head])
    cosines = np.array([h.score for h in head])
    fused = shortlist_scores(fitted.fusion, cosines, inliers, [h.identity for h in head], fitted.identity_weight)
    order = np.argsort(-np.asarray(fused), kind="stable")
    probability = fitted.fusion.score(cosines, inliers)
    ranked = [replace(head[i], rank=n + 1, inliers=int(inliers[i]), match_probability=float(probability[i]))
              for n, i in enumerate(order)]
    return ranked + [replace(h, rank=len(ranked) + n + 1) for n, h in enumerate(tail)]


def decide_reranked(hits: list[Hit], threshold: float | None) -> Decision:
    """The identity whose image the re-ranked list puts first, scored by that image's match probability (the
    fusion's, which counts the local evidence); a new individual when it is below ``threshold``.

    Candidates keep their cosine scores (best image per identity), in re-ranked order. ``hits`` must come from
    :func:`rerank_hits`: the first one carries its match probability.
    """
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    first: dict[str, Hit] = {}
    for h in hits:
        first.setdefault(h.identity, h)
    candidates = tuple(sorted(aggregate_identities(hits), key=lambda s: first[s.identity].rank))
    if not candidates:
        return Decision(None, None, True, candidates)
    best = candidates[0]
    probability = first[best.identity].match_probability
    if probability is None:
        raise ValueError("decide_reranked needs hits from rerank_hits (the first one has no match probability)")
    score = float(probability)
    unknown = threshold is not None and not score >= threshold  # NaN is never a confident match
    return Decision(None if unknown else best.identity, score, unknown, candidates)
