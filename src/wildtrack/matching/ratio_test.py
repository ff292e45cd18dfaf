"""Pairwise matching: ratio-test correspondences counted by how many one geometric transform explains.

Keypoints that match *and* agree on one transform are strong evidence for the same individual, and almost
never happen by chance between two different turtles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

import cv2
import numpy as np

from wildtrack.features.types import LocalFeatures

__all__ = ["Correspondences", "GeometricModel", "MatchResult", "RansacMatcher", "correspondences", "match_pair",
           "settings_of", "verify"]

GeometricModel = Literal["homography", "affine", "fundamental"]


@dataclass(frozen=True)
class MatchResult:
    """``matches``: correspondences passing the ratio test; ``inliers``: those consistent with one geometry."""

    inliers: int
    matches: int


_MIN_POINTS = {"homography": 4, "affine": 3, "fundamental": 8}


def _two_nn(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact nearest and second-nearest ``b`` row for every ``a`` row, with the two Euclidean distances.

    RootSIFT rows have unit L2 norm, so ``|x - y|² = 2 - 2 x·y`` and one BLAS product finds the same neighbours
    as ``cv2.BFMatcher(NORM_L2).knnMatch(k=2)`` about 7× faster (BFMatcher does not use BLAS).
    """
    dots = a @ b.T
    rows = np.arange(len(a))
    first = dots.argmax(axis=1)
    best = dots[rows, first]
    dots[rows, first] = -np.inf
    second = dots.max(axis=1)
    return first, np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0)), np.sqrt(np.maximum(2.0 - 2.0 * second, 0.0))


def _putative_matches(a: np.ndarray, b: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio test on exact 2-NN, then one match per ``b`` keypoint (its closest), so a repeated texture
    cannot vote many times for the same point."""
    first, d1, d2 = _two_nn(a, b)
    query = np.flatnonzero(d1 < ratio * d2)
    if len(query) == 0:
        return query, query
    order = query[np.argsort(d1[query], kind="stable")]
    _, keep = np.unique(first[order], return_index=True)
    query = np.sort(order[keep])
    return query, first[query]


@dataclass(frozen=True)
class Correspondences:
    """The ratio-test matches of one pair, as keypoint indices into ``a`` and ``b``, and which of them one
    geometric transform explains (``inlier``, a boolean mask): the count and the drawn evidence both come from
    here, so a picture always shows exactly the inliers a score counted."""

    query: np.ndarray  # (M,) int indices into a
    target: np.ndarray  # (M,) int indices into b
    inlier: np.ndarray  # (M,) bool

    @property
    def result(self) -> MatchResult:
        return MatchResult(int(self.inlier.sum()), len(self.query))


def correspondences(
    a: LocalFeatures,
    b: LocalFeatures,
    ratio: float = 0.8,
    model: GeometricModel = "affine",
    threshold: float = 8.0,
) -> Correspondences:
    """Putative matches (ratio test) and the mask of those one geometric model explains.

    ``affine`` (default) fits a 4-DoF similarity (rotation, scale, shift; ``estimateAffinePartial2D`` with
    RANSAC), ``homography`` an 8-DoF plane (USAC MAGSAC++) and ``fundamental`` an epipolar geometry (MAGSAC++),
    each with a ``threshold``-px error in the common frame. On the real photos the similarity won: a head seen
    from the side is near-planar and near-fronto-parallel, and fewer degrees of freedom leave chance matches
    between different turtles at ≤ 4 inliers in 99 % of pairs (homography: 6, fundamental: 12), so weak true
    matches stand out (see ``scripts/bench_rerank.py``).
    """
    _check_model(model)
    if len(a) < 2 or len(b) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return Correspondences(empty, empty, np.zeros(0, dtype=bool))
    qi, ti = _putative_matches(a.descriptors, b.descriptors, ratio)
    return verify(a, b, qi, ti, model, threshold)


def _check_model(model: str) -> None:
    if model not in _MIN_POINTS:
        raise ValueError(f"unknown geometric model {model!r}; choose homography, affine or fundamental")


def verify(a: LocalFeatures, b: LocalFeatures, query: np.ndarray, target: np.ndarray,
           model: GeometricModel = "affine", threshold: float = 8.0) -> Correspondences:
    """Which putative matches (``a.xy[query[i]]`` ↔ ``b.xy[target[i]]``, from any matcher) one geometric
    ``model`` explains within ``threshold`` px of the common frame (see :func:`correspondences`)."""
    _check_model(model)
    qi, ti = np.asarray(query, dtype=np.int64), np.asarray(target, dtype=np.int64)
    none = np.zeros(len(qi), dtype=bool)
    if len(qi) < _MIN_POINTS[model]:
        return Correspondences(qi, ti, none)
    src = np.ascontiguousarray(a.xy[qi], dtype=np.float32).reshape(-1, 1, 2)
    dst = np.ascontiguousarray(b.xy[ti], dtype=np.float32).reshape(-1, 1, 2)
    try:
        if model == "homography":
            _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold, maxIters=2000, confidence=0.999)
        elif model == "affine":
            _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                                  maxIters=2000, confidence=0.999)
        else:
            _, mask = cv2.findFundamentalMat(src, dst, cv2.USAC_MAGSAC, threshold / 2, 0.999, 2000)
    except cv2.error:
        return Correspondences(qi, ti, none)  # degenerate sample (e.g. all points on a line): no model, no inliers
    inlier = mask.ravel().astype(bool) if mask is not None else none
    return Correspondences(qi, ti, inlier)


def match_pair(
    a: LocalFeatures,
    b: LocalFeatures,
    ratio: float = 0.8,
    model: GeometricModel = "affine",
    threshold: float = 8.0,
) -> MatchResult:
    """Putative matches (ratio test) and how many of them one geometric model explains
    (:func:`correspondences`, counted)."""
    return correspondences(a, b, ratio, model, threshold).result


@dataclass(frozen=True)
class RansacMatcher:
    """:func:`match_pair` with fixed settings, as one callable ``(a, b) -> MatchResult``."""

    ratio: float = 0.8
    model: GeometricModel = "affine"
    threshold: float = 8.0

    name: ClassVar[str] = "ransac"

    def __post_init__(self) -> None:
        _check_model(self.model)

    def __call__(self, a: LocalFeatures, b: LocalFeatures) -> MatchResult:
        return self.correspondences(a, b).result

    def correspondences(self, a: LocalFeatures, b: LocalFeatures) -> Correspondences:
        """The matches behind :meth:`__call__`'s count, with the inlier mask."""
        return correspondences(a, b, self.ratio, self.model, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """The matcher's name and settings, as a saved fit records them (:func:`from_dict` rebuilds it)."""
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RansacMatcher:
        return cls(**settings_of(cls, data))


def settings_of(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in a matcher's :meth:`to_dict` output, checked against ``cls`` (its name, its fields)."""
    settings = dict(data)
    name = settings.pop("name", cls.name)
    if name != cls.name:
        raise ValueError(f"settings of the {name!r} matcher cannot build a {cls.name!r} matcher")
    unknown = set(settings) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.name} matcher settings: {', '.join(sorted(unknown))}")
    return settings
