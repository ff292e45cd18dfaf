"""One photo against a loaded catalogue: global search, local re-ranking when the index was fitted for it, and
the "which turtle, or a new one?" decision.

``wildtrack search`` and the web service both answer through :class:`CatalogueSearch`, so a photo gets the same
hits, evidence and verdict from either: the rules below (which score decides, which threshold applies, where
the catalogue's photos are) exist once. :func:`open_catalogue` is the one way to load a catalogue.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from wildtrack.config import MAX_RERANK_K, MAX_SEARCH_K
from wildtrack.data import storage
from wildtrack.decide.identity import Decision
from wildtrack.decide.policy import DecisionPolicy, ScoreKind, decision_policy
from wildtrack.embed import Embedder, load_embedder
from wildtrack.features import Source
from wildtrack.features.store import open_store
from wildtrack.index import GalleryIndex, Hit
from wildtrack.matching.pipeline import MatchingPipeline, committed_pipeline

__all__ = ["CatalogueSearch", "EncounterIdentification", "Identification", "ScoreKind", "open_catalogue"]

SEARCH_DEPTH = 5  # identify() looks at topk × this many images, so an identity's several photos can all count
MIN_DEPTH = 20


class _Decided:
    """What every verdict says about how it was decided: by its ``policy``."""

    policy: DecisionPolicy

    @property
    def reranked(self) -> bool:
        """Hits carry inliers and match probabilities; the decision read the probability."""
        return self.policy.reranked

    @property
    def score_kind(self) -> ScoreKind:
        """What the decision's score and threshold measure."""
        return self.policy.score


@dataclass(frozen=True)
class Identification(_Decided):
    """The verdict on one photo, the ranked images behind it, and the policy that decided it.

    ``ranked`` is every catalogue image the search ranked, ``hits`` being its head: with local re-ranking that is
    the whole shortlist matched locally, which can be longer than ``hits``. A shortlisted photo that could not
    be read gets no evidence and may sink below the hits, so warnings about unreadable photos read ``ranked``.
    """

    decision: Decision
    hits: list[Hit]
    policy: DecisionPolicy
    ranked: list[Hit] = field(default_factory=list)

    @property
    def threshold(self) -> float | None:
        """What ``decision.score`` was compared with."""
        return self.policy.photo_threshold


@dataclass(frozen=True)
class EncounterIdentification(_Decided):
    """The verdict on several photos of one encounter, pooled, and each photo's own identification."""

    decision: Decision  # the most confident photo's verdict; candidates pooled over the photos
    photos: list[Identification]
    policy: DecisionPolicy

    @property
    def threshold(self) -> float | None:
        """The encounter's: what ``decision.score`` was compared with."""
        return self.policy.encounter_threshold


