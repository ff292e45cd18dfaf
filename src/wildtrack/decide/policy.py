"""The one threshold story a user reads: "new individual below P(same) T for a photo, T_enc for an encounter,
fitted on the catalogue at 5 % false accepts", with the true/false-accept rates that fit measured.

The demo, ``index build``, ``metrics.json``, the report's headline, ``/health`` and the page footer all say it
with :func:`operating_point` and :meth:`OperatingPoint.sentence`, so the numbers a user sees in one place are
the numbers everywhere; thresholds computed any other way (e.g. calibrated on evaluation queries) are
diagnostics and say so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["OperatingPoint", "operating_point"]

SCORE_NAMES = {"match_probability": "P(same)", "cosine": "cosine"}


@dataclass(frozen=True)
class OperatingPoint:
    """Where the "new individual" line sits and where it came from.

    ``source``: ``fitted`` (on the catalogue's own photos as pseudo-queries, at ``target_far`` false accepts),
    ``given`` (a threshold the user chose), ``stored`` (a cosine threshold stored with a global index) or
    ``none`` (always name the closest turtle). ``photo_rates`` / ``encounter_rates``: ``TAR``, ``FAR``,
    ``num_known``, ``num_unknown`` the fit measured at these thresholds on the catalogue (fitted only).
    """

    score: str  # "match_probability" | "cosine"
    photo_threshold: float | None
    encounter_threshold: float | None
    source: str
    target_far: float | None = None
    photo_rates: dict[str, Any] | None = None
    encounter_rates: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sentence": self.sentence()}

    def sentence(self) -> str:
        """One line for a person, e.g. ``new individual below P(same) 0.381 for a photo, 0.579 for an encounter;
        fitted on the catalogue at 5 % false accepts (there: 100 % of known turtles accepted, 4.7 % false
        accepts)``."""
        name = SCORE_NAMES.get(self.score, self.score)
        if self.photo_threshold is None:
            return "no new-individual threshold: the closest turtle is always named"
        line = f"new individual below {name} {self.photo_threshold:.3f} for a photo"
        if self.encounter_threshold is not None and self.encounter_threshold != self.photo_threshold:
            line += f", {self.encounter_threshold:.3f} for an encounter"
        elif self.encounter_threshold is not None:
            line += " or an encounter"
        if self.source == "given":
            return line + " (threshold given by the user)"
        if self.source == "stored":
            return line + " (threshold stored with the index)"
        line += f"; fitted on the catalogue at {_percent(self.target_far)} false accepts"
        rates = self.photo_rates or {}
        if rates.get("TAR") is not None and rates.get("FAR") is not None:
            line += (f" (there: {_percent(rates['TAR'])} of known turtles accepted, {_percent(rates['FAR'])} "
                     "false accepts)")
        return line


def operating_point(score: str, photo: float | None, encounter: float | None,
                    fit_report: dict[str, Any] | None = None, overridden: bool = False) -> OperatingPoint:
    """The operating point of a search deciding on ``score`` with these thresholds.

    ``fit_report`` is the re-ranking fit's (``fusion.json``), whose ``open_set`` / ``encounter_open_set`` hold
    the thresholds it calibrated and their rates; they are quoted only when the thresholds in use are those
    (``overridden``, or a threshold given to ``index build``, makes them the user's)."""
    if photo is None:
        return OperatingPoint(score, None, None, "none")
    fit = (fit_report or {}).get("open_set") or {}
    enc_fit = (fit_report or {}).get("encounter_open_set") or {}
    if overridden or not _same(fit.get("threshold"), photo):
        return OperatingPoint(score, photo, encounter, "given" if score == "match_probability" or overridden
                              else "stored")
    enc_rates = _rates(enc_fit) if _same(enc_fit.get("threshold"), encounter) else None
    return OperatingPoint(score, photo, encounter, "fitted", fit.get("target_far"), _rates(fit), enc_rates)


def _rates(fit: dict[str, Any]) -> dict[str, Any]:
    return {k: fit.get(k) for k in ("TAR", "FAR", "num_known", "num_unknown")}


def _same(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-12)


def _percent(x: float | None) -> str:
    if x is None:
        return "an unrecorded rate of"
    value = 100 * x
    return f"{value:.0f} %" if math.isclose(value, round(value), abs_tol=0.05) else f"{value:.1f} %"
