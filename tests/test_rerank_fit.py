"""Fitting local re-ranking on a catalogue: photos as pseudo-queries against the catalogue's other encounters."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from wildtrack.config import MatchingConfig
from wildtrack.data import load_dataset
from wildtrack.embed import embed_paths, load_embedder
from wildtrack.matching.fit import IDENTITY_WEIGHTS, fit_pipeline
from wildtrack.matching.pipeline import build_pipeline, load_pipeline


def fit_gallery_fusion(records, embeddings, k, **options):
    """The product's pipeline (the `best` preset's features) weighing cosine and inliers, fitted on ``records``."""
    pipeline = build_pipeline(MatchingConfig(rerank_k=k, fusion_features="cosine+inliers"))
    return fit_pipeline(pipeline, records, embeddings, **options)


@pytest.fixture(scope="module")
def catalogue(synth_data, tiny_artifacts):
    records = load_dataset(synth_data).records
    embeddings = embed_paths(load_embedder(tiny_artifacts), [r.path for r in records]).embeddings
    return records, embeddings


def test_fit_chooses_an_identity_weight_and_round_trips(catalogue, tmp_path):
    records, embeddings = catalogue
    fitted = fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=40)
    assert fitted.pseudo_queries == 40 and fitted.k == 8
    assert fitted.identity_weight in IDENTITY_WEIGHTS
    assert fitted.calibration.num_pairs == 40 * 8
    report = fitted.fit_report
    weights = {f"identity_weight={w}" for w in IDENTITY_WEIGHTS}
    assert set(report) == {*weights, "global_only", "open_set", "encounter_open_set", "confident_open_set",
                           "confident_encounter_open_set"}
    chosen = report[f"identity_weight={fitted.identity_weight}"]
    assert all(chosen["R@1"] + chosen["mAP"] >= report[w]["R@1"] + report[w]["mAP"] for w in weights)
    back = load_pipeline(fitted.save(tmp_path).parent)
    assert back.identity_weight == fitted.identity_weight and back.calibration == fitted.calibration
    assert back.decision_threshold == fitted.decision_threshold
    assert back.projection.dims == fitted.projection.dims == 64
    assert np.allclose(back.projection.basis, fitted.projection.basis, atol=1e-6)


def test_fit_matches_through_a_projection_of_the_catalogues_descriptors_and_searches_reuse_it(catalogue):
    records, embeddings = catalogue
    fitted = fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=20, projection_dims=32)
    assert fitted.projection.dims == 32
    features = fitted.cache.get(records[0].path)
    assert features.descriptors.shape[1] == 32
    assert np.allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    full = fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=20, projection_dims=0)
    assert full.projection is None and full.cache.get(records[0].path).descriptors.shape[1] == 128
    legacy = full.to_dict()
    del legacy["projection"]  # fusion.json written before projections: full RootSIFT, as it was fitted
    assert build_pipeline(legacy).projection is None


def test_fit_shows_the_projection_sample_and_the_matching_as_two_complete_stages(catalogue):
    """On a cold cache the projection's sample is extracted first: it has its own bar, so the fit's bar does not
    sit at 0 meanwhile, and each bar ends at the total it announced."""
    records, embeddings = catalogue
    bars: dict[str, dict[str, int]] = {}

    def bar(description: str):
        bars[description] = {"total": -1, "done": 0}

        def advance(n: int = 1) -> None:
            bars[description]["done"] += n

        advance.set_total = lambda n: bars[description].update(total=n)
        advance.stage = bar
        return advance

    fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=20, progress=bar("fitting"))
    sample = bars.pop("reading features for the matching projection")
    assert sample["done"] == sample["total"] == 20  # every pseudo-query (at most PROJECTION_IMAGES of them)
    fit = bars.pop("fitting")
    assert fit["done"] == fit["total"] > 20 and not bars


def test_a_projected_fusion_cannot_be_read_as_a_full_rootsift_one(catalogue):
    """Its weights are for projected inlier counts: a reader that ignores the projection must refuse it (the
    fusion's format names the projection), and the projection cannot silently go missing."""
    from wildtrack.matching.calibration import ScoreFusion

    records, embeddings = catalogue
    data = fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=20).to_dict()
    with pytest.raises(ValueError, match="not a score fusion"):
        ScoreFusion.from_dict(data["fusion"])  # what a wildtrack from before projections does
    del data["projection"]
    with pytest.raises(ValueError, match="projection is missing"):
        build_pipeline(data)


