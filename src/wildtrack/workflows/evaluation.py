"""``run_evaluation``: split → embed → metrics.json → retrieval panels, t-SNE, Grad-CAM → report.html."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wildtrack.config import EvalConfig
from wildtrack.data import Dataset, Record, load_dataset, make_split
from wildtrack.data.storage import load_photo
from wildtrack.embed import Embedder, load_embedder
from wildtrack.evaluate import (
    MetricsReport,
    calibrate_open_set,
    cosine_similarity,
    open_set_rates,
    retrieval_metrics,
    write_metrics_json,
)
from wildtrack.jobs import Engine, LocalEngine, catalogue_feature_cache, embed_photos, extract_features, photo_ids
from wildtrack.jobs.catalogue import STAGING_DIR, clear_staging
from wildtrack.matching.pipeline import MatchingPipeline, build_pipeline
from wildtrack.visualize.report import write_report
from wildtrack.visualize.tsne import plot_tsne
from wildtrack.workflows import Advance, Log, announce_total, next_stage
from wildtrack.workflows.pictures import RankedScores, retrieval_pictures

if TYPE_CHECKING:
    from wildtrack.features import Extractor, FeatureCache


@dataclass
class EvaluationOutput:
    report: MetricsReport
    out: Path
    pictures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _embed_records(
    embedder: Embedder, records: list[Record], advance: Advance | None, log: Log,
    job: tuple[Engine, str | Path, str, Path],
) -> tuple[list[Record], np.ndarray]:
    engine, artifacts, backend, stage = job
    result = embed_photos(engine, embedder, artifacts, backend, [r.path for r in records], stage, advance)
    for _, why in result.failed:
        log(f"skipped {why}")  # the reason names the photo
    if result.cached:
        log(f"{result.cached} embeddings reused from the cache")
    return [records[i] for i in result.ok], result.embeddings


def _gradcams(embedder: Embedder, artifacts: Path, sim: np.ndarray, g_emb: np.ndarray, query: list[Record],
              gallery: list[Record], cfg: EvalConfig, out: Path, log: Log,
              cosine: np.ndarray | None = None) -> list[Path]:
    """Each query's top match by ``sim`` (fused after re-ranking), labelled with the cosine."""
    from wildtrack.model import embedding_model, load_model
    from wildtrack.visualize.gradcam import find_last_conv_layer, gradcam_heatmap, save_gradcam_pair

    if cfg.gradcam == 0:
        return []
    model = getattr(embedder, "model", None) or embedding_model(load_model(artifacts))  # ONNX has no gradients
    layer = find_last_conv_layer(model) if model is not None else None
    if layer is None:
        log("no gradcam_*.png: the model has no convolutional feature map to explain")
        return []
    pictures = []
    best = np.argmax(sim, axis=1)
    cosine = sim if cosine is None else cosine
    one_per_turtle = list({q.identity: qi for qi, q in reversed(list(enumerate(query)))}.values())[: cfg.gradcam]
    for n, qi in enumerate(sorted(one_per_turtle)):
        q, match = query[qi], gallery[int(best[qi])]
        # files or s3:// objects (wildtrack.data.storage)
        image, match_image = load_photo(q.path, embedder.image_size), load_photo(match.path, embedder.image_size)
        heat = gradcam_heatmap(model, image, g_emb[int(best[qi])], layer_name=layer, normalise=False)
        match_heat = gradcam_heatmap(model, match_image, np.asarray(model(image[None].astype(np.float32)))[0],
                                     layer_name=layer, normalise=False)  # raw: the pair is drawn on one scale
        verdict = "same turtle" if match.identity == q.identity else "ANOTHER turtle"
        pictures.append(save_gradcam_pair(
            image, heat, match_image, match_heat, out / f"gradcam_{n}.png",
            f"query: {q.identity}, {Path(q.path).name}", f"top match: {match.identity}, {Path(match.path).name}",
            title=f"Why the model matched these two photos ({verdict}, cosine {cosine[qi, best[qi]]:.2f})"))
    return pictures


