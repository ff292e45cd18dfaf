"""One photo against a loaded catalogue: global search, local re-ranking when the index was fitted for it, and
the "which turtle, or a new one?" decision.

``wildtrack search`` and the web service both answer through :class:`CatalogueSearch`, so a photo gets the same
hits, evidence and verdict from either: the rules below (which score decides, which threshold applies, where
the catalogue's photos are) exist once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from wildtrack.config import MAX_RERANK_K, MAX_SEARCH_K
from wildtrack.data import storage
from wildtrack.decide.encounter import pool_encounter
from wildtrack.decide.identity import Decision, aggregate_identities, decide, decide_reranked
from wildtrack.decide.threshold import choose_thresholds
from wildtrack.embed import Embedder, load_embedder
from wildtrack.features import Source
from wildtrack.features.store import open_store
from wildtrack.index import GalleryIndex, Hit
from wildtrack.matching.gallery_fusion import GalleryFusion, committed_fusion
from wildtrack.matching.rerank import rerank_hits

__all__ = ["CatalogueSearch", "EncounterIdentification", "Identification", "ScoreKind", "open_catalogue", "search_for"]

ScoreKind = Literal["match_probability", "cosine"]
SEARCH_DEPTH = 5  # identify() looks at topk × this many images, so an identity's several photos can all count
MIN_DEPTH = 20


@dataclass(frozen=True)
class Identification:
    """The verdict on one photo and the ranked images behind it."""

    decision: Decision
    hits: list[Hit]
    reranked: bool  # hits carry inliers and match probabilities; the decision read the probability
    threshold: float | None

    @property
    def score_kind(self) -> ScoreKind:
        """What the decision's score and threshold measure."""
        return _score_kind(self.reranked)


@dataclass(frozen=True)
class EncounterIdentification:
    """The verdict on several photos of one encounter, pooled, and each photo's own identification."""

    decision: Decision  # the most confident photo's verdict; candidates pooled over the photos
    photos: list[Identification]
    reranked: bool
    threshold: float | None  # the encounter's: what decision.score was compared with

    @property
    def score_kind(self) -> ScoreKind:
        return _score_kind(self.reranked)