def test_a_catalogue_too_sparse_for_a_projection_keeps_full_rootsift(tmp_path):
    from PIL import Image

    from wildtrack.features import FeatureCache, SiftExtractor
    from wildtrack.matching.fit import fit_projection

    flat = tmp_path / "flat.jpg"
    Image.new("L", (200, 200), 128).save(flat)  # no corners, no keypoints
    cache = FeatureCache(SiftExtractor(focus="frame"), cache_dir=tmp_path / "cache")
    assert fit_projection(cache, [flat], dims=64) is None


def test_fit_calibrates_a_match_probability_threshold_for_new_individuals(catalogue):
    """Each pseudo-query's best wrong turtle plays an unknown one: at most 5% of them may pass the threshold."""
    records, embeddings = catalogue
    fitted = fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=40, target_far=0.05)
    open_set = fitted.fit_report["open_set"]
    assert 0.0 < fitted.decision_threshold <= 1.0
    assert open_set["threshold"] == fitted.decision_threshold
    assert open_set["FAR"] <= 0.05 and open_set["num_unknown"] > 0
    stricter = fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=40, target_far=0.0)
    assert stricter.decision_threshold >= fitted.decision_threshold
    assert stricter.fit_report["open_set"]["FAR"] == 0.0


def test_only_turtles_seen_in_two_encounters_become_pseudo_queries(catalogue):
    records, embeddings = catalogue
    keep = records[0].identity
    first_day = {}
    for r in records:
        first_day.setdefault(r.identity, r.date)
    # every other turtle is cut down to a single encounter; `keep` keeps all of its encounters
    subset = [i for i, r in enumerate(records) if r.identity == keep or r.date == first_day[r.identity]]
    chosen = [records[i] for i in subset]
    fitted = fit_gallery_fusion(chosen, embeddings[subset], k=5)
    assert fitted.pseudo_queries == sum(r.identity == keep for r in chosen)


def test_one_encounter_per_turtle_falls_back_to_leave_one_photo_out(catalogue):
    records, embeddings = catalogue
    first_day = {}
    for r in records:
        first_day.setdefault(r.identity, r.date)
    subset = [i for i, r in enumerate(records) if r.date == first_day[r.identity]]
    chosen = [records[i] for i in subset]
    fitted = fit_gallery_fusion(chosen, embeddings[subset], k=4)
    with_a_second_photo = [r for r in chosen if sum(o.identity == r.identity for o in chosen) > 1]
    assert fitted.pseudo_queries == len(with_a_second_photo) > 0


def test_a_catalogue_of_single_photos_cannot_be_fitted(catalogue):
    records, embeddings = catalogue
    subset = sorted({r.identity: i for i, r in enumerate(records)}.values())
    with pytest.raises(ValueError, match="two photos"):
        fit_gallery_fusion([records[i] for i in subset], embeddings[subset], k=5)


def test_undated_photos_fall_back_to_leave_one_photo_out(catalogue):
    records, embeddings = catalogue
    undated = [dataclasses.replace(r, date=None) for r in records]
    fitted = fit_gallery_fusion(undated, embeddings, k=6, max_pseudo_queries=30)
    assert fitted.pseudo_queries == 30 and np.isfinite(fitted.calibration.bias)


def test_index_build_falls_back_to_global_search_and_drops_a_stale_fusion(synth_data, tiny_artifacts, tmp_path):
    from wildtrack.config import MatchingConfig
    from wildtrack.data.synth import generate_synthetic
    from wildtrack.matching.pipeline import FUSION_FILE
    from wildtrack.workflows.indexing import build_index

    index = tmp_path / "index"
    fitted = build_index(synth_data, tiny_artifacts, index, matching=MatchingConfig(rerank_k=5))
    assert (index / FUSION_FILE).is_file() and "re-ranks its top 5" in fitted.rerank
    singles = tmp_path / "singles"
    generate_synthetic(singles, identities=4, images_per_id=1, image_size=96, encounters_per_id=1, seed=5)
    report = build_index(singles, tiny_artifacts, index, matching=MatchingConfig(rerank_k=5))
    assert report.total == 4 and "global search only" in report.rerank and "two photos" in report.rerank
    assert not (index / FUSION_FILE).exists()  # the old catalogue's fusion must not re-rank the new one