def _local_rerank(
    pipeline: MatchingPipeline, sim: np.ndarray, query: list[Record], gallery: list[Record], g_emb: np.ndarray,
    cfg: EvalConfig, log: Log, advance: Advance | None = None,
) -> tuple[RankedScores, dict, MatchingPipeline]:
    """Re-order each query's global top-K by local matching fused with the cosine; returns the scores (fused
    ranking, match probabilities - what the new-individual decision reads - and inliers), the fit's summary and
    the fitted pipeline.

    The pipeline (its calibration, identity-support weight and decision thresholds) is fitted on the gallery alone
    (its photos against its other encounters), never on the evaluation queries, and saved with the results.
    """
    from wildtrack.matching.fit import fit_pipeline

    t0 = time.perf_counter()
    fitted = fit_pipeline(pipeline, gallery, g_emb, seed=cfg.seed, projection_dims=cfg.local_dims,
                          progress=next_stage(advance, "fitting local re-ranking on the gallery"))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    local = fitted.inlier_matrix([r.path for r in query], [r.path for r in gallery], sim,
                                 progress=next_stage(advance, "re-ranking the queries"))
    per_query = (time.perf_counter() - t0) / max(len(query), 1)
    log(f"local re-ranking of the top {fitted.k}: fusion fitted on {fitted.pseudo_queries} gallery "
        f"pseudo-queries ({fit_s:.0f} s, identity weight {fitted.identity_weight}), {per_query:.2f} s per query")
    info = {**fitted.summary(), "seconds_per_query_local": round(per_query, 3)}
    fused = fitted.fused_matrix(sim, local, [r.identity for r in gallery])
    scores = RankedScores(sim, fitted.probability_matrix(sim, local), local, fused)
    return scores, info, fitted


def _encounter_figures(ranking: np.ndarray, scores: np.ndarray, query: list[Record], g_ids: list[str],
                       cfg: EvalConfig, score: str, catalogue_threshold: float | None = None) -> dict | None:
    """The field's unit: several photos of one encounter (one turtle, one day) identified together, the verdict
    of the most confident photo (:mod:`wildtrack.decide.encounter`); None without dated queries (no encounters to
    group)."""
    from wildtrack.decide.encounter import encounter_keys, encounter_report

    if all(r.date is None for r in query):
        return None
    figures = encounter_report(ranking, scores, [r.identity for r in query], g_ids, encounter_keys(query),
                               cfg.target_far, catalogue_threshold)
    figures["open_set"]["score"] = score
    return figures


DIAGNOSTIC = ("diagnostic: a threshold calibrated on these evaluation queries themselves (optimistic); the one "
              "searches use is operating_point's, fitted on the catalogue")


def _operating_point(fitted: MatchingPipeline, open_set: dict, encounters: dict | None) -> dict:
    """The thresholds `index build` fits on this gallery (the ones searches use), where they come from, their
    rates on the catalogue's pseudo-queries, and what they did on these evaluation queries."""
    from wildtrack.decide.policy import operating_point

    point = operating_point("match_probability", fitted.decision_threshold, fitted.encounter_threshold,
                            fitted.fit_report).to_dict()
    on_queries = {"photo": open_set.get("catalogue_threshold")}
    if encounters is not None:
        on_queries["encounter"] = encounters.get("open_set", {}).get("catalogue_threshold")
    return {**point, "on_evaluation_queries": on_queries}


