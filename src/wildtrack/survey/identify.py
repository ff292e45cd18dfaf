"""Naming each encounter against the catalogue, with the evidence a person checks: candidates and match pictures.

Each usable photo is identified once (:meth:`CatalogueSearch.identify`, its local features read from the survey's
feature store), and the grouping reads those per-photo verdicts; an encounter's verdict then pools its photos'
identifications with the catalogue's policy (:meth:`DecisionPolicy.decide_encounter`), which is what
:meth:`CatalogueSearch.identify_encounter` does, without searching the same photos twice.

Two operating points: an encounter is *confident* when it names a known turtle with a score at or above the
catalogue's confident encounter threshold (fitted at about 1 % false accepts); everything else, new individuals
included, is *to review*. A catalogue fitted before that threshold existed has none: every verdict is to review.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from wildtrack.decide.policy import DecisionPolicy
from wildtrack.features import Source
from wildtrack.index import Hit
from wildtrack.matching.inlier_pairs import match_evidence
from wildtrack.matching.pipeline import MatchingPipeline
from wildtrack.search import CatalogueSearch, EncounterIdentification, Identification
from wildtrack.visualize.matchview import match_picture_png

__all__ = ["CONFIDENT", "REVIEW", "candidate_rows", "confident_threshold", "encounter_verdict", "hits_from_dicts",
           "hits_to_dicts", "named", "photo_score", "pooled", "write_match_picture"]

CONFIDENT, REVIEW = "confident", "review"


def confident_threshold(policy: DecisionPolicy, encounter: bool = True) -> float | None:
    """The catalogue's confident operating point (None for a catalogue fitted before it existed)."""
    name = "confident_encounter_threshold" if encounter else "confident_photo_threshold"
    value = getattr(policy, name, None)
    return None if value is None else float(value)


def hits_to_dicts(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [asdict(h) for h in hits]


def hits_from_dicts(rows: Sequence[dict[str, Any]]) -> list[Hit]:
    return [Hit(**r) for r in rows]


def _score(hit: Hit, by_probability: bool) -> float | None:
    value = hit.match_probability if by_probability else hit.score
    return None if value is None or not math.isfinite(value) else float(value)


def named(ident: Identification) -> str | None:
    """The known turtle a photo's own verdict names (None: new individual, or no candidate)."""
    d = ident.decision
    return None if d.is_unknown or d.identity is None else d.identity


def photo_score(ident: Identification, identity: str) -> float | None:
    """A photo's own score for ``identity``: its best hit of that turtle (match probability, or cosine)."""
    scores = [s for h in ident.hits if h.identity == identity
              and (s := _score(h, ident.policy.reranked)) is not None]
    return max(scores) if scores else None


def pooled(policy: DecisionPolicy, photos: Sequence[Identification]) -> EncounterIdentification:
    """The encounter's verdict from its photos' identifications (the rule of ``identify_encounter``)."""
    decision = policy.decide_encounter([p.hits for p in photos], [p.decision for p in photos])
    return EncounterIdentification(decision, list(photos), policy)


def encounter_verdict(enc: EncounterIdentification) -> tuple[bool, str]:
    """(new individual?, ``confident`` | ``review``)."""
    d = enc.decision
    new = d.is_unknown or d.identity is None
    threshold = confident_threshold(enc.policy)
    sure = not new and threshold is not None and d.score is not None and d.score >= threshold
    return new, CONFIDENT if sure else REVIEW


def candidate_rows(search: CatalogueSearch, enc: EncounterIdentification, photos: Sequence[str],
                   topk: int) -> list[dict[str, Any]]:
    """The encounter's first ``topk`` candidates, each with the pair behind its score: the catalogue photo and
    the survey photo (``photos[i]`` is the relative path of ``enc.photos[i]``) whose hit scored best."""
    by_probability = enc.policy.reranked
    rows = []
    for cand in enc.decision.candidates[:topk]:
        best: tuple[float, int, Hit] | None = None
        for n, ident in enumerate(enc.photos):
            for h in ident.hits:
                s = _score(h, by_probability)
                if h.identity == cand.identity and s is not None and (best is None or s > best[0]):
                    best = (s, n, h)
        image_id = best[2].image_id if best is not None else cand.best_image_id
        row = search.index.row(image_id) if image_id in search.index else None
        rows.append({"identity": cand.identity, "score": round(float(cand.score), 6),
                     "cosine": None if cand.cosine is None else round(float(cand.cosine), 6),
                     "inliers": cand.inliers, "support": cand.support, "catalogue_image_id": image_id,
                     "catalogue_photo": None if row is None else row.path,
                     "survey_photo": photos[best[1]] if best is not None else photos[0], "picture": None})
    return rows


def _jpeg(png: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_match_picture(pipeline: MatchingPipeline, a: Source, b: str | Path, out: Path, a_label: str,
                        b_label: str, what: str) -> int:
    """The two photos side by side with the keypoint pairs ``pipeline`` verifies between them, as a JPEG at
    ``out``; returns the inlier count drawn."""
    evidence = match_evidence(a, b, pipeline)
    agree = (f"{evidence.inliers} keypoint pair{'s' if evidence.inliers != 1 else ''} agree on one transform"
             if evidence.inliers else "no keypoint pairs agree")
    png = match_picture_png(a, b, evidence.query_xy, evidence.target_xy, a_label, b_label,  # type: ignore[arg-type]
                            f"{what}: {agree}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_jpeg(png))
    return evidence.inliers
