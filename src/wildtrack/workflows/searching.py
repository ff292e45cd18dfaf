"""One photo against the catalogue: ranked images, identities, and the new-individual verdict."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from wildtrack.embed import embed_image, load_embedder
from wildtrack.index import GalleryIndex
from wildtrack.search import CatalogueSearch


def search_image(image: str | Path, index_dir: str | Path, artifacts: str | Path, topk: int = 5,
                 backend: str = "auto", threshold: float | None = None, rerank: bool = True) -> dict[str, Any]:
    """Search the catalogue as the web service does (:class:`~wildtrack.search.CatalogueSearch`): when the index
    was built with ``--rerank local`` (a ``fusion.json`` beside it) the global shortlist is re-ordered by local
    matching and the new-individual decision reads the match probability, else the cosine; ``threshold``
    overrides the threshold of whichever score decides."""
    embedder = load_embedder(artifacts, backend=backend)
    index = GalleryIndex.load(index_dir, expected_model_fingerprint=embedder.fingerprint)
    searcher = CatalogueSearch(index, index_dir, threshold, rerank=rerank)
    answer = searcher.identify(embed_image(embedder, image), image, topk)
    decision = answer.decision
    return {
        "image": str(image),
        "decision": {"identity": decision.identity, "score": decision.score, "is_unknown": decision.is_unknown,
                     "threshold": answer.threshold, "score_kind": answer.score_kind},
        "reranked": answer.reranked,
        "identities": [asdict(s) for s in decision.candidates[:topk]],
        "hits": [asdict(h) for h in answer.hits[:topk]],
    }