class CatalogueSearch:
    """Search → (re-rank) → decide for one loaded index.

    When the index carries a fitted pipeline (``fusion.json``, built with ``--rerank local``) and ``rerank`` is
    true, the global shortlist is re-ordered by local matching against the catalogue's photos (under the index's
    data root, or the index directory for an index without one, where enrolled photos live), and the
    new-individual decision reads the first turtle's calibrated match probability; otherwise it reads the cosine.
    ``threshold`` overrides the threshold of whichever score decides; without it the ones fitted with the
    pipeline, or the cosine threshold stored with the index, apply (``None``: always name the best turtle). The
    resulting :class:`~wildtrack.decide.policy.DecisionPolicy` is built once, here.
    """

    def __init__(self, index: GalleryIndex, index_dir: str | Path, threshold: float | None = None,
                 rerank: bool = True) -> None:
        self.index = index
        self.index_dir = Path(index_dir).resolve()
        root = index.data_root
        self.data_root = storage.resolve(root) if root is not None else self.index_dir  # a folder or an s3:// URL
        # One pipeline for the searcher's life: its in-memory feature cache keeps the catalogue's hot features,
        # read from the index's feature store when it has one (verified on first read).
        self.pipeline: MatchingPipeline | None = (
            committed_pipeline(index, self.index_dir, store=open_store(self.index_dir, index.shards),
                               data_root=self.data_root) if rerank else None)
        fitted = self.pipeline
        self.policy = decision_policy(fitted is not None, threshold,
                                      fitted.decision_threshold if fitted is not None else None,
                                      fitted.encounter_threshold if fitted is not None else None,
                                      fitted.fit_report if fitted is not None else None, index.decision_threshold,
                                      confident_photo=fitted.confident_threshold if fitted is not None else None,
                                      confident_encounter=(fitted.confident_encounter_threshold
                                                           if fitted is not None else None))
        self.threshold_override = threshold

    @property
    def reranks(self) -> bool:
        return self.pipeline is not None

    @property
    def threshold(self) -> float | None:
        """The policy's photo threshold (on :attr:`score_kind`)."""
        return self.policy.photo_threshold

    @property
    def encounter_threshold(self) -> float | None:
        """The policy's threshold for the most confident of an encounter's photos."""
        return self.policy.encounter_threshold

    @property
    def score_kind(self) -> ScoreKind:
        """What the decision's score and thresholds measure."""
        return self.policy.score

    def warm_up(self) -> None:
        """Build the local extractor's turtle locator now (seconds), not on the first photo."""
        if self.pipeline is not None:
            blank = io.BytesIO()
            Image.new("RGB", (64, 64)).save(blank, format="JPEG")
            self.pipeline.extractor(blank.getvalue())

    def search(self, vector: np.ndarray, image: Source | None = None, k: int = 5) -> list[Hit]:
        """Top-``k`` catalogue images for one unit vector, re-ordered by local matching when this search
        re-ranks and the photo itself (a path, its bytes or its pixels) is given."""
        return self.ranked(vector, image, k)[: max(1, min(k, MAX_SEARCH_K))]

    def ranked(self, vector: np.ndarray, image: Source | None = None, k: int = 5) -> list[Hit]:
        """Every catalogue image a top-``k`` :meth:`search` ranks, best first: the top ``k``, and when it
        re-ranks, the whole shortlist it matched locally (``rerank_k`` images, often more than ``k``), where a
        photo whose features could not be read lies, pushed down by its missing evidence."""
        k = max(1, min(k, MAX_SEARCH_K))
        if self.pipeline is None or image is None:
            return self.index.search(vector, k)[0]
        hits = self.index.search(vector, min(max(k, self.pipeline.k), MAX_RERANK_K))[0]
        return self.pipeline.rank(image, hits, self.data_root)

    def identify(self, vector: np.ndarray, image: Source | None, topk: int = 5) -> Identification:
        """Which individual: search deeper than ``topk`` images, then decide by the policy (the re-ranked first
        turtle's match probability, or the identities' best cosines). A re-ranking catalogue needs the photo: its
        threshold is a probability, which the cosine cannot be compared with."""
        if self.pipeline is not None and image is None:
            raise ValueError("this catalogue re-ranks by local matching: identify() needs the photo, not only its "
                             "embedding")
        policy = self.policy  # one read: the verdict and the answer name the same policy
        depth = max(topk * SEARCH_DEPTH, MIN_DEPTH)
        ranked = self.ranked(vector, image, depth)
        hits = ranked[: min(depth, MAX_SEARCH_K)]
        return Identification(policy.decide(hits), hits, policy, ranked)

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
        policy = photos[0].policy
        decision = policy.decide_encounter([p.hits for p in photos], [p.decision for p in photos])
        return EncounterIdentification(decision, photos, policy)


def open_catalogue(index_dir: str | Path, artifacts: str | Path | Embedder, backend: str = "auto",
                   threshold: float | None = None, rerank: bool = True) -> tuple[Embedder, CatalogueSearch]:
    """The model (``artifacts``: its folder, or one already loaded) and the catalogue search over an index built
    with it: the one way the CLI and the service load a catalogue (an index of another model or embedding size
    is refused with ``IndexMismatchError``)."""
    embedder = (load_embedder(artifacts, backend=backend) if isinstance(artifacts, str | os.PathLike)
                else artifacts)
    index = GalleryIndex.load(index_dir, expected_model_fingerprint=embedder.fingerprint, expected_dim=embedder.dim)
    return embedder, CatalogueSearch(index, index_dir, threshold, rerank=rerank)
