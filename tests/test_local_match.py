"""Local-feature matching, its cache, shortlist re-ranking and score fusion, on generated images (fast, no data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from wildtrack.evaluate import rank_gallery, retrieval_metrics
from wildtrack.features import DescriptorProjection, FeatureCache, LocalFeatures, SiftExtractor, root_sift
from wildtrack.index import Hit
from wildtrack.matching.calibration import ScoreFusion
from wildtrack.matching.pipeline import MatchingPipeline
from wildtrack.matching.ratio_test import RatioTestMatcher, _two_nn, match_pair
from wildtrack.matching.scoring import fused_matrix, with_identity_support
from wildtrack.matching.shortlist import shortlist_pairs

EXTRACTOR = SiftExtractor(max_side=400, max_keypoints=600, focus="frame")  # "turtle": test_locate.py


def _pattern(seed: int, size: int = 800) -> np.ndarray:
    """Random blobs and strokes on noise: plenty of corners and blobs for SIFT, unique to the seed."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 128, np.uint8)
    for _ in range(160):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, (x, y), int(rng.integers(6, 40)), int(rng.integers(0, 256)), -1)
    for _ in range(40):
        p, q = rng.integers(0, size, (2, 2))
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), int(rng.integers(0, 256)), 3)
    noisy = img.astype(np.float32) + rng.normal(0, 6, img.shape)
    return cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (3, 3), 0)


def _warp(img: np.ndarray) -> np.ndarray:
    """Rotated by 20°, scaled by 0.85 and seen slightly obliquely."""
    h, w = img.shape
    rot = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), 20, 0.85), [0, 0, 1]])
    tilt = np.array([[1, 0.05, 0], [0, 1, 0], [1e-4, 5e-5, 1]])
    return cv2.warpPerspective(img, tilt @ rot, (w, h), borderValue=128)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """JPEGs (so the draft-decoding path runs): a pattern, the same pattern warped, and two other patterns."""
    root = tmp_path_factory.mktemp("local")
    base = _pattern(1)
    arrays = {"base": base, "warped": _warp(base), "other": _pattern(2), "other2": _pattern(3)}
    paths = {}
    for name, arr in arrays.items():
        paths[name] = root / f"{name}.jpg"
        cv2.imwrite(str(paths[name]), arr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


@pytest.fixture()
def cache(tmp_path) -> FeatureCache:
    return FeatureCache(EXTRACTOR, cache_dir=tmp_path / "cache")


def test_root_sift_rows_have_unit_norm():
    desc = np.random.default_rng(0).integers(0, 256, (50, 128)).astype(np.float32)
    assert np.allclose(np.linalg.norm(root_sift(desc), axis=1), 1.0, atol=1e-5)


def test_two_nn_finds_the_same_neighbours_as_bfmatcher():
    rng = np.random.default_rng(0)
    a, b = (root_sift(rng.integers(0, 256, (n, 128)).astype(np.float32)) for n in (200, 300))
    first, d1, d2 = _two_nn(a, b)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a, b, k=2)
    assert np.array_equal(first, [m.trainIdx for m, _ in knn])
    assert np.allclose(d1, [m.distance for m, _ in knn], atol=1e-3)
    assert np.allclose(d2, [n.distance for _, n in knn], atol=1e-3)


def test_same_pattern_under_a_warp_gets_many_more_inliers(images, cache):
    base, warped, other = (cache.get(images[n]) for n in ("base", "warped", "other"))
    assert base.frame_side == 400 and base.scale == pytest.approx(2.0)
    assert base.xy.max() <= 400 and base.descriptors.dtype == np.float32
    same, different = match_pair(base, warped), match_pair(base, other)
    assert same.inliers >= 40, same
    assert same.inliers > 5 * max(different.inliers, 1), (same, different)
    assert same.inliers <= same.matches
    for model in ("affine", "fundamental"):
        assert match_pair(base, warped, model=model).inliers > match_pair(base, other, model=model).inliers


