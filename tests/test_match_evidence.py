"""Match evidence: the inlier pairs behind a score, in original pixels, and the picture that draws them."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from wildtrack.features import FeatureCache, SiftExtractor
from wildtrack.matching.inlier_pairs import match_evidence
from wildtrack.matching.pipeline import MatchingPipeline
from wildtrack.matching.ratio_test import RatioTestMatcher, correspondences, match_pair
from wildtrack.visualize.matchview import match_picture, match_picture_png

SIZE = 1000  # larger than the extractor's frame, so the frame-to-original scale is not 1
EXTRACTOR = SiftExtractor(max_side=400, max_keypoints=600, focus="frame")
ROTATION = np.vstack([cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), 15, 0.9), [0, 0, 1]])


def _pattern(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE), 128, np.uint8)
    for _ in range(200):
        x, y = (int(v) for v in rng.integers(0, SIZE, 2))
        cv2.circle(img, (x, y), int(rng.integers(8, 50)), int(rng.integers(0, 256)), -1)
    noisy = img.astype(np.float32) + rng.normal(0, 6, img.shape)
    return cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (3, 3), 0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """A generated photo, the same photo rotated and scaled (a known transform), and an unrelated one."""
    root = tmp_path_factory.mktemp("evidence")
    base = _pattern(4)
    arrays = {"base": base, "warped": cv2.warpAffine(base, ROTATION[:2], (SIZE, SIZE), borderValue=128),
              "other": _pattern(5)}
    paths = {}
    for name, arr in arrays.items():
        paths[name] = root / f"{name}.jpg"
        cv2.imwrite(str(paths[name]), cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


@pytest.fixture()
def reranker(tmp_path) -> MatchingPipeline:
    return MatchingPipeline(EXTRACTOR, RatioTestMatcher(), k=5,
                            features=FeatureCache(EXTRACTOR, cache_dir=tmp_path / "cache"))


def test_the_pairs_are_the_inliers_counted_and_lie_where_the_transform_puts_them(photos, reranker):
    evidence = match_evidence(photos["base"], photos["warped"], reranker)
    counted = reranker.inliers(photos["base"], [photos["warped"]])[0]
    assert evidence.inliers == counted >= 20
    assert evidence.query_xy.shape == evidence.target_xy.shape == (counted, 2)
    # In original pixels (not the 400 px matching frame): the known rotation maps each query point onto its pair.
    mapped = np.c_[evidence.query_xy, np.ones(counted)] @ ROTATION[:2].T
    assert np.median(np.linalg.norm(mapped - evidence.target_xy, axis=1)) < 4.0
    assert evidence.query_xy.max() > 400  # beyond the matching frame: the scale was applied


def test_count_and_mask_come_from_one_computation(photos):
    a, b = EXTRACTOR(photos["base"]), EXTRACTOR(photos["warped"])
    found = correspondences(a, b)
    assert found.result == match_pair(a, b) == RatioTestMatcher()(a, b)
    assert found.inlier.dtype == bool and len(found.inlier) == len(found.query) == found.result.matches


def test_unrelated_photos_give_far_fewer_pairs(photos, reranker):
    same = match_evidence(photos["base"], photos["warped"], reranker).inliers
    assert match_evidence(photos["base"], photos["other"], reranker).inliers < same / 4


def test_the_picture_draws_the_correspondences(photos, reranker, tmp_path):
    evidence = match_evidence(photos["base"].read_bytes(), photos["warped"], reranker)  # an upload: bytes
    out = match_picture(photos["base"].read_bytes(), photos["warped"], evidence.query_xy, evidence.target_xy,
                        tmp_path / "match.png", "query: base.jpg", "t001: warped.jpg",
                        f"{evidence.inliers} matching keypoints")
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert picture.shape[1] > picture.shape[0] > 400  # two photos side by side
    # The photos are grey; the drawn lines are the only saturated pixels.
    saturation = picture.max(axis=2) - picture.min(axis=2)
    assert (saturation > 80).sum() > 50 * evidence.inliers
    no_lines = np.asarray(Image.open(io.BytesIO(match_picture_png(
        photos["base"], photos["warped"], np.zeros((0, 2)), np.zeros((0, 2)), "q", "t", "none")))
        .convert("RGB")).astype(int)
    assert ((no_lines.max(axis=2) - no_lines.min(axis=2)) > 80).sum() < 50  # only the blue query label


def test_misaligned_pairs_are_refused(photos):
    with pytest.raises(ValueError, match="pairs must align"):
        match_picture_png(photos["base"], photos["warped"], np.zeros((3, 2)), np.zeros((2, 2)), "q", "t", "x")
