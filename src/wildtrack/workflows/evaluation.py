"""``run_evaluation``: split → embed → metrics.json → retrieval panels, t-SNE, Grad-CAM → report.html."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wildtrack.config import EvalConfig
from wildtrack.data import Dataset, Record, load_dataset, make_split
from wildtrack.embed import Embedder, embed_files_cached, load_embedder
from wildtrack.evaluate import (
    MetricsReport,
    RetrievalResult,
    calibrate_open_set,
    cosine_similarity,
    open_set_rates,
    rank_gallery,
    retrieval_metrics,
    write_metrics_json,
)
from wildtrack.images import load_image
from wildtrack.visualize.panels import PanelItem, choose_examples, panel_title, retrieval_panel
from wildtrack.visualize.report import write_report
from wildtrack.visualize.tsne import plot_tsne
from wildtrack.workflows import Advance, Log, announce_total, next_stage

if TYPE_CHECKING:
    from wildtrack.matching.gallery_fusion import GalleryFusion


@dataclass
class EvaluationOutput:
    report: MetricsReport
    out: Path
    pictures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _embed_records(
    embedder: Embedder, records: list[Record], advance: Advance | None, log: Log
) -> tuple[list[Record], np.ndarray]:
    result = embed_files_cached(embedder, [r.path for r in records], progress=advance)
    for i, why in result.failed:
        log(f"skipped {records[i].path}: {why}")
    if result.cached:
        log(f"{result.cached} embeddings reused from the cache")
    return [records[i] for i in result.ok], result.embeddings


def _panels(
    result: RetrievalResult, sim: np.ndarray, query: list[Record], gallery: list[Record], cfg: EvalConfig, out: Path,
    cosine: np.ndarray | None = None, reranked: bool = False,
) -> list[Path]:
    """Ranked by ``sim`` (fused scores after re-ranking); labelled with the cosine, which a reader can compare.
    When the final ranking names every query right, one failure of the global ranking is shown instead of none."""
    cosine = sim if cosine is None else cosine
    shown = [(qi, sim, result.first_correct_rank[qi], ", re-ranked" if reranked else "")
             for qi in choose_examples(result.first_correct_rank, cfg.examples, seed=cfg.seed)]
    if reranked and cfg.examples and not (result.first_correct_rank > 0).any():
        global_ranks = retrieval_metrics(cosine, [r.identity for r in query], [r.identity for r in gallery],
                                         ks=(1,)).first_correct_rank
        failures = choose_examples(np.where(global_ranks > 0, global_ranks, -1), 1, seed=cfg.seed)
        shown[len(shown) - len(failures):] = [(qi, cosine, global_ranks[qi], ", global ranking before re-ranking")
                                              for qi in failures]
    pictures = []
    for n, (qi, scores, rank, how) in enumerate(shown):
        q = query[qi]
        hits = [PanelItem(gallery[j].path, gallery[j].identity, float(cosine[qi, j]),
                          gallery[j].identity == q.identity) for j in rank_gallery(scores[qi:qi + 1])[0, : cfg.topk]]
        pictures.append(retrieval_panel(PanelItem(q.path, q.identity, None, None), hits,
                                        out / f"retrieval_example_{n}.png",
                                        title=panel_title(q.identity, q.date, int(rank), how)))
    return pictures


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
        image, match_image = load_image(q.path, embedder.image_size), load_image(match.path, embedder.image_size)
        heat = gradcam_heatmap(model, image, g_emb[int(best[qi])], layer_name=layer)
        match_heat = gradcam_heatmap(model, match_image, np.asarray(model(image[None].astype(np.float32)))[0],
                                     layer_name=layer)
        verdict = "same turtle" if match.identity == q.identity else "ANOTHER turtle"
        pictures.append(save_gradcam_pair(
            image, heat, match_image, match_heat, out / f"gradcam_{n}.png",
            f"query: {q.identity}, {Path(q.path).name}", f"top match: {match.identity}, {Path(match.path).name}",
            title=f"Why the model matched these two photos ({verdict}, cosine {cosine[qi, best[qi]]:.2f})"))
    return pictures


def _local_rerank(
    sim: np.ndarray, query: list[Record], gallery: list[Record], g_emb: np.ndarray, cfg: EvalConfig, log: Log,
    advance: Advance | None = None,
) -> tuple[np.ndarray, np.ndarray, dict, GalleryFusion]:
    """Re-order each query's global top-K by RootSIFT + RANSAC inliers fused with the cosine; returns the fused
    ranking scores, the match probabilities (what the new-individual decision reads), the fit's summary and
    the fit itself.

    The fusion (and its identity-support weight and decision threshold) is fitted on the gallery alone (its
    photos against its other encounters), never on the evaluation queries, and saved with the results.
    """
    from wildtrack.matching.collect import local_scores_for_shortlist
    from wildtrack.matching.fit import fit_gallery_fusion
    from wildtrack.matching.fusion import fused_similarity, match_probabilities
    from wildtrack.matching.reranker import local_reranker

    reranker = local_reranker(cfg.rerank_k, cfg.local_focus, max_side=cfg.local_max_side,
                              max_keypoints=cfg.local_keypoints)
    t0 = time.perf_counter()
    fitted = fit_gallery_fusion(gallery, g_emb, cfg.rerank_k, reranker, seed=cfg.seed,
                                projection_dims=cfg.local_dims, fusion_features=cfg.fusion_features,
                                progress=next_stage(advance, "fitting local re-ranking on the gallery"))
    fit_s = time.perf_counter() - t0
    reranker = reranker.with_projection(fitted.projection)  # match as the fit did
    t0 = time.perf_counter()
    local = local_scores_for_shortlist([r.path for r in query], [r.path for r in gallery], sim, cfg.rerank_k,
                                       reranker, next_stage(advance, "re-ranking the queries"))
    per_query = (time.perf_counter() - t0) / max(len(query), 1)
    log(f"local re-ranking of the top {cfg.rerank_k}: fusion fitted on {fitted.pseudo_queries} gallery "
        f"pseudo-queries ({fit_s:.0f} s, identity weight {fitted.identity_weight}), {per_query:.2f} s per query")
    info = {**fitted.summary(), "seconds_per_query_local": round(per_query, 3)}
    fused = fused_similarity(sim, local, fitted.fusion, cfg.rerank_k, [r.identity for r in gallery],
                             fitted.identity_weight)
    return fused, match_probabilities(sim, local, fitted.fusion, cfg.rerank_k), info, fitted


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


def run_evaluation(
    data: str | Path | Dataset,
    artifacts: str | Path,
    out: str | Path,
    cfg: EvalConfig | None = None,
    log: Log = print,
    advance: Advance | None = None,
    backend: str = "auto",
) -> EvaluationOutput:
    """Evaluate a trained model on a query/gallery split and write every output into ``out``."""
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
    query, q_emb = _embed_records(embedder, split.query, advance, log)
    gallery, g_emb = _embed_records(embedder, split.gallery, advance, log)
    timings["embed"] = time.perf_counter() - t0
    timings["embed_images_per_s"] = (len(query) + len(gallery)) / max(timings["embed"], 1e-9)

    t0 = time.perf_counter()
    q_ids, g_ids = [r.identity for r in query], [r.identity for r in gallery]
    sim = cosine = cosine_similarity(q_emb, g_emb)
    result = retrieval_metrics(sim, q_ids, g_ids, ks=(1, 5, 10))
    open_set = {**calibrate_open_set(sim, q_ids, g_ids, cfg.target_far)[1], "score": "cosine"}
    timings["metrics"] = time.perf_counter() - t0
    extra: dict = {"backend": getattr(embedder, "backend", "keras"), "topk": cfg.topk}
    reranked = False
    if cfg.rerank == "local":
        from wildtrack.matching.fit import RerankFitError

        t0 = time.perf_counter()
        try:
            fused, probabilities, info, fitted = _local_rerank(sim, query, gallery, g_emb, cfg, log, advance)
        except RerankFitError as exc:
            log(f"local re-ranking skipped, global figures only: {exc}")
            extra["rerank_skipped"] = str(exc)
        else:
            timings["rerank"] = time.perf_counter() - t0
            global_only = result
            result = retrieval_metrics(fused, q_ids, g_ids, ks=(1, 5, 10))
            extra["rerank"] = {**info, "global_only": {**global_only.headline(), "R@10": global_only.recall_at_k[10]},
                               "fused": {**result.headline(), "R@10": result.recall_at_k[10]}}
            fitted.save(out)  # complete (features, projection): GalleryFusion.load(out) re-ranks as evaluated
            sim, reranked = fused, True
            extra["open_set_cosine"] = open_set
            open_set = {**calibrate_open_set(probabilities, q_ids, g_ids, cfg.target_far)[1],
                        "score": "match_probability"}
            if info["decision_threshold"] is not None and "note" not in open_set:  # what `index build` stores
                open_set["catalogue_threshold"] = open_set_rates(probabilities, q_ids, g_ids,
                                                                 info["decision_threshold"])

    if reranked:
        encounters = _encounter_figures(sim, probabilities, query, g_ids, cfg, "match_probability",
                                        fitted.encounter_threshold)
    else:
        encounters = _encounter_figures(cosine, cosine, query, g_ids, cfg, "cosine")
    if encounters is not None:
        extra["encounters"] = encounters
        n_enc = encounters["num_encounters"]
        n_right, n_q = round(result.recall_at_k[1] * result.num_queries), result.num_queries
        log(f"encounters (their photos identified together): {round(encounters['accuracy'] * n_enc)} of {n_enc} "
            f"named right, against {n_right} of {n_q} single photos")

    t0 = time.perf_counter()
    pictures = _panels(result, sim, query, gallery, cfg, out, cosine=cosine, reranked=reranked)
    pictures.append(plot_tsne(g_emb, g_ids, out / "tsne.png", max_points=cfg.tsne_max_points, seed=cfg.seed,
                              queries=(q_emb, q_ids)))
    pictures += _gradcams(embedder, Path(artifacts), sim, g_emb, query, gallery, cfg, out, log, cosine=cosine)
    timings["pictures"] = time.perf_counter() - t0

    report = MetricsReport.from_result(
        result, split=cfg.split, model_fingerprint=embedder.fingerprint,
        dataset_fingerprint={"root": str(dataset.root), "layout": dataset.layout, **dataset.fingerprint()},
        timings_s={k: round(v, 3) for k, v in timings.items()}, open_set=open_set, extra=extra,
    )
    write_metrics_json(report, out / "metrics.json")
    write_report(out, report.model_dump(by_alias=True, mode="json"), [p.name for p in pictures],
                 artifacts=Path(artifacts))
    return EvaluationOutput(report, out, pictures)
