"""Calibration: one "same individual" probability from the global cosine and the local inlier count.

Neither score alone is trustworthy on field photos: the cosine confuses turtles photographed on the same reef,
and a few inliers can be chance matches on sand or coral. A logistic regression on ``[cosine, log1p(inliers)]``,
fitted on labelled (query, gallery) pairs from a held-out part of the catalogue, weighs the two and turns them
into a probability-like score. ``log1p`` because the evidence of 10 → 20 inliers is worth more than 210 → 220.

Both weights are constrained to be ≥ 0, so the fused score never *decreases* when either the cosine or the
inlier count increases: more evidence can only help a candidate. scikit-learn has no bound-constrained logistic
regression, so a feature that comes out with a negative weight (which only happens on noisy or tiny fitting
sets) is dropped and the model refitted on the other one; the dropped weight is exactly 0, which keeps the
monotonicity guarantee and documents itself in the JSON.

``features="inliers"`` fits on ``log1p(inliers)`` alone and keeps the cosine only as a tie-break (a fixed,
tiny weight): when the embedder was trained on the catalogue, the catalogue's cosines are optimistic, and a
fusion fitted on catalogue pseudo-queries over-trusts them (measured on the dev split, ``docs/accuracy.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import numpy as np

from wildtrack.config import DEFAULT_FUSION_FEATURES, FusionFeatures

__all__ = ["COSINE_TIE_BREAK", "FORMAT", "FUSION_FEATURES", "FusionFeatures", "ScoreFusion"]

FORMAT = "wildtrack-score-fusion-v1"
FUSION_FEATURES: tuple[FusionFeatures, ...] = get_args(FusionFeatures)
# The cosine's weight, as a share of the inliers', when it only breaks ties: a cosine spans at most 2, so it moves
# a logit by at most 1e-4 · w_local, less than one more inlier does at any count a pair of up to 5000 keypoints
# reaches (w_local · log((n + 2) / (n + 1)) ≥ 2e-4 · w_local for n ≤ 5000).
COSINE_TIE_BREAK = 5e-5
_NAMES = {"cosine+inliers": ["cosine", "log1p(inliers)"], "inliers": ["log1p(inliers)"]}


def _features(global_scores: np.ndarray, inliers: np.ndarray) -> np.ndarray:
    g = np.asarray(global_scores, dtype=np.float64)
    n = np.log1p(np.maximum(np.asarray(inliers, dtype=np.float64), 0.0))
    g, n = np.broadcast_arrays(g, n)
    return np.stack([g.ravel(), n.ravel()], axis=1)


@dataclass
class ScoreFusion:
    """``sigmoid(bias + w_global · cosine + w_local · log1p(inliers))`` with ``w_global, w_local ≥ 0``.

    The default (unfitted) weights rank by the cosine alone, so an unfitted fusion changes nothing. With
    ``features="inliers"`` a fit learns ``w_local`` and ``bias`` only and sets ``w_global`` to
    :data:`COSINE_TIE_BREAK` × ``w_local`` (× 1 when the inliers got no weight: the cosine then ranks alone).
    """

    w_global: float = 1.0
    w_local: float = 0.0
    bias: float = 0.0
    num_pairs: int = 0  # pairs it was fitted on (0: not fitted)
    positive_rate: float | None = None
    features: FusionFeatures = DEFAULT_FUSION_FEATURES  # the presets'

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        for name in ("w_global", "w_local", "bias"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
            setattr(self, name, value)
        if self.features not in _NAMES:
            raise ValueError(f"features must be one of {sorted(_NAMES)}, got {self.features!r}")
        if self.w_global < 0 or self.w_local < 0:
            raise ValueError(
                f"weights must be >= 0 for a monotonic fusion, got w_global={self.w_global}, w_local={self.w_local}"
            )

    def fit(self, global_scores: np.ndarray, inliers: np.ndarray, same_identity: np.ndarray,
            C: float = 1.0) -> ScoreFusion:
        """Fit on labelled pairs (one row per query × shortlisted gallery image). Returns ``self``.

        Features are standardised for the fit (so the L2 penalty ``C`` treats both alike), then the weights are
        folded back to raw units. With ``features="inliers"`` the cosine is left out of the fit.
        """
        from sklearn.linear_model import LogisticRegression

        x = _features(global_scores, inliers)
        y = np.asarray(same_identity, dtype=bool).ravel()
        if len(y) != len(x):
            raise ValueError(f"{len(x)} score pairs but {len(y)} labels")
        if y.all() or not y.any():
            raise ValueError("fitting needs both same-identity and different-identity pairs")
        mean, std = x.mean(axis=0), x.std(axis=0)
        std[std == 0] = 1.0
        z = (x - mean) / std
        active = [0, 1] if self.features == "cosine+inliers" else [1]
        weights = np.zeros(2)
        intercept = 0.0
        while active:
            model = LogisticRegression(C=C, max_iter=1000).fit(z[:, active], y)
            coef = model.coef_.ravel()
            if (coef >= 0).all():
                weights[active] = coef
                intercept = float(model.intercept_[0])
                break
            active = [f for f, c in zip(active, coef, strict=True) if c >= 0]  # drop what went negative
        else:
            intercept = float(np.log(y.mean() / (1 - y.mean())))  # neither helps: the base rate
        raw = weights / std
        self.w_global, self.w_local = float(raw[0]), float(raw[1])
        self.bias = float(intercept - (raw * mean).sum())
        if self.features == "inliers":
            self.w_global = COSINE_TIE_BREAK * (self.w_local or 1.0)
        self.num_pairs, self.positive_rate = len(y), float(y.mean())
        self._check()
        return self

    def logit(self, global_scores: np.ndarray | float, inliers: np.ndarray | float) -> np.ndarray:
        g = np.asarray(global_scores, dtype=np.float64)
        n = np.log1p(np.maximum(np.asarray(inliers, dtype=np.float64), 0.0))
        return self.bias + self.w_global * g + self.w_local * n

    def score(self, global_scores: np.ndarray | float, inliers: np.ndarray | float) -> np.ndarray:
        """Probability-like "same individual" score in (0, 1); broadcasts like numpy."""
        return 1.0 / (1.0 + np.exp(-self.logit(global_scores, inliers)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": _NAMES[self.features],
            **({"tie_break": "cosine"} if self.features == "inliers" else {}),
            "w_global": self.w_global,
            "w_local": self.w_local,
            "bias": self.bias,
            "num_pairs": self.num_pairs,
            "positive_rate": self.positive_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreFusion:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a score fusion ({FORMAT}) document: format={data.get('format')!r}")
        names = data.get("features", _NAMES["cosine+inliers"])  # files from before the option: both
        kind = next((k for k, v in _NAMES.items() if v == list(names)), None)
        if kind is None:
            raise ValueError(f"unknown fusion features {names!r}; this wildtrack knows {list(_NAMES.values())}")
        return cls(float(data["w_global"]), float(data["w_local"]), float(data["bias"]),
                   int(data.get("num_pairs", 0)), data.get("positive_rate"), kind)