def run_evaluation(
    data: str | Path | Dataset,
    artifacts: str | Path,
    out: str | Path,
    cfg: EvalConfig | None = None,
    log: Log = print,
    advance: Advance | None = None,
    backend: str = "auto",
    engine: Engine | None = None,
) -> EvaluationOutput:
    """Evaluate a trained model on a query/gallery split and write every output into ``out``.

    ``engine`` embeds the photos (and, with re-ranking, extracts their local features) on this machine or a
    cluster (:mod:`wildtrack.jobs`); a cluster's shards are staged under ``out`` and removed at the end.
    """
    cfg = cfg or EvalConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    split = make_split(dataset.records, cfg.split, seed=cfg.seed)
    embedder = load_embedder(artifacts, backend=backend)
    timings["load"] = time.perf_counter() - t0
    log(f"{cfg.split} split: {len(split.query)} queries, {len(split.gallery)} gallery images")
    announce_total(advance, len(split.query) + len(split.gallery))

    t0 = time.perf_counter()
    engine = engine or LocalEngine()
    job = (engine, artifacts, backend, out / STAGING_DIR)
    query, q_emb = _embed_records(embedder, split.query, advance, log, job)
    gallery, g_emb = _embed_records(embedder, split.gallery, advance, log, job)
    timings["embed"] = time.perf_counter() - t0
    timings["embed_images_per_s"] = (len(query) + len(gallery)) / max(timings["embed"], 1e-9)

    t0 = time.perf_counter()
    q_ids, g_ids = [r.identity for r in query], [r.identity for r in gallery]
    sim = cosine = cosine_similarity(q_emb, g_emb)
    result = retrieval_metrics(sim, q_ids, g_ids, ks=(1, 5, 10))
    open_set = {**calibrate_open_set(sim, q_ids, g_ids, cfg.target_far)[1], "score": "cosine"}
    timings["metrics"] = time.perf_counter() - t0
    extra: dict = {"backend": getattr(embedder, "backend", "keras"), "topk": cfg.topk}
    scores, pipeline, fitted = RankedScores(cosine), build_pipeline(cfg), None
    if cfg.rerank == "local":
        from wildtrack.matching.fit import RerankFitError

        t0 = time.perf_counter()
        try:
            cache = _cluster_features(engine, pipeline.extractor, query + gallery, dataset.root, out / STAGING_DIR,
                                      advance)
            if cache is not None:
                pipeline = pipeline.reading(cache)
            scores, info, fitted = _local_rerank(pipeline, sim, query, gallery, g_emb, cfg, log, advance)
        except RerankFitError as exc:
            log(f"local re-ranking skipped, global figures only: {exc}")
            extra["rerank_skipped"] = str(exc)
        else:
            timings["rerank"] = time.perf_counter() - t0
            global_only = result
            result = retrieval_metrics(scores.fused, q_ids, g_ids, ks=(1, 5, 10))
            extra["rerank"] = {**info, "global_only": {**global_only.headline(), "R@10": global_only.recall_at_k[10]},
                               "fused": {**result.headline(), "R@10": result.recall_at_k[10]}}
            fitted.save(out)  # complete (features, projection): load_pipeline(out) re-ranks as evaluated
            pipeline = fitted
            sim = scores.fused
            extra["open_set_cosine"] = open_set
            open_set = {**calibrate_open_set(scores.probability, q_ids, g_ids, cfg.target_far)[1],
                        "score": "match_probability"}
            if info["decision_threshold"] is not None and "note" not in open_set:  # what `index build` stores
                open_set["catalogue_threshold"] = open_set_rates(scores.probability, q_ids, g_ids,
                                                                 info["decision_threshold"])
    open_set["role"] = DIAGNOSTIC

    if fitted is not None:
        encounters = _encounter_figures(sim, scores.probability, query, g_ids, cfg, "match_probability",
                                        fitted.encounter_threshold)
    else:
        encounters = _encounter_figures(cosine, cosine, query, g_ids, cfg, "cosine")
    if encounters is not None:
        extra["encounters"] = encounters
        n_enc = encounters["num_encounters"]
        n_right, n_q = round(result.recall_at_k[1] * result.num_queries), result.num_queries
        log(f"encounters (their photos identified together): {round(encounters['accuracy'] * n_enc)} of {n_enc} "
            f"named right, against {n_right} of {n_q} single photos")
    chosen = None if fitted is None else _operating_point(fitted, open_set, encounters)

    t0 = time.perf_counter()
    panels, matches = retrieval_pictures(scores, query, gallery, cfg, out, pipeline)
    pictures = [*panels, *matches]
    pictures.append(plot_tsne(g_emb, g_ids, out / "tsne.png", max_points=cfg.tsne_max_points, seed=cfg.seed,
                              queries=(q_emb, q_ids)))
    pictures += _gradcams(embedder, Path(artifacts), sim, g_emb, query, gallery, cfg, out, log, cosine=cosine)
    timings["pictures"] = time.perf_counter() - t0

    report = MetricsReport.from_result(
        result, split=cfg.split, model_fingerprint=embedder.fingerprint,
        dataset_fingerprint={"root": str(dataset.root), "layout": dataset.layout, **dataset.fingerprint()},
        timings_s={k: round(v, 3) for k, v in timings.items()}, open_set=open_set, extra=extra,
        operating_point=chosen,
    )
    write_metrics_json(report, out / "metrics.json")
    write_report(out, report.model_dump(by_alias=True, mode="json"), [p.name for p in pictures],
                 artifacts=Path(artifacts))
    clear_staging(out)
    return EvaluationOutput(report, out, pictures)


def _cluster_features(engine: Engine, extractor: Extractor, records: list[Record], root: Path, stage: Path,
                      advance: Advance | None) -> FeatureCache | None:
    """On a cluster engine, every photo's local features extracted there into a staged store (None: locally,
    the matching reads them through the user's feature cache as it goes)."""
    if engine.name == "local":
        return None
    paths = [r.path for r in records]
    files = extract_features(engine, extractor, list(zip(photo_ids(paths, root), paths, strict=True)), stage,
                             next_stage(advance, "extracting local features"))
    return catalogue_feature_cache(extractor, stage, files, root)