class CatalogueSearch:
    """Search → (re-rank) → decide for one loaded index.

    When the index carries ``fusion.json`` (built with ``--rerank local``) and ``rerank`` is true, the global
    shortlist is re-ordered by local matching against the catalogue's photos (under the index's data root, or
    the index directory for an index without one, where enrolled photos live), and the new-individual decision
    reads the first turtle's calibrated match probability; otherwise it reads the cosine. ``threshold``
    overrides the threshold of whichever score decides; without it the one fitted with the fusion, or the
    cosine threshold stored with the index, applies (``None``: always name the best turtle).
    """

    def __init__(self, index: GalleryIndex, index_dir: str | Path, threshold: float | None = None,
                 rerank: bool = True, fusion: GalleryFusion | None = None) -> None:
        self.index = index
        self.index_dir = Path(index_dir).resolve()
        root = index.data_root
        self.data_root = storage.resolve(root) if root is not None else self.index_dir  # a folder or an s3:// URL
        self.fusion = (fusion or committed_fusion(index, self.index_dir)) if rerank else None
        # One re-ranker for the searcher's life: its in-memory feature cache keeps the catalogue's hot features.
        # The catalogue's features come from the index's feature store when it has one (verified on first read).
        self.reranker = (self.fusion.reranker(store=open_store(self.index_dir, index.shards), data_root=self.data_root)
                         if self.fusion is not None else None)
        fitted = self.fusion
        chosen = choose_thresholds(threshold, fitted is not None,
                                   fitted.decision_threshold if fitted is not None else None,
                                   fitted.encounter_threshold if fitted is not None else None,
                                   index.decision_threshold)
        self.threshold = chosen.photo
        self.encounter_threshold = chosen.encounter

    @property
    def reranks(self) -> bool:
        return self.fusion is not None

    @property
    def score_kind(self) -> ScoreKind:
        """What the decision's score and threshold measure."""
        return _score_kind(self.reranks)

    def warm_up(self) -> None:
        """Build the local extractor's turtle locator now (seconds), not on the first photo."""
        if self.reranker is not None:
            blank = io.BytesIO()
            Image.new("RGB", (64, 64)).save(blank, format="JPEG")
            self.reranker.cache.extractor(blank.getvalue())

    def search(self, vector: np.ndarray, image: Source | None = None, k: int = 5) -> list[Hit]:
        """Top-``k`` catalogue images for one unit vector, re-ordered by local matching when this search
        re-ranks and the photo itself (a path or its bytes) is given."""
        k = max(1, min(k, MAX_SEARCH_K))
        if self.fusion is None or image is None:
            return self.index.search(vector, k)[0]
        hits = self.index.search(vector, min(max(k, self.fusion.k), MAX_RERANK_K))[0]
        return rerank_hits(image, hits, self.data_root, self.fusion, self.reranker)[:k]

    def identify(self, vector: np.ndarray, image: Source | None, topk: int = 5) -> Identification:
        """Which individual: search deeper than ``topk`` images, then decide on the re-ranked first turtle's match
        probability, or on the identities' best cosines. A re-ranking catalogue needs the photo: its threshold is
        a probability, which the cosine cannot be compared with."""
        if self.fusion is not None and image is None:
            raise ValueError("this catalogue re-ranks by local matching: identify() needs the photo, not only its "
                             "embedding")
        hits = self.search(vector, image, max(topk * SEARCH_DEPTH, MIN_DEPTH))
        decision = (decide_reranked(hits, self.threshold) if self.reranks
                    else decide(aggregate_identities(hits), self.threshold))
        return Identification(decision, hits, self.reranks, self.threshold)

    def identify_encounter(self, vectors: np.ndarray, images: list[Source] | None, topk: int = 5
                           ) -> EncounterIdentification:
        """Which individual, from several photos of one encounter (one turtle, one sighting): each photo is
        identified as by :meth:`identify`, and the encounter takes the verdict of the most confident one
        (:func:`~wildtrack.decide.encounter.pool_encounter`), so one photo that matches the catalogue well names
        the turtle even when the others show a side it has never seen."""
        vectors = np.atleast_2d(np.asarray(vectors))
        if len(vectors) == 0:
            raise ValueError("an encounter needs at least one photo")
        if images is not None and len(images) != len(vectors):
            raise ValueError(f"{len(vectors)} embeddings but {len(images)} photos")
        photos = [self.identify(v, None if images is None else images[n], topk) for n, v in enumerate(vectors)]
        decision = pool_encounter([p.hits for p in photos], [p.decision for p in photos], self.reranks,
                                  self.encounter_threshold)
        return EncounterIdentification(decision, photos, self.reranks, self.encounter_threshold)


def _score_kind(reranked: bool) -> ScoreKind:
    return "match_probability" if reranked else "cosine"


def open_catalogue(index_dir: str | Path, artifacts: str | Path, backend: str = "auto",
                   threshold: float | None = None, rerank: bool = True) -> tuple[Embedder, CatalogueSearch]:
    """The model and the catalogue search over an index built with it: the one way the CLI and the service load
    a catalogue (an index of another model or embedding size is refused with ``IndexMismatchError``)."""
    embedder = load_embedder(artifacts, backend=backend)
    return embedder, search_for(embedder, index_dir, threshold, rerank)


def search_for(embedder: Embedder, index_dir: str | Path, threshold: float | None = None,
               rerank: bool = True) -> CatalogueSearch:
    """The catalogue search over the index at ``index_dir``, which must hold this model's embeddings (its
    fingerprint and dimension; ``IndexMismatchError`` otherwise)."""
    index = GalleryIndex.load(index_dir, expected_model_fingerprint=embedder.fingerprint, expected_dim=embedder.dim)
    return CatalogueSearch(index, index_dir, threshold, rerank=rerank)
