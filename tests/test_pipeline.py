"""The re-ranking pipeline as one object: one photo's hits and a whole score matrix ranked alike, old fusion.json
files still loading, and a new matcher added with one file and one registration line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from wildtrack.config import MatchingConfig
from wildtrack.features import FeatureCache, SiftExtractor
from wildtrack.index import Hit
from wildtrack.matching.calibration import ScoreFusion
from wildtrack.matching.pipeline import MatchingPipeline, build_pipeline, load_pipeline
from wildtrack.matching.ratio_test import RatioTestMatcher
from wildtrack.registry import MATCHERS

EXTRACTOR = SiftExtractor(max_side=400, max_keypoints=600, focus="frame")


def _pattern(seed: int, size: int = 600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 128, np.uint8)
    for _ in range(120):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, (x, y), int(rng.integers(6, 36)), int(rng.integers(0, 256)), -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """A pattern, the same pattern rotated, and three others, as JPEGs; photos 'a*' and 'b*' are two turtles."""
    root = tmp_path_factory.mktemp("pipeline")
    base = _pattern(1)
    turned = cv2.warpAffine(base, cv2.getRotationMatrix2D((300, 300), 15, 0.9), (600, 600), borderValue=128)
    arrays = {"query": base, "a1": turned, "a2": _pattern(2), "b1": _pattern(3), "b2": _pattern(4)}
    paths = {}
    for name, arr in arrays.items():
        paths[name] = root / f"{name}.jpg"
        cv2.imwrite(str(paths[name]), arr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


def test_one_photos_ranking_and_the_evaluation_matrix_agree(photos, tmp_path):
    """`rank` (searches, the service) and the matrix form (evaluation, fitting) give the same order, the same
    probabilities and the same inliers: they are one implementation."""
    pipeline = MatchingPipeline(EXTRACTOR, RatioTestMatcher(), ScoreFusion(0.5, 1.0, -2.0), k=3, identity_weight=0.5,
                                features=FeatureCache(EXTRACTOR, cache_dir=tmp_path))
    gallery = ["b1", "a2", "a1", "b2"]
    cosines = np.array([[0.9, 0.8, 0.7, 0.6]])
    hits = [Hit(name, f"{name}.jpg", name[0], None, float(c), rank)
            for rank, (name, c) in enumerate(zip(gallery, cosines[0], strict=True), 1)]
    ranked = pipeline.rank(photos["query"], hits, photos["query"].parent)
    inliers = pipeline.inlier_matrix([photos["query"]], [photos[n] for n in gallery], cosines)
    fused = pipeline.fused_matrix(cosines, inliers, [n[0] for n in gallery])[0]
    probability = pipeline.probability_matrix(cosines, inliers)[0]
    assert [h.image_id for h in ranked] == [gallery[j] for j in np.argsort(-fused, kind="stable")]
    assert ranked[0].image_id == "a1" and ranked[-1].image_id == "b2" and ranked[-1].inliers is None
    for h in ranked[:3]:
        j = gallery.index(h.image_id)
        assert h.inliers == inliers[0, j] and h.match_probability == pytest.approx(probability[j])
        assert h.rank_score == pytest.approx(fused[j])
    scores = [h.order_score for h in ranked]
    assert scores == sorted(scores, reverse=True)  # what a list shows as its score is what orders it
    assert [h.score for h in ranked] != sorted(h.score for h in ranked)  # ... and the cosine rides beside it


def test_a_fusion_json_from_before_the_rename_still_loads_its_ratio_test_matcher(tmp_path):
    """fusion.json written when the ratio-test matcher was called 'ransac' and its reprojection error 'threshold'."""
    record = build_pipeline(MatchingConfig(rerank_k=5)).to_dict()
    record["matcher"] = {"name": "ransac", "ratio": 0.75, "model": "affine", "threshold": 6.0}
    (tmp_path / "fusion.json").write_text(json.dumps(record))
    loaded = load_pipeline(tmp_path)
    assert loaded.matcher == RatioTestMatcher(ratio=0.75, reproj_px=6.0)
    assert loaded.to_dict()["matcher"] == {"name": "ratio-test", "ratio": 0.75, "model": "affine", "reproj_px": 6.0}
    assert MatchingConfig(local_matcher="ransac").local_matcher == "ratio-test"  # old configs too


TOY_MATCHER = '''
    """A toy matcher: each keypoint paired with its nearest neighbour in the other photo, no ratio test."""

    from dataclasses import dataclass
    from typing import ClassVar

    import numpy as np

    from wildtrack.matching.geometry import GeometricMatcher, GeometricModel


    @dataclass(frozen=True)
    class NearestMatcher(GeometricMatcher):
        model: GeometricModel = "affine"
        reproj_px: float = 8.0

        name: ClassVar[str] = "nearest"

        def putative(self, a, b):
            if len(a) == 0 or len(b) == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            return np.arange(len(a)), (a.descriptors @ b.descriptors.T).argmax(axis=1)
'''


@pytest.fixture()
def toy_matcher(tmp_path, monkeypatch):
    (tmp_path / "toy_matcher.py").write_text(textwrap.dedent(TOY_MATCHER))
    monkeypatch.syspath_prepend(str(tmp_path))
    MATCHERS.add("nearest", "toy_matcher:NearestMatcher", help="nearest neighbours, then RANSAC")  # the one line
    yield
    MATCHERS.remove("nearest")


def test_a_matcher_is_one_file_and_one_registration_line(toy_matcher, photos, tmp_path):
    with pytest.raises(ValueError, match="unknown matcher 'farthest'"):
        MatchingConfig(local_matcher="farthest")
    cfg = MatchingConfig(local_matcher="nearest", local_focus="frame", local_max_side=400, local_keypoints=600,
                         rerank_k=4)
    pipeline = build_pipeline(cfg, cache_dir=tmp_path / "cache")
    assert type(pipeline.matcher).__name__ == "NearestMatcher"
    inliers = pipeline.inliers(photos["query"], [photos[n] for n in ("a1", "a2", "b1")])
    assert inliers[0] > 3 * max(inliers[1:]) and inliers[0] >= 20  # the rotated copy stands out
    pipeline.save(tmp_path)  # fusion.json names it, and a search rebuilds it from there
    assert json.loads((tmp_path / "fusion.json").read_text())["matcher"]["name"] == "nearest"
    assert load_pipeline(tmp_path).matcher == pipeline.matcher


def test_the_cli_offers_the_registered_extractors_and_matchers():
    from typer.testing import CliRunner

    from wildtrack.cli import app
    from wildtrack.registry import EXTRACTORS

    runner = CliRunner()
    for command in (["evaluate"], ["index", "build"]):
        result = runner.invoke(app, [*command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        words = " ".join(result.output.split())
        assert all(name in words for name in [*EXTRACTORS.names(), *MATCHERS.names(), "auto"])
    wrong = runner.invoke(app, ["index", "build", "--data", ".", "--artifacts", ".", "--out", "x",
                                "--local-matcher", "farthest"])
    assert wrong.exit_code == 2 and "farthest" in wrong.output
    old_name = runner.invoke(app, ["index", "build", "--data", ".", "--artifacts", ".", "--out", "x",
                                   "--local-matcher", "ransac"])  # the ratio test's name before the rename
    assert "Invalid value" not in old_name.output and "not a model folder" in old_name.output  # past the choices


def test_a_photo_is_prepared_once_for_the_model_and_local_matching(photos, tmp_path):
    """Up to LOCAL_DECODE_SIDE the model gets exactly what every batch decodes and local matching reads the file;
    a larger photo is decoded once and local matching gets its pixels, the same features a lossless copy gives."""
    import io

    from PIL import Image

    from wildtrack.images import LOCAL_DECODE_SIDE, load_image, prepare_photo

    small = prepare_photo(photos["query"], (64, 64))
    assert small.local == photos["query"] and np.array_equal(small.pixels, load_image(photos["query"], (64, 64)))
    big = Image.open(photos["query"]).convert("RGB").resize((3 * LOCAL_DECODE_SIDE // 2 * 2, 3 * LOCAL_DECODE_SIDE))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    prepared = prepare_photo(buf.getvalue(), (64, 64))
    assert isinstance(prepared.local, Image.Image) and max(prepared.local.size) == LOCAL_DECODE_SIDE
    assert prepared.pixels.shape == (64, 64, 3)
    lossless = io.BytesIO()
    prepared.local.save(lossless, format="PNG")
    from_pixels, from_copy = EXTRACTOR(prepared.local), EXTRACTOR(lossless.getvalue())
    assert np.array_equal(from_pixels.xy, from_copy.xy) and np.array_equal(from_pixels.descriptors,
                                                                          from_copy.descriptors)