def test_a_projection_keeps_unit_rows_in_fewer_dimensions_and_round_trips():
    rng = np.random.default_rng(0)
    desc = root_sift(rng.integers(0, 256, (500, 128)).astype(np.float32))
    projection = DescriptorProjection.fit(desc, 16)
    assert projection.dims == 16
    assert np.allclose(projection.basis.T @ projection.basis, np.eye(16), atol=1e-5)
    feats = LocalFeatures(rng.random((50, 2), dtype=np.float32), desc[:50], 400, 2.0, (3.0, 4.0))
    out = projection(feats)
    assert out.descriptors.shape == (50, 16) and out.descriptors.dtype == np.float32
    assert np.allclose(np.linalg.norm(out.descriptors, axis=1), 1.0, atol=1e-5)
    assert out.xy is feats.xy and (out.scale, out.offset) == (2.0, (3.0, 4.0))
    back = DescriptorProjection.from_dict(json.loads(json.dumps(projection.to_dict())))
    assert np.allclose(back(feats).descriptors, out.descriptors, atol=1e-5)
    with pytest.raises(ValueError, match="at least 32 descriptors"):
        DescriptorProjection.fit(desc[:20], 16)
    with pytest.raises(ValueError, match="128"):
        DescriptorProjection(np.zeros(64), np.zeros((64, 8)))


def test_a_projecting_cache_reads_the_same_raw_features_from_disk(images, cache):
    raw = cache.get(images["base"])
    projection = DescriptorProjection.fit(np.concatenate([cache.get(images[n]).descriptors
                                                          for n in ("other", "other2")]), 32)
    projecting = cache.with_projection(projection)
    got = projecting.get(images["base"])
    assert projecting.misses == 0 and projecting.hits == 1  # the file the plain cache wrote
    assert np.allclose(got.descriptors, projection(raw).descriptors, atol=1e-6)
    assert projecting.get(images["base"].read_bytes()).descriptors.shape == (len(raw), 32)  # uploads too


def test_matching_in_64_projected_dimensions_still_tells_the_pattern_from_others(images, cache):
    projection = DescriptorProjection.fit(np.concatenate([cache.get(images[n]).descriptors
                                                          for n in ("other", "other2")]), 64)
    projecting = cache.with_projection(projection)
    base, warped, other = (projecting.get(images[n]) for n in ("base", "warped", "other"))
    same, different = match_pair(base, warped), match_pair(base, other)
    assert same.inliers >= 40, same
    assert same.inliers > 5 * max(different.inliers, 1), (same, different)


def test_cache_hit_returns_identical_features_without_extracting(images, cache, monkeypatch):
    first = cache.get(images["base"])
    assert (cache.misses, cache.hits) == (1, 0)
    assert cache.get(images["base"]) is first  # memory hit
    # A fresh cache on the same folder reads the file; extracting again would fail loudly.
    monkeypatch.setattr(SiftExtractor, "raw", lambda self, source: pytest.fail("extracted again"))
    again = FeatureCache(EXTRACTOR, cache_dir=cache.root.parent)
    second = again.get(images["base"])
    assert (again.misses, again.hits) == (0, 1)
    assert np.array_equal(first.xy, second.xy) and np.array_equal(first.descriptors, second.descriptors)
    assert first.scale == pytest.approx(second.scale)


def test_a_corrupt_cache_file_is_extracted_again(images, cache):
    first = cache.get(images["other"])
    file = cache.file_for(cache.key(images["other"]))
    file.write_bytes(file.read_bytes()[:100])  # as if a crash cut the write short
    fresh = FeatureCache(EXTRACTOR, cache_dir=cache.root.parent)
    assert np.array_equal(fresh.get(images["other"]).descriptors, first.descriptors)
    assert fresh.misses == 1


def test_cache_key_changes_with_the_file_and_the_settings(images, cache):
    key = cache.key(images["base"])
    other_settings = FeatureCache(SiftExtractor(max_side=300, max_keypoints=600), cache_dir=cache.root.parent)
    assert other_settings.key(images["base"]) != key
    st = images["base"].stat()
    os.utime(images["base"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache.key(images["base"]) != key


def test_rerank_reorders_only_the_first_k(images, cache):
    order = [("other", 0.9), ("other2", 0.8), ("warped", 0.7), ("base", 0.6)]
    hits = [Hit(name, images[name].name, name, None, score, rank) for rank, (name, score) in enumerate(order, 1)]
    pipeline = MatchingPipeline(cache.extractor, RatioTestMatcher(), ScoreFusion(w_global=1.0, w_local=1.0), k=3,
                                features=cache, workers=2)
    out = pipeline.rank(images["base"], hits, images["base"].parent)
    assert out[0].image_id == "warped" and out[0].inliers >= 40 and out[0].match_probability > 0.9
    assert {h.image_id for h in out[:3]} == {"other", "other2", "warped"}
    assert out[3].image_id == "base" and out[3].inliers is None  # beyond k: kept last, not matched (although identical)
    assert [h.rank for h in out] == [1, 2, 3, 4] and out[0].score == 0.7  # the cosine is kept beside the evidence


def test_local_scores_are_zero_outside_each_shortlist(images, cache):
    gallery = [images["other"], images["warped"], images["other2"]]
    sim = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]])
    pipeline = MatchingPipeline(cache.extractor, RatioTestMatcher(), k=2, features=cache)
    local = pipeline.inlier_matrix([images["base"], images["warped"]], gallery, sim)
    assert local.shape == (2, 3)
    assert local[0, 1] == 0  # the true match is outside query 0's top-2, so it is never matched
    assert local[1, 0] == 0 and local[1, 1] >= 40


