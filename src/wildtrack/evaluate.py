"""Retrieval metrics for re-identification: is the right individual near the top of the gallery?

Pure numpy maths, so the numbers can be checked by hand and do not depend on the model code.
Conventions (also written into the report):

* Rates are fractions in [0, 1], not percentages.
* A query whose identity has no gallery image cannot be retrieved; it is excluded from R@K, mAP and the
  identity accuracy and counted in ``num_queries_without_match`` (open-set figures handle those).
* Gallery ties are broken by gallery index (stable sort), so a run is reproducible to the last digit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wildtrack.vectors import rank_gallery, unit_rows  # rank_gallery: re-exported for metrics users

__all__ = [
    "MetricsReport",
    "RetrievalResult",
    "calibrate_open_set",
    "calibrate_threshold",
    "cosine_similarity",
    "genuine_impostor_scores",
    "metrics_json_schema",
    "open_set_metrics",
    "open_set_rates",
    "rank_gallery",
    "retrieval_metrics",
    "write_metrics_json",
]



def _l2_normalise(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, dim) array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return unit_rows(x)


def cosine_similarity(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(Q, G) cosine similarities. Inputs are re-normalised: a stale or quantised index may drift from 1."""
    q = _l2_normalise(queries, "queries")
    g = _l2_normalise(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"embedding sizes differ: queries {q.shape[1]}, gallery {g.shape[1]}")
    return (q @ g.T).astype(np.float32, copy=False)


@dataclass
class RetrievalResult:
    """Everything :func:`retrieval_metrics` measures; per-query arrays are aligned with the input queries."""

    recall_at_k: dict[int, float]
    mAP: float
    top1_identity_accuracy: float
    num_queries: int  # queries evaluated (their identity is in the gallery)
    num_queries_without_match: int
    num_gallery: int
    num_ids: int  # distinct identities over queries and gallery
    first_correct_rank: np.ndarray  # 0-based rank of the first correct gallery image; -1 when none exists
    average_precision: np.ndarray  # per query; NaN when the query has no match
    top1_identity: np.ndarray  # best-image-per-identity prediction for every query
    per_identity: dict[str, dict[str, float | int]] = field(default_factory=dict)

    def headline(self) -> dict[str, float]:
        """``{"R@1": …, "R@5": …, "mAP": …}`` in the spelling metrics.json uses."""
        out = {f"R@{k}": v for k, v in self.recall_at_k.items()}
        out["mAP"] = self.mAP
        return out


