"""The decision policy: which score decides "new individual", the thresholds for a photo and an encounter,
where they came from, and the one sentence a user reads ("new individual below P(same) T for a photo, T_enc for
an encounter, fitted on the catalogue at 5 % false accepts", with the rates that fit measured).

A search builds its :class:`DecisionPolicy` once (:func:`decision_policy`), decides every photo with it and hands
it out with each verdict, so an answer always names the threshold that decided it. The demo, ``index build``,
``metrics.json``, the report's headline, ``/health`` and the page footer say it with
:meth:`DecisionPolicy.sentence`, so the numbers a user sees in one place are the numbers everywhere; thresholds
computed any other way (e.g. calibrated on evaluation queries) are diagnostics and say so.

Which thresholds apply: a re-ranking catalogue decides on the match probability, with the thresholds fitted with
its pipeline (one for a photo, a stricter one for the best of an encounter's photos, which passes more often by
chance); a global-only catalogue on the cosine, with the threshold stored in its manifest. A user's explicit
threshold overrides whichever applies, for photos and encounters alike.

A fitted policy also carries a second, stricter operating point, fitted the same way at 1 % false accepts
(:data:`~wildtrack.config.CONFIDENT_TARGET_FAR`): a verdict above it is *confident*, named without a person's
review (:meth:`DecisionPolicy.is_confident`; ``wildtrack survey`` pre-accepts those). A user's threshold, a
stored cosine one or a fusion fitted before the second point existed has none: then nothing is confident.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from wildtrack.decide.encounter import pool_encounter
from wildtrack.decide.identity import Decision, aggregate_identities, decide, decide_reranked
from wildtrack.index import Hit

__all__ = ["DecisionPolicy", "ScoreKind", "Thresholds", "choose_thresholds", "decision_policy", "operating_point"]

ScoreKind = Literal["match_probability", "cosine"]

SCORE_NAMES = {"match_probability": "P(same)", "cosine": "cosine"}


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


@dataclass(frozen=True)
class DecisionPolicy:
    """Which score decides, where the "new individual" line sits and where it came from.

    ``source``: ``fitted`` (on the catalogue's own photos as pseudo-queries, at ``target_far`` false accepts),
    ``given`` (a threshold the user chose), ``stored`` (a cosine threshold stored with a global index) or
    ``none`` (always name the closest turtle). ``photo_rates`` / ``encounter_rates``: ``TAR``, ``FAR``,
    ``num_known``, ``num_unknown`` the fit measured at these thresholds on the catalogue (fitted only).
    ``confident_photo_threshold`` / ``confident_encounter_threshold``: the confident operating point, fitted at
    ``confident_far`` false accepts (``confident_rates``: the fit's rates at the encounter's); None when the
    catalogue has none or the thresholds in use are not the fitted ones.
    """

    score: ScoreKind
    photo_threshold: float | None
    encounter_threshold: float | None
    source: str
    target_far: float | None = None
    photo_rates: dict[str, Any] | None = None
    encounter_rates: dict[str, Any] | None = None
    confident_photo_threshold: float | None = None
    confident_encounter_threshold: float | None = None
    confident_far: float | None = None
    confident_rates: dict[str, Any] | None = None

    @property
    def reranked(self) -> bool:
        """Whether it decides on the re-ranked match probability (else on the cosine)."""
        return self.score == "match_probability"

    def decide(self, hits: list[Hit]) -> Decision:
        """One photo's verdict from its ranked hits."""
        if self.reranked:
            return decide_reranked(hits, self.photo_threshold)
        return decide(aggregate_identities(hits), self.photo_threshold)

    def decide_encounter(self, photo_hits: Sequence[Sequence[Hit]], photo_decisions: Sequence[Decision]) -> Decision:
        """An encounter's verdict from its photos' hits and verdicts
        (:func:`~wildtrack.decide.encounter.pool_encounter`)."""
        return pool_encounter(photo_hits, photo_decisions, self.reranked, self.encounter_threshold)

    def is_confident(self, decision: Decision, encounter: bool) -> bool:
        """Whether a verdict names its turtle above the confident operating point (an ``encounter``'s pooled
        verdict, or one photo's): such a verdict may be accepted without review. A new individual never is."""
        threshold = self.confident_encounter_threshold if encounter else self.confident_photo_threshold
        return (threshold is not None and not decision.is_unknown and decision.identity is not None
                and decision.score is not None and decision.score >= threshold)

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
        line += f"; fitted on the catalogue at {_percent(self.target_far)} false accepts" + _there(self.photo_rates)
        return line + self._confident_sentence(name)

    def _confident_sentence(self, name: str) -> str:
        """``; named automatically (confident) above P(same) 0.930 for a photo, 0.950 for an encounter, fitted at
        1 % false accepts (there: ...)``, or nothing without a confident operating point."""
        photo, encounter = self.confident_photo_threshold, self.confident_encounter_threshold
        if photo is None and encounter is None:
            return ""
        if photo is not None and encounter is not None and photo != encounter:
            where = f"{photo:.3f} for a photo, {encounter:.3f} for an encounter"
        elif photo is not None and encounter is not None:
            where = f"{photo:.3f} for a photo or an encounter"
        else:
            where = f"{photo:.3f} for a photo" if photo is not None else f"{encounter:.3f} for an encounter"
        return (f"; named automatically (confident) above {name} {where}, fitted at {_percent(self.confident_far)} "
                f"false accepts{_there(self.confident_rates)}")


def decision_policy(reranks: bool, override: float | None = None, fitted_photo: float | None = None,
                    fitted_encounter: float | None = None, fit_report: dict[str, Any] | None = None,
                    stored_cosine: float | None = None, *, confident_photo: float | None = None,
                    confident_encounter: float | None = None) -> DecisionPolicy:
    """The policy of a search: on the match probability when it ``reranks`` (thresholds fitted with the pipeline,
    ``fit_report`` its rates, ``confident_*`` its confident operating point), else on the cosine
    (``stored_cosine``, the index's); ``override``: the user's."""
    chosen = choose_thresholds(override, reranks, fitted_photo, fitted_encounter, stored_cosine)
    return operating_point("match_probability" if reranks else "cosine", chosen.photo, chosen.encounter,
                           fit_report if reranks else None, overridden=override is not None,
                           confident_photo=confident_photo if reranks else None,
                           confident_encounter=confident_encounter if reranks else None)


def operating_point(score: ScoreKind, photo: float | None, encounter: float | None,
                    fit_report: dict[str, Any] | None = None, overridden: bool = False, *,
                    confident_photo: float | None = None, confident_encounter: float | None = None
                    ) -> DecisionPolicy:
    """The policy of a search deciding on ``score`` with these thresholds.

    ``fit_report`` is the re-ranking fit's (``fusion.json``), whose ``open_set`` / ``encounter_open_set`` hold
    the thresholds it calibrated and their rates; they are quoted only when the thresholds in use are those
    (``overridden``, or a threshold given to ``index build``, makes them the user's). The confident operating
    point (``confident_*``, else the report's ``confident_open_set`` / ``confident_encounter_open_set``) comes
    with fitted thresholds only; the encounter's falls back to the photo's, as the new-individual one does."""
    if photo is None:
        return DecisionPolicy(score, None, None, "none")
    report = fit_report or {}
    fit = report.get("open_set") or {}
    enc_fit = report.get("encounter_open_set") or {}
    if overridden or not _same(fit.get("threshold"), photo):
        return DecisionPolicy(score, photo, encounter, "given" if score == "match_probability" or overridden
                              else "stored")
    enc_rates = _rates(enc_fit) if _same(enc_fit.get("threshold"), encounter) else None
    sure = report.get("confident_open_set") or {}
    enc_sure = report.get("confident_encounter_open_set") or {}
    sure_photo = _finite(confident_photo if confident_photo is not None else sure.get("threshold"))
    sure_encounter = _finite(confident_encounter if confident_encounter is not None else enc_sure.get("threshold"))
    if sure_encounter is None:
        sure_encounter, enc_sure = sure_photo, sure
    confident_far = enc_sure.get("target_far", sure.get("target_far")) if sure_encounter is not None else None
    sure_rates = _rates(enc_sure) if _same(enc_sure.get("threshold"), sure_encounter) else None
    return DecisionPolicy(score, photo, encounter, "fitted", fit.get("target_far"), _rates(fit), enc_rates,
                          sure_photo, sure_encounter, confident_far, sure_rates)


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _there(rates: dict[str, Any] | None) -> str:
    """`` (there: 100 % of known turtles accepted, 4.7 % false accepts)``: what the fit measured, when it did."""
    rates = rates or {}
    if rates.get("TAR") is None or rates.get("FAR") is None:
        return ""
    return f" (there: {_percent(rates['TAR'])} of known turtles accepted, {_percent(rates['FAR'])} false accepts)"


def _rates(fit: dict[str, Any]) -> dict[str, Any]:
    return {k: fit.get(k) for k in ("TAR", "FAR", "num_known", "num_unknown")}


def _same(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-12)


def _percent(x: float | None) -> str:
    if x is None:
        return "an unrecorded rate of"
    value = 100 * x
    return f"{value:.0f} %" if math.isclose(value, round(value), abs_tol=0.05) else f"{value:.1f} %"
