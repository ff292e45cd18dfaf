"""Which images to draw: identities, their encounter dates and how many photos each encounter has."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from wildtrack.data.synth.common import _FIRST_DAY, _S_DATES, _S_SPLIT, _SPAN_DAYS, _rng


@dataclass(frozen=True)
class _ImageSpec:
    """One output file: which identity, which image, which encounter and when."""

    identity: int
    name: str
    index: int
    encounter: int
    date: str
    file_name: str


def _width(n: int) -> int:
    """Zero-padding width so names sort correctly (at least 3 digits)."""
    return max(3, len(str(max(n - 1, 0))))


def _encounter_dates(seed: int, identity: int, n: int) -> list[date]:
    """``n`` distinct, sorted dates spread over a few years."""
    days = _rng(seed, _S_DATES, identity).choice(_SPAN_DAYS, size=n, replace=False)
    return [_FIRST_DAY + timedelta(days=int(d)) for d in np.sort(days)]


def _encounter_sizes(seed: int, identity: int, images: int, encounters: int) -> list[int]:
    """Images per encounter: one each, the rest spread at random (real encounters vary in size)."""
    extra = _rng(seed, _S_SPLIT, identity).multinomial(images - encounters, [1.0 / encounters] * encounters)
    return [1 + int(e) for e in extra]


def _plan(identities: int, images_per_id: int, encounters_per_id: int, seed: int) -> list[list[_ImageSpec]]:
    """Every file to write, grouped by identity, in date order (image index increases with time)."""
    id_w, im_w = _width(identities), _width(images_per_id)
    plan = []
    for i in range(identities):
        name = f"t{i:0{id_w}d}"
        n_enc = min(encounters_per_id, images_per_id)
        dates = _encounter_dates(seed, i, n_enc)
        sizes = _encounter_sizes(seed, i, images_per_id, n_enc)
        encs = np.repeat(np.arange(n_enc), sizes)
        plan.append([
            _ImageSpec(i, name, k, int(e), dates[e].isoformat(), f"{name}/{name}_{k:0{im_w}d}.jpg")
            for k, e in enumerate(encs)
        ])
    return plan


