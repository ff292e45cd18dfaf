"""The FAISS side of the catalogue: which structure to build for a kind and size, and how to search it.

Every structure uses the inner product over unit vectors, so scores are cosine similarities. The spec returned
by :func:`index_spec` is stored in the manifest, so a loaded index searches with the parameters it was built
with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import faiss
import numpy as np

from wildtrack.index.types import Hit, MetaRow

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64
IVF_MIN_SIZE = 10_000  # below this exact search takes well under a millisecond and IVF cannot train well
IVF_POINTS_PER_CENTROID = 64  # k-means sample cap: stable centroids with a bounded build time
IVF_TRAIN_ITERS = 20

IndexKind = Literal["flat", "hnsw", "ivf"]
KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")


def index_spec(kind: str, n: int, ef_search: int, ef_construction: int, nprobe: int | None) -> dict[str, Any]:
    """Requested kind, what is actually built, and its parameters (stored in the manifest)."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
    spec: dict[str, Any] = {"kind": kind, "effective_kind": kind, "metric": "inner_product", "params": {}, "note": None}
    if kind == "hnsw":
        spec["params"] = {"M": HNSW_M, "ef_construction": int(ef_construction), "ef_search": int(ef_search)}
    elif kind == "ivf" and n < IVF_MIN_SIZE:
        spec["effective_kind"] = "flat"
        spec["note"] = (
            f"ivf needs >= {IVF_MIN_SIZE} images to train (have {n}); using exact flat search, which is fast "
            f"at this size. Rebuild as ivf once the catalogue grows."
        )
    elif kind == "ivf":
        nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
        probe = nprobe or max(16, nlist // 8)
        train = min(n, nlist * IVF_POINTS_PER_CENTROID)
        spec["params"] = {
            "nlist": nlist,
            "nprobe": int(min(probe, nlist)),
            "train_size": train,
            "train_iters": IVF_TRAIN_ITERS,
        }
    return spec


def make_faiss(emb: np.ndarray, spec: Mapping[str, Any]) -> Any:
    """A new faiss index over ``emb`` (trained first for ivf)."""
    dim, p, kind = emb.shape[1], spec["params"], spec["effective_kind"]
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.max_points_per_centroid = IVF_POINTS_PER_CENTROID
        index.cp.niter = IVF_TRAIN_ITERS
        index.train(emb)
        index.nprobe = p["nprobe"]
    else:
        index = faiss.IndexFlatIP(dim)
    if len(emb):
        index.add(emb)
    return index


def search_params(spec: Mapping[str, Any], k: int, ef_search: int | None, nprobe: int | None) -> Any:
    """Per-search parameters: efSearch never below ``k`` for hnsw, the stored or given nprobe for ivf."""
    if spec["effective_kind"] == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=max(k, ef_search or spec["params"]["ef_search"]))
    if spec["effective_kind"] == "ivf":
        return faiss.SearchParametersIVF(nprobe=nprobe or spec["params"]["nprobe"])
    return None


def to_hits(rows: list[MetaRow], scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
    """One query's faiss answer as hits, best first, ties broken by row order."""
    found = sorted((-s, i) for s, i in zip(scores.tolist(), ids.tolist(), strict=True) if i >= 0)
    picked = [(rows[i], -neg) for neg, i in found]
    return [Hit(r.image_id, r.path, r.identity, r.date, s, rank) for rank, (r, s) in enumerate(picked, start=1)]
