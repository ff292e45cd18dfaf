"""One photo against the catalogue: ranked images, identities, and the new-individual verdict."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from wildtrack.embed import embed_image, load_embedder
from wildtrack.index import GalleryIndex
from wildtrack.match.identity import aggregate_identities, decide
from wildtrack.match.rerank import GalleryFusion, decide_reranked, rerank_hits


def search_image(image: str | Path, index_dir: str | Path, artifacts: str | Path, topk: int = 5,
                 backend: str = "auto", threshold: float | None = None, rerank: bool = True) -> dict[str, Any]:
    """Search the catalogue; when the index was built with ``--rerank local`` (a ``fusion.json`` beside it), the
    global shortlist is re-ordered by local matching before the identity is chosen, and the new-individual
    decision reads the match probability (``threshold`` then overrides the fitted probability threshold) instead
    of the cosine (``threshold`` overrides the index's cosine threshold)."""
    embedder = load_embedder(artifacts, backend=backend)
    index = GalleryIndex.load(index_dir, expected_model_fingerprint=embedder.fingerprint)
    vector = embed_image(embedder, image)
    fitted = GalleryFusion.load(index_dir) if rerank else None
    hits = index.search(vector, k=max(topk, 20, fitted.k if fitted else 0))[0]
    reranked = fitted is not None and index.data_root is not None
    if reranked:
        hits = rerank_hits(image, hits, Path(index.data_root), fitted)
        threshold = threshold if threshold is not None else fitted.decision_threshold
        decision = decide_reranked(hits, threshold)
    else:
        threshold = threshold if threshold is not None else index.decision_threshold
        decision = decide(aggregate_identities(hits), threshold)
    identities = list(decision.candidates)
    return {
        "image": str(image),
        "decision": {"identity": decision.identity, "score": decision.score, "is_unknown": decision.is_unknown,
                     "threshold": threshold, "score_kind": "match_probability" if reranked else "cosine"},
        "reranked": reranked,
        "identities": [asdict(s) for s in identities[:topk]],
        "hits": [asdict(h) for h in hits[:topk]],
    }