def _as_ids(ids: Sequence[Any] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray([str(i) for i in ids], dtype=object)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _best_per_identity(sim: np.ndarray, gallery_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, n_ids) best similarity of each gallery identity, with the sorted identity names."""
    names, codes = np.unique(gallery_ids.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(names)))
    return np.maximum.reduceat(sim[:, order], starts, axis=1), names


def _rank_statistics(
    sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, max_cells: int = 4_000_000
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: 0-based rank of the first correct gallery image (-1: none) and AP (NaN: none).

    Works through the queries in blocks so a 10k × 50k evaluation does not need several (Q, G) float64
    matrices at once.
    """
    _, codes = np.unique(np.concatenate([q_ids, g_ids]).astype(str), return_inverse=True)
    q_codes, g_codes = codes[: len(q_ids)], codes[len(q_ids):]
    first_rank = np.full(len(q_ids), -1, dtype=np.int64)
    ap = np.full(len(q_ids), np.nan)
    positions = np.arange(1, len(g_ids) + 1, dtype=np.float64)
    step = max(1, max_cells // len(g_ids))
    for start in range(0, len(q_ids), step):
        block = slice(start, start + step)
        matches = g_codes[rank_gallery(sim[block])] == q_codes[block, None]  # right turtle at this rank?
        has_match = matches.any(axis=1)
        # fast-reid AP: precision (hits so far / rank) at each correct rank, averaged over correct images.
        precision_sum = (np.cumsum(matches, axis=1, dtype=np.float64) / positions * matches).sum(axis=1)
        num_pos = matches.sum(axis=1)
        first_rank[block] = np.where(has_match, matches.argmax(axis=1), -1)
        ap[block] = np.where(has_match, precision_sum / np.maximum(num_pos, 1), np.nan)
    return first_rank, ap


def retrieval_metrics(
    sim: np.ndarray,
    query_ids: Sequence[Any] | np.ndarray,
    gallery_ids: Sequence[Any] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> RetrievalResult:
    """Recall@K, mAP and identity accuracy of a (Q, G) similarity matrix.

    AP follows fast-reid: the mean, over a query's correct gallery images, of the precision at each
    one's rank in the full gallery ranking. Identity accuracy scores each gallery identity by its best
    image; it equals R@1 except when exact ties are broken differently (here by identity name).
    """
    sim = np.asarray(sim, dtype=np.float32)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a 2-D (queries, gallery) array, got shape {sim.shape}")
    q_ids = _as_ids(query_ids, "query_ids")
    g_ids = _as_ids(gallery_ids, "gallery_ids")
    if sim.shape != (len(q_ids), len(g_ids)):
        raise ValueError(
            f"similarity shape {sim.shape} does not match {len(q_ids)} queries × {len(g_ids)} gallery items"
        )
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity contains NaN or infinite values")

    first_rank, ap = _rank_statistics(sim, q_ids, g_ids)
    has_match = first_rank >= 0
    if not has_match.any():
        raise ValueError("no query identity appears in the gallery; retrieval metrics are undefined")

    best, names = _best_per_identity(sim, g_ids)
    top1_identity = names[best.argmax(axis=1)]  # argmax: first maximum, i.e. ties go to the first name
    valid_first = first_rank[has_match]
    recall = {int(k): float(np.mean(valid_first < int(k))) for k in ks}
    top1_acc = float(np.mean(top1_identity[has_match] == q_ids[has_match]))

    per_identity: dict[str, dict[str, float | int]] = {}
    for ident in sorted(set(q_ids[has_match])):
        sel = has_match & (q_ids == ident)
        per_identity[str(ident)] = {
            "R@1": float(np.mean(first_rank[sel] < 1)),
            "R@5": float(np.mean(first_rank[sel] < 5)),
            "mAP": float(np.mean(ap[sel])),
            "num_queries": int(sel.sum()),
        }

    return RetrievalResult(
        recall_at_k=recall,
        mAP=float(np.mean(ap[has_match])),
        top1_identity_accuracy=top1_acc,
        num_queries=int(has_match.sum()),
        num_queries_without_match=int((~has_match).sum()),
        num_gallery=len(g_ids),
        num_ids=len(set(q_ids) | set(g_ids)),
        first_correct_rank=first_rank,
        average_precision=ap,
        top1_identity=top1_identity.astype(str),
        per_identity=per_identity,
    )


# --------------------------------------------------------------------------------------------- open set


def genuine_impostor_scores(
    sim: np.ndarray, query_ids: Sequence[Any] | np.ndarray, gallery_ids: Sequence[Any] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: best score to its own identity (genuine) and best score to any other one (impostor).

    The impostor score is what a never-seen individual would most plausibly look like to the system (its
    nearest wrong turtle), so a threshold can be calibrated on a closed-set split. Queries without a
    gallery match give no genuine score; a gallery with a single identity gives no impostor scores.
    """
    sim = np.asarray(sim, dtype=np.float32)
    q_ids = _as_ids(query_ids, "query_ids")
    g_ids = _as_ids(gallery_ids, "gallery_ids")
    if sim.shape != (len(q_ids), len(g_ids)):
        raise ValueError(f"similarity shape {sim.shape} does not match {len(q_ids)} × {len(g_ids)}")
    best, names = _best_per_identity(sim, g_ids)
    own = names[None, :] == q_ids[:, None]
    genuine = np.where(own, best, -np.inf).max(axis=1)
    impostor = np.where(own, -np.inf, best).max(axis=1)
    return genuine[own.any(axis=1)], impostor[(~own).any(axis=1)]


def open_set_metrics(scores: np.ndarray, is_known: np.ndarray, threshold: float) -> dict[str, Any]:
    """True-accept rate on known queries and false-accept rate on unknown ones; accept means score ≥ t.

    ``scores`` is each query's best gallery similarity. A rate with no queries to measure it is None
    (JSON-friendly, unlike NaN).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    known = np.asarray(is_known, dtype=bool).ravel()
    if scores.shape != known.shape:
        raise ValueError(f"scores ({scores.size}) and is_known ({known.size}) differ in length")
    if scores.size == 0:
        raise ValueError("scores is empty")
    accepted = scores >= threshold
    n_known, n_unknown = int(known.sum()), int((~known).sum())
    return {
        "threshold": float(threshold),
        "TAR": float(accepted[known].mean()) if n_known else None,
        "FAR": float(accepted[~known].mean()) if n_unknown else None,
        "num_known": n_known,
        "num_unknown": n_unknown,
    }


def calibrate_threshold(
    genuine_scores: np.ndarray, impostor_scores: np.ndarray, target_far: float = 0.05
) -> float:
    """The smallest threshold whose false-accept rate (impostors with score ≥ t) is ≤ ``target_far``.

    Smallest, because every higher threshold only rejects more genuine matches. When k impostors may be
    accepted, the threshold sits just above the (k+1)-th highest impostor score (one float step, so that
    score itself is rejected). See :func:`genuine_impostor_scores` for what genuine/impostor mean here;
    the genuine scores only bound the threshold when every impostor may be accepted.
    """
    genuine = np.asarray(genuine_scores, dtype=np.float64).ravel()
    impostor = np.asarray(impostor_scores, dtype=np.float64).ravel()
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target_far must be in [0, 1], got {target_far}")
    if impostor.size == 0:
        raise ValueError("no impostor scores: a threshold needs at least two identities to calibrate")
    if not (np.isfinite(impostor).all() and np.isfinite(genuine).all()):
        raise ValueError("scores contain NaN or infinite values")
    allowed = int(np.floor(target_far * impostor.size + 1e-9))  # impostors that may be accepted
    if allowed >= impostor.size:
        return float(np.concatenate([genuine, impostor]).min())
    ranked = np.sort(impostor)[::-1]
    return float(np.nextafter(ranked[allowed], np.inf))


def calibrate_open_set(
    scores: np.ndarray, query_ids: Sequence[Any] | np.ndarray, gallery_ids: Sequence[Any] | np.ndarray,
    target_far: float = 0.05,
) -> tuple[float | None, dict[str, Any]]:
    """The "new individual" threshold for a (Q, G) score matrix, and its true/false-accept rates on these
    queries; ``(None, note)`` when there are not enough queries or identities to calibrate.

    Each query's best wrong identity stands in for what an unknown turtle would score (see
    :func:`genuine_impostor_scores`). Masked (non-finite) scores are left out.
    """
    genuine, impostor = _finite_genuine_impostor(scores, query_ids, gallery_ids)
    if len(genuine) == 0 or len(impostor) == 0:
        return None, {"note": "not enough queries to calibrate an unknown threshold"}
    threshold = calibrate_threshold(genuine, impostor, target_far)
    return threshold, {**open_set_rates(scores, query_ids, gallery_ids, threshold), "target_far": target_far,
                       "method": "genuine = best score to own identity; impostor = best score to any other identity"}


def open_set_rates(
    scores: np.ndarray, query_ids: Sequence[Any] | np.ndarray, gallery_ids: Sequence[Any] | np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """True/false-accept rates of a given threshold on these queries (e.g. one calibrated elsewhere)."""
    genuine, impostor = _finite_genuine_impostor(scores, query_ids, gallery_ids)
    known = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    return open_set_metrics(np.concatenate([genuine, impostor]), known, threshold)


def _finite_genuine_impostor(scores: np.ndarray, query_ids: Any, gallery_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    genuine, impostor = genuine_impostor_scores(scores, query_ids, gallery_ids)
    return genuine[np.isfinite(genuine)], impostor[np.isfinite(impostor)]


# ----------------------------------------------------------------------------------------- metrics.json


class MetricsReport(BaseModel):
    """The schema of ``metrics.json``; the headline keys keep their usual spelling via aliases."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    r_at_1: float = Field(alias="R@1", ge=0, le=1)
    r_at_5: float = Field(alias="R@5", ge=0, le=1)
    r_at_10: float = Field(alias="R@10", ge=0, le=1)
    mean_ap: float = Field(alias="mAP", ge=0, le=1)
    num_queries: int = Field(ge=0)  # queries evaluated, i.e. the denominator of R@K and mAP
    num_gallery: int = Field(ge=0)
    num_ids: int = Field(ge=0)  # distinct identities over queries and gallery
    top1_identity_accuracy: float = Field(ge=0, le=1)
    num_queries_without_match: int = Field(default=0, ge=0)
    split: str
    model_fingerprint: str
    dataset_fingerprint: dict[str, Any] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict)
    per_identity: dict[str, dict[str, float | int]] = Field(default_factory=dict)
    open_set: dict[str, Any] | None = None  # diagnostic: a threshold calibrated on the evaluation queries themselves
    # The thresholds searches use (fitted on the catalogue at a false-accept target), in one sentence, with their
    # true/false-accept rates on the catalogue's pseudo-queries and on these queries; None without re-ranking.
    operating_point: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_result(
        cls,
        result: RetrievalResult,
        *,
        split: str,
        model_fingerprint: str,
        dataset_fingerprint: dict[str, Any] | None = None,
        timings_s: dict[str, float] | None = None,
        open_set: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        operating_point: dict[str, Any] | None = None,
    ) -> MetricsReport:
        """Build a report from :func:`retrieval_metrics` output (which must include k = 1, 5, 10)."""
        missing = {1, 5, 10} - set(result.recall_at_k)
        if missing:
            raise ValueError(f"the result lacks Recall@{sorted(missing)}; compute it with ks=(1, 5, 10)")
        return cls.model_validate(
            {
                "R@1": result.recall_at_k[1],
                "R@5": result.recall_at_k[5],
                "R@10": result.recall_at_k[10],
                "mAP": result.mAP,
                "num_queries": result.num_queries,
                "num_gallery": result.num_gallery,
                "num_ids": result.num_ids,
                "top1_identity_accuracy": result.top1_identity_accuracy,
                "num_queries_without_match": result.num_queries_without_match,
                "split": split,
                "model_fingerprint": model_fingerprint,
                "dataset_fingerprint": dataset_fingerprint or {},
                "timings_s": timings_s or {},
                "per_identity": result.per_identity,
                "open_set": open_set,
                "operating_point": operating_point,
                "extra": extra or {},
            }
        )


def metrics_json_schema() -> dict[str, Any]:
    """JSON Schema of metrics.json (by alias), for consumers that validate without importing WildTrack."""
    return MetricsReport.model_json_schema(by_alias=True)


def write_metrics_json(report: MetricsReport, path: str | Path) -> Path:
    """Write metrics.json atomically, so a crashed run never leaves half a file for a dashboard to read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.model_dump(mode="json", by_alias=True), indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
