"""Photos against the catalogue: ranked images, identities, and the new-individual verdict, per photo or for
several photos of one encounter together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.decide.identity import Decision
from wildtrack.embed import embed_photo
from wildtrack.features import Source
from wildtrack.search import CatalogueSearch, Identification, open_catalogue


def search_image(image: str | Path, index_dir: str | Path, artifacts: str | Path, topk: int = 5,
                 backend: str = "auto", threshold: float | None = None, rerank: bool = True) -> dict[str, Any]:
    """Search the catalogue as the web service does (:class:`~wildtrack.search.CatalogueSearch`): when the index
    was built with ``--rerank local`` (a ``fusion.json`` beside it) the global shortlist is re-ordered by local
    matching and the new-individual decision reads the match probability, else the cosine; ``threshold``
    overrides the threshold of whichever score decides."""
    return search_images([image], index_dir, artifacts, topk, backend, threshold, rerank)[0]


def search_images(images: Sequence[str | Path], index_dir: str | Path, artifacts: str | Path, topk: int = 5,
                  backend: str = "auto", threshold: float | None = None, rerank: bool = True) -> list[dict[str, Any]]:
    """:func:`search_image` for each photo on its own, loading the model and the index once."""
    embedder, searcher = open_catalogue(index_dir, artifacts, backend, threshold, rerank)
    return [photo_answer(image, searcher.identify(*embed_photo(embedder, image), topk), topk) for image in images]


def search_encounter(images: Sequence[str | Path], index_dir: str | Path, artifacts: str | Path, topk: int = 5,
                     backend: str = "auto", threshold: float | None = None, rerank: bool = True) -> dict[str, Any]:
    """Several photos of one encounter identified together
    (:meth:`~wildtrack.search.CatalogueSearch.identify_encounter`): the verdict of the most confident photo,
    decided against the encounter threshold, the candidate turtles pooled over the photos, and each photo's
    own answer."""
    if not images:
        raise ValueError("an encounter needs at least one photo")
    embedder, searcher = open_catalogue(index_dir, artifacts, backend, threshold, rerank)
    prepared = [embed_photo(embedder, image) for image in images]
    return encounter_answer(searcher, np.stack([v for v, _ in prepared]), images, topk, [p for _, p in prepared])


def encounter_answer(searcher: CatalogueSearch, vectors: np.ndarray, images: Sequence[str | Path],
                     topk: int, local: Sequence[Source] | None = None) -> dict[str, Any]:
    """:func:`search_encounter` for photos already embedded (one row of ``vectors`` per image; ``local``: what
    local matching reads of each, default the files)."""
    answer = searcher.identify_encounter(vectors, list(local if local is not None else images), topk)
    paths = {h.image_id: h.path for photo in answer.photos for h in photo.hits}  # every hit, not only the top-k
    return {
        "images": [str(image) for image in images],
        "decision": _decision(answer.decision, answer.threshold, answer.score_kind),
        "reranked": answer.reranked,
        "identities": [{**asdict(s), "best_image_path": paths.get(s.best_image_id)}
                       for s in answer.decision.candidates[:topk]],
        "photos": [photo_answer(image, photo, topk) for image, photo in zip(images, answer.photos, strict=True)],
    }


def photo_answer(image: str | Path, answer: Identification, topk: int) -> dict[str, Any]:
    """One photo's identification as JSON-ready data (what ``wildtrack search --json`` prints)."""
    paths = {h.image_id: h.path for h in answer.hits}
    return {
        "image": str(image),
        "decision": _decision(answer.decision, answer.threshold, answer.score_kind),
        "reranked": answer.reranked,
        # ordered by "score" (the decision's score_kind), with the best image's cosine and inliers beside it
        "identities": [{**asdict(s), "best_image_path": paths.get(s.best_image_id)}
                       for s in answer.decision.candidates[:topk]],
        "hits": [asdict(h) for h in answer.hits[:topk]],
    }


def _decision(decision: Decision, threshold: float | None, score_kind: str) -> dict[str, Any]:
    return {"identity": decision.identity, "score": decision.score, "is_unknown": decision.is_unknown,
            "threshold": threshold, "score_kind": score_kind}
