"""One photo against the catalogue: ranked images, identities, and the new-individual verdict."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from wildtrack.embed import embed_image, load_embedder
from wildtrack.index import GalleryIndex
from wildtrack.match.identity import aggregate_identities, decide


def search_image(image: str | Path, index_dir: str | Path, artifacts: str | Path, topk: int = 5,
                 backend: str = "auto", threshold: float | None = None) -> dict[str, Any]:
    embedder = load_embedder(artifacts, backend=backend)
    index = GalleryIndex.load(index_dir, expected_model_fingerprint=embedder.fingerprint)
    vector = embed_image(embedder, image)
    hits = index.search(vector, k=max(topk, 20))[0]
    identities = aggregate_identities(hits)
    threshold = threshold if threshold is not None else index.decision_threshold
    decision = decide(identities, threshold)
    return {
        "image": str(image),
        "decision": {"identity": decision.identity, "score": decision.score, "is_unknown": decision.is_unknown,
                     "threshold": threshold},
        "identities": [asdict(s) for s in identities[:topk]],
        "hits": [asdict(h) for h in hits[:topk]],
    }