class _Recorder:
    """A progress display: records the announced total and every advance."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0

    def __call__(self, n: int = 1) -> None:
        self.done += n

    def set_total(self, n: int) -> None:
        self.total = n


def test_local_scores_report_every_photo_read_and_every_query_matched(images, cache):
    gallery = [images["other"], images["warped"], images["other2"]]
    sim = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]])
    progress = _Recorder()
    pipeline = MatchingPipeline(cache.extractor, RatioTestMatcher(), k=2, features=cache)
    pipeline.inlier_matrix([images["base"], images["warped"]], gallery, sim, progress=progress)
    assert progress.total == progress.done == 2 + 3 + 2  # 2 queries read, 3 shortlisted photos read, 2 matched


def test_fused_matrix_never_leaves_the_shortlist():
    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, (30, 40))
    local = rng.integers(0, 200, sim.shape)
    k = 7
    fused = fused_matrix(sim, local, ScoreFusion(w_global=0.5, w_local=3.0), k)
    before, after = rank_gallery(sim), rank_gallery(fused)
    for b, a in zip(before, after, strict=True):
        assert set(a[:k]) == set(b[:k])
        assert np.array_equal(a[k:], b[k:])  # the rest keeps its global order, below the shortlist
    assert not np.array_equal(before[:, :k], after[:, :k])  # ... and the shortlist did move
    # a fusion that ignores the cosine entirely still keeps the tail in global order
    tail = rank_gallery(fused_matrix(sim, local, ScoreFusion(w_global=0.0, w_local=1.0), k))
    assert np.array_equal(tail[:, k:], before[:, k:])


def test_masked_gallery_images_stay_last_and_never_become_nan():
    """Evaluation masks a query's own photo with -inf; when only masked images lie outside the shortlist, the
    shift that puts the tail below the shortlist must not turn them into NaN (which ranks arbitrarily)."""
    sim = np.array([[0.9, 0.5, 0.1, -np.inf], [-np.inf, -np.inf, 0.8, 0.2]])
    local = np.array([[0, 30, 0, 0], [0, 0, 0, 40]])
    fused = fused_matrix(sim, local, ScoreFusion(w_global=1.0, w_local=1.0), k=2)
    assert not np.isnan(fused).any()
    assert np.isneginf(fused[sim == -np.inf]).all()
    assert rank_gallery(fused)[1][:2].tolist() == [3, 2]  # 40 inliers beat the higher cosine


def _synthetic_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    same = rng.random(n) < 0.2
    cos = rng.normal(0.5, 0.1, n) + 0.08 * same
    inliers = np.where(same & (rng.random(n) < 0.5), rng.integers(15, 150, n), rng.integers(0, 8, n))
    return cos, inliers, same


def test_fusion_is_monotonic_in_both_inputs():
    rng = np.random.default_rng(1)
    fusion = ScoreFusion(features="cosine+inliers").fit(*_synthetic_pairs(rng, 3000))
    assert fusion.w_global > 0 and fusion.w_local > 0
    g, n = np.meshgrid(np.linspace(-1, 1, 41), np.arange(0, 300, 7))
    s = fusion.score(g, n)
    assert (np.diff(s, axis=0) >= 0).all() and (np.diff(s, axis=1) >= 0).all()
    assert ((s > 0) & (s < 1)).all()
    # inliers that *anti*-correlate with the label would get a negative weight: it is clipped to exactly 0
    cos, inliers, same = _synthetic_pairs(rng, 3000)
    flipped = ScoreFusion(features="cosine+inliers").fit(cos, np.where(same, 0, inliers + 20), same)
    assert flipped.w_local == 0.0 and flipped.w_global > 0
    with pytest.raises(ValueError, match=">= 0"):
        ScoreFusion(w_global=1.0, w_local=-0.1)


def _synthetic_retrieval(seed: int, n_q: int, n_g: int, n_ids: int, cos_gap: float, found: float):
    """Query/gallery ids, cosines that favour the true identity by ``cos_gap``, and inliers that are high for a
    share ``found`` of true pairs and chance-level (0-7) for everything else."""
    rng = np.random.default_rng(seed)
    g_ids = np.arange(n_g) % n_ids
    q_ids = rng.integers(0, n_ids, n_q)
    same = q_ids[:, None] == g_ids[None, :]
    sim = rng.normal(0.5, 0.1, (n_q, n_g)) + cos_gap * same
    local = np.where(same & (rng.random(same.shape) < found), rng.integers(15, 100, same.shape),
                     rng.integers(0, 8, same.shape))
    return q_ids, g_ids, sim, local


def test_fusion_ranks_at_least_as_well_as_the_global_score():
    q_ids, g_ids, sim, local = _synthetic_retrieval(2, n_q=60, n_g=80, n_ids=20, cos_gap=0.06, found=0.4)
    fit_rows, eval_rows = slice(0, 30), slice(30, None)  # fit on some queries, evaluate on the others
    k = 15
    pairs = shortlist_pairs(sim[fit_rows], local[fit_rows], q_ids[fit_rows], g_ids, k)
    fusion = ScoreFusion(features="cosine+inliers").fit(*pairs)
    base = retrieval_metrics(sim[eval_rows], q_ids[eval_rows], g_ids)
    fused = retrieval_metrics(fused_matrix(sim[eval_rows], local[eval_rows], fusion, k), q_ids[eval_rows], g_ids)
    assert fused.recall_at_k[1] >= base.recall_at_k[1]
    assert fused.mAP >= base.mAP
    assert fused.recall_at_k[1] > base.recall_at_k[1]  # with informative inliers it does strictly better here


def test_fusion_json_round_trip():
    fusion = ScoreFusion(features="cosine+inliers").fit(*_synthetic_pairs(np.random.default_rng(3), 500))
    text = json.dumps(fusion.to_dict())
    back = ScoreFusion.from_dict(json.loads(text))
    assert back == fusion
    g, n = np.array([0.2, 0.6, 0.9]), np.array([0, 12, 80])
    assert np.array_equal(back.score(g, n), fusion.score(g, n))
    with pytest.raises(ValueError, match="format"):
        ScoreFusion.from_dict({"w_global": 1, "w_local": 1, "bias": 0})


def test_identity_support_lets_two_good_photos_beat_one_lucky_one():
    scores = np.array([5.0, 4.0, 3.9, 1.0, 0.5])
    ids = ["lucky", "twice", "twice", "other", "lucky"]
    assert np.array_equal(with_identity_support(scores, ids, 0.0), scores)
    supported = with_identity_support(scores, ids, 1.0)
    assert np.argmax(supported) == 1  # "twice" (4.0 + 3.9) now outranks "lucky" (5.0 + 0.5)
    assert supported[1] > supported[2]  # within one identity the order is unchanged
    assert supported[0] > supported[4]
    # a lone photo's "second" is the list's lowest score, so it is not boosted like a confirmed identity
    assert supported[3] == pytest.approx(1.0 + 1.0 + 0.5)
    with pytest.raises(ValueError, match="identities"):
        with_identity_support(scores, ids[:3], 1.0)


def test_fused_matrix_with_identity_support_stays_in_the_shortlist_and_can_help():
    q_ids, g_ids, sim, local = _synthetic_retrieval(4, n_q=80, n_g=90, n_ids=15, cos_gap=0.07, found=0.3)
    k = 20
    fusion = ScoreFusion(w_global=8.0, w_local=2.0)
    plain = fused_matrix(sim, local, fusion, k)
    supported = fused_matrix(sim, local, fusion, k, g_ids, 1.0)
    before, after = rank_gallery(sim), rank_gallery(supported)
    for b, a in zip(before, after, strict=True):
        assert set(a[:k]) == set(b[:k]) and np.array_equal(a[k:], b[k:])
    assert retrieval_metrics(supported, q_ids, g_ids).mAP > retrieval_metrics(plain, q_ids, g_ids).mAP
    with pytest.raises(ValueError, match="gallery identity"):
        fused_matrix(sim, local, fusion, k, g_ids[:5], 1.0)