def test_fit_calibrates_a_threshold_for_the_best_photo_of_an_encounter(catalogue, tmp_path):
    """The pseudo-queries pooled by encounter (each encounter's best wrong turtle over its photos plays an
    unknown one), calibrated at the same false-accept target as single photos."""
    records, embeddings = catalogue
    fitted = fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=60)
    pooled = fitted.fit_report["encounter_open_set"]
    assert pooled["threshold"] == fitted.encounter_threshold is not None
    assert pooled["num_known"] < fitted.pseudo_queries and pooled["FAR"] <= 0.05 + 1e-9
    back = load_pipeline(fitted.save(tmp_path).parent)
    assert back.encounter_threshold == fitted.encounter_threshold
    legacy = fitted.to_dict()
    del legacy["encounter_threshold"]  # fusion.json from before encounters
    assert build_pipeline(legacy).encounter_threshold is None


def test_fit_calibrates_a_stricter_confident_operating_point_that_round_trips(catalogue, tmp_path):
    """Above the second operating point (fitted the same way at 1 % false accepts) a verdict is named without
    review: it is never below the new-individual one, it is saved with the fusion, and the policy states both."""
    from wildtrack.config import CONFIDENT_TARGET_FAR
    from wildtrack.decide.policy import decision_policy

    records, embeddings = catalogue
    fitted = fit_gallery_fusion(records, embeddings, k=8, max_pseudo_queries=60)
    report = fitted.fit_report
    assert fitted.confident_threshold is not None and fitted.confident_encounter_threshold is not None
    assert fitted.confident_threshold >= fitted.decision_threshold
    assert fitted.confident_encounter_threshold >= fitted.encounter_threshold
    assert report["confident_open_set"]["threshold"] == fitted.confident_threshold
    assert report["confident_encounter_open_set"]["threshold"] == fitted.confident_encounter_threshold
    assert report["confident_open_set"]["target_far"] == CONFIDENT_TARGET_FAR
    assert report["confident_open_set"]["FAR"] <= report["open_set"]["FAR"]
    back = load_pipeline(fitted.save(tmp_path).parent)
    assert back.confident_threshold == fitted.confident_threshold
    assert back.confident_encounter_threshold == fitted.confident_encounter_threshold
    policy = decision_policy(True, None, back.decision_threshold, back.encounter_threshold, back.fit_report,
                             confident_photo=back.confident_threshold,
                             confident_encounter=back.confident_encounter_threshold)
    assert policy.confident_encounter_threshold == back.confident_encounter_threshold
    assert policy.confident_far == CONFIDENT_TARGET_FAR
    sentence = policy.sentence()
    assert sentence.startswith("new individual below P(same)")
    assert f"named automatically (confident) above P(same) {back.confident_threshold:.3f}" in sentence
    assert "fitted at 1 % false accepts" in sentence
    legacy = copy.deepcopy(fitted.to_dict())
    for key in ("confident_threshold", "confident_encounter_threshold"):
        del legacy[key]  # fusion.json from before the confident operating point
    for key in ("confident_open_set", "confident_encounter_open_set"):
        del legacy["fit_report"][key]
    old = build_pipeline(legacy)
    assert old.confident_threshold is None and old.confident_encounter_threshold is None
    old_policy = decision_policy(True, None, old.decision_threshold, old.encounter_threshold, old.fit_report)
    assert old_policy.source == "fitted" and old_policy.confident_encounter_threshold is None
    assert "confident" not in old_policy.sentence()


def test_a_catalogue_larger_than_the_sample_is_sampled_by_whole_encounters(catalogue):
    """So that the encounter threshold is fitted on encounters that look like the ones searches will see."""
    from collections import Counter

    from wildtrack.matching.fit import _own_groups, _pseudo_queries

    records, _ = catalogue
    groups = _own_groups(records)
    chosen = _pseudo_queries(records, groups, limit=20, seed=0)
    assert len(chosen) == 20 == len(set(chosen))
    taken, whole = Counter(groups[i] for i in chosen), Counter(groups)
    assert sum(taken[g] < whole[g] for g in taken) <= 1  # only the encounter that reached the limit is cut
    assert _pseudo_queries(records, groups, limit=20, seed=0) == chosen  # seeded
