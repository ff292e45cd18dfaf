"""Locating the turtle before local matching: the box geometry, the no-turtle fallback, and turtle-focused
keypoints (on a real photo when the sample is present)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wildtrack.features import FeatureCache, SiftExtractor
from wildtrack.locate import TurtleBox, TurtleLocator
from wildtrack.matching import matcher_for
from wildtrack.matching.calibration import ScoreFusion
from wildtrack.matching.pipeline import MatchingPipeline, build_pipeline, load_pipeline


def test_square_is_centred_on_the_turtle_with_a_margin():
    box = TurtleBox(0.4, 0.4, 0.6, 0.5, turtle_prob=0.9)  # 200 × 100 px in a 1000 × 1000 frame
    left, top, right, bottom = box.square(1000, 1000, margin=1.5, min_fraction=0.1)
    assert (right - left, bottom - top) == (300, 300)
    assert ((left + right) / 2, (top + bottom) / 2) == (500, 450)


def test_square_never_shrinks_below_a_fraction_of_the_frame_and_stays_inside_it():
    tiny_in_corner = TurtleBox(0.0, 0.0, 0.02, 0.02, turtle_prob=0.9)
    left, top, right, bottom = tiny_in_corner.square(2000, 1000, margin=1.3, min_fraction=0.3)
    assert (left, top) == (0, 0)
    # A 300 px square (0.3 × 1000) centred on the turtle at (20, 10), clipped by the frame's edges.
    assert (right, bottom) == (20 + 150, 10 + 150)


def test_locator_rejects_a_threshold_outside_0_1():
    with pytest.raises(ValueError, match="threshold"):
        TurtleLocator(threshold=1.5)


def test_a_photo_without_a_turtle_keeps_the_whole_frame():
    sand = Image.new("RGB", (640, 480), (200, 190, 160))
    locator = TurtleLocator()
    assert locator.locate(sand) is None
    crop, offset = locator.crop(sand)
    assert crop.size == sand.size and offset == (0, 0)


def test_focus_is_part_of_the_feature_cache_key():
    assert SiftExtractor(focus="turtle").key() != SiftExtractor(focus="frame").key()
    with pytest.raises(ValueError, match="focus"):
        SiftExtractor(focus="head")  # type: ignore[arg-type]


def test_fitted_fusion_remembers_its_features_and_old_files_mean_whole_frames(tmp_path):
    fitted = MatchingPipeline(SiftExtractor(max_side=640, focus="turtle"), matcher_for("rootsift"),
                              ScoreFusion(2.0, 1.0, -1.0, 10, 0.2), k=7, pseudo_queries=3)
    back = load_pipeline(fitted.save(tmp_path).parent)
    assert back.extractor == fitted.extractor
    assert back.cache.extractor == fitted.extractor and back.k == 7
    legacy = fitted.to_dict()
    del legacy["extractor"]
    assert build_pipeline(legacy).extractor.focus == "frame"


def test_turtle_focus_spends_keypoints_on_the_located_turtle(real_data, tmp_path):
    photo = sorted((real_data / "images").glob("*/*"))[0]
    with Image.open(photo) as img:
        width, height = img.size
    locator = TurtleLocator()
    from wildtrack.images import open_image

    box = locator.locate(open_image(photo))
    assert box is not None and box.turtle_prob > 0.05
    left, top, right, bottom = box.square(width, height)
    assert (right - left) * (bottom - top) < width * height

    turtle = FeatureCache(SiftExtractor(focus="turtle"), cache_dir=tmp_path).get(photo)
    frame = FeatureCache(SiftExtractor(focus="frame"), cache_dir=tmp_path).get(photo)
    original = turtle.xy * turtle.scale + np.asarray(turtle.offset)
    inside = ((original[:, 0] >= left - 2) & (original[:, 0] <= right + 2)
              & (original[:, 1] >= top - 2) & (original[:, 1] <= bottom + 2))
    assert inside.all()
    assert turtle.scale < frame.scale  # the turtle is seen at a finer resolution than in the whole frame
    again = FeatureCache(SiftExtractor(focus="turtle"), cache_dir=tmp_path).get(photo)  # read back from disk
    assert again.offset == pytest.approx(turtle.offset) and np.array_equal(again.xy, turtle.xy)
