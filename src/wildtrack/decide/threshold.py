"""Which threshold decides "new individual": one rule for the CLI, the service and evaluation.

A re-ranking catalogue decides on the match probability, with the thresholds fitted with its fusion (one for a
photo, a stricter one for the best of an encounter's photos, which passes more often by chance); a global-only
catalogue decides on the cosine, with the threshold stored in its manifest. A user's explicit threshold overrides
whichever applies, for photos and encounters alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Thresholds", "choose_thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """``photo`` for one photo, ``encounter`` for the most confident of several; None: always name the best."""

    photo: float | None
    encounter: float | None


def choose_thresholds(override: float | None, reranks: bool, fitted_photo: float | None = None,
                      fitted_encounter: float | None = None, stored_cosine: float | None = None) -> Thresholds:
    """The thresholds a search applies: ``override`` for both when given; else, when it ``reranks``, the fitted
    ones (the encounter's falling back to the photo's), else the cosine threshold stored with the index."""
    if override is not None:
        if not math.isfinite(override):
            raise ValueError(f"the unknown threshold must be a finite number, got {override!r}")
        return Thresholds(override, override)
    photo = fitted_photo if reranks else stored_cosine
    if photo is not None and not math.isfinite(photo):
        raise ValueError(f"the stored unknown threshold must be a finite number, got {photo!r}")
    encounter = fitted_encounter if reranks and fitted_encounter is not None else photo
    return Thresholds(photo, encounter)
