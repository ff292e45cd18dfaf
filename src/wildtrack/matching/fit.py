"""Fitting the re-ranking on a catalogue: the descriptor projection, the cosine + inlier calibration, the
identity-support weight and the new-individual thresholds.

The fusion is always fitted on the catalogue itself, so it never sees the photos it will be asked about:
catalogue photos act as pseudo-queries against every *other* encounter (leave one encounter out), which is the
field question "this turtle on a new day" asked of data whose answers are known. Servers never import this.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.config import CONFIDENT_TARGET_FAR, DEFAULT_TARGET_FAR
from wildtrack.data import Record
from wildtrack.decide.encounter import encounter_keys, pool_encounter_rows
from wildtrack.evaluate import calibrate_open_set, cosine_similarity, open_set_rates, retrieval_metrics
from wildtrack.features import DescriptorProjection, FeatureCache
from wildtrack.matching.calibration import ScoreFusion
from wildtrack.matching.pipeline import MatchingPipeline
from wildtrack.matching.shortlist import shortlist_pairs
from wildtrack.progress import Advance, announce_total, next_stage

__all__ = ["RerankFitError", "fit_pipeline", "fit_projection"]

IDENTITY_WEIGHTS = (0.0, 0.5, 1.0)  # candidates for the identity-support weight, chosen on the pseudo-queries
MAX_PSEUDO_QUERIES = 150  # bounds the fitting cost: pseudo-queries × k local matches
PROJECTION_IMAGES = 100  # catalogue photos whose descriptors fit the projection
PROJECTION_DIMS = 64  # components a projection keeps unless told (the `fast` preset's)
PROJECTION_DESCRIPTORS = 50_000


class RerankFitError(ValueError):
    """The catalogue cannot teach the fusion anything (no turtle with two photos, or no wrong candidates)."""


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


def fit_pipeline(pipeline: MatchingPipeline, gallery: list[Record], embeddings: np.ndarray, seed: int = 0,
                 max_pseudo_queries: int = MAX_PSEUDO_QUERIES, target_far: float = DEFAULT_TARGET_FAR,
                 projection_dims: int = PROJECTION_DIMS, progress: Advance | None = None) -> MatchingPipeline:
    """``pipeline`` (from :func:`~wildtrack.matching.pipeline.build_pipeline`) fitted on the catalogue alone: the
    descriptor projection, the calibration (of what ``pipeline.calibration.features`` weighs), the
    identity-support weight and the new-individual thresholds.

    Unless ``pipeline`` already projects, its descriptors are first reduced to ``projection_dims`` principal
    components of the catalogue's (0: keep all; only for extractors that are ``projectable``); the fit then
    matches, and searches must match, through that projection. ``progress`` follows the pseudo-queries' local
    matching, the long part.

    Each pseudo-query is a catalogue photo searched against the catalogue minus its own encounter (same turtle,
    same day; without dates, or with no turtle met on two days, minus the photo itself). Its top-``k`` are
    matched locally; the logistic calibration is fitted on those labelled pairs, then the identity weight that
    ranks the pseudo-queries best (Recall@1 + mAP) is kept from :data:`IDENTITY_WEIGHTS`. The decision threshold
    is the match probability at which ``target_far`` of the pseudo-queries' best *wrong* turtles would be
    accepted (each stands in for a turtle the catalogue does not hold); None when the catalogue has a single
    turtle. The encounter threshold is calibrated the same way on the pseudo-queries pooled by encounter (each
    encounter's best probability per catalogue photo); undated photos are encounters of one, so without dates it
    equals the photo threshold. A second, stricter pair (``confident_threshold``, ``confident_encounter_threshold``)
    is calibrated the same way at :data:`~wildtrack.config.CONFIDENT_TARGET_FAR` false accepts (or ``target_far``
    when that is lower; never below the first pair): above it a verdict is named without review. When the
    catalogue holds more than ``max_pseudo_queries`` eligible photos, whole encounters are sampled.
    """
    k = pipeline.k
    groups = _own_groups(gallery)
    queries = _pseudo_queries(gallery, groups, max_pseudo_queries, seed)
    if not queries:
        raise RerankFitError("fitting the re-ranking needs at least one turtle with two photos; the catalogue has "
                             "none")
    if pipeline.projection is None and projection_dims and pipeline.extractor.projectable:
        # sampled from the pseudo-queries, whose features the fit reads anyway; its own bar, so that a cold
        # cache does not leave the fit's bar at 0 while the sample is extracted
        projection = fit_projection(pipeline.cache, [gallery[i].path for i in queries], projection_dims, seed,
                                    progress=next_stage(progress, "reading features for the matching projection"))
        pipeline = pipeline.with_projection(projection)
    ids = [r.identity for r in gallery]
    sim = cosine_similarity(embeddings[queries], embeddings)
    group_of = np.asarray([str(g) for g in groups], dtype=object)
    for row, i in enumerate(queries):
        sim[row, group_of == group_of[i]] = -np.inf  # never its own encounter: the easy, uninformative case
    q_ids = [ids[i] for i in queries]
    fit_k = int(min(k, np.isfinite(sim).sum(axis=1).min()))  # small catalogue: never shortlist the own encounter
    local = pipeline.inlier_matrix([gallery[i].path for i in queries], [r.path for r in gallery], sim, fit_k,
                                   progress)
    try:
        calibration = ScoreFusion(features=pipeline.calibration.features).fit(
            *shortlist_pairs(sim, local, q_ids, ids, fit_k))
    except ValueError as exc:  # e.g. a single turtle: every shortlisted pair is a true match
        raise RerankFitError(f"cannot fit the re-ranking on this catalogue: {exc}") from exc
    report: dict[str, Any] = {}
    best_weight, best_score = 0.0, -np.inf
    floor = -1e6  # own-encounter photos: last (finite, as metrics require); they count as misses for every weight
    for weight in IDENTITY_WEIGHTS:
        fused = np.nan_to_num(replace(pipeline, calibration=calibration, identity_weight=weight).fused_matrix(
            sim, local, ids, fit_k), neginf=floor)
        result = retrieval_metrics(fused, q_ids, ids, ks=(1,))
        report[f"identity_weight={weight}"] = {"R@1": round(result.recall_at_k[1], 4), "mAP": round(result.mAP, 4)}
        if result.recall_at_k[1] + result.mAP > best_score + 1e-9:
            best_weight, best_score = weight, result.recall_at_k[1] + result.mAP
    global_only = retrieval_metrics(np.nan_to_num(sim, neginf=floor), q_ids, ids, ks=(1,))
    report["global_only"] = {"R@1": round(global_only.recall_at_k[1], 4), "mAP": round(global_only.mAP, 4)}
    probabilities = replace(pipeline, calibration=calibration).probability_matrix(sim, local, fit_k)
    threshold, report["open_set"] = calibrate_open_set(probabilities, q_ids, ids, target_far)
    # pseudo-queries of one encounter pooled: the threshold for the best of several photos
    pooled, encounter_ids, _ = pool_encounter_rows(probabilities, q_ids, encounter_keys([gallery[i] for i in queries]))
    encounter_threshold, report["encounter_open_set"] = calibrate_open_set(pooled, encounter_ids, ids, target_far)
    # the confident operating point: the same route at a lower false-accept rate
    confident_far = min(CONFIDENT_TARGET_FAR, target_far)
    confident, report["confident_open_set"] = _stricter(
        calibrate_open_set(probabilities, q_ids, ids, confident_far), threshold, probabilities, q_ids, ids)
    confident_encounter, report["confident_encounter_open_set"] = _stricter(
        calibrate_open_set(pooled, encounter_ids, ids, confident_far), encounter_threshold, pooled, encounter_ids, ids)
    return replace(pipeline, calibration=calibration, identity_weight=best_weight, decision_threshold=threshold,
                   encounter_threshold=encounter_threshold, confident_threshold=confident,
                   confident_encounter_threshold=confident_encounter, pseudo_queries=len(queries), fit_report=report)


def _stricter(fitted: tuple[float | None, dict[str, Any]], floor: float | None, scores: np.ndarray,
              query_ids: list[str], gallery_ids: list[str]) -> tuple[float | None, dict[str, Any]]:
    """A confident threshold never below the normal one (``floor``): a confident verdict is always a named one.
    Raised to the floor, its rates are measured again there."""
    threshold, report = fitted
    if threshold is None or floor is None or threshold >= floor:
        return threshold, report
    return floor, {**report, **open_set_rates(scores, query_ids, gallery_ids, floor), "raised_to": "threshold"}
