"""The geometric check every matcher ends with, and what a matcher is.

A matcher proposes *putative* keypoint matches between two photos (its own idea: a ratio test, mutual nearest
neighbours, a learned network); the evidence a score counts is how many of them one geometric transform
explains. That check is the same for every matcher, so it lives here, and a matcher is one file with a
``putative(a, b)`` method on top of :class:`GeometricMatcher`.

Keypoints that match *and* agree on one transform are strong evidence for the same individual, and almost never
happen by chance between two different turtles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import cv2
import numpy as np

from wildtrack.features.types import LocalFeatures

__all__ = ["Correspondences", "GeometricMatcher", "GeometricModel", "MatchResult", "Matcher", "check_geometry",
           "settings_of", "verify"]

GeometricModel = Literal["homography", "affine", "fundamental"]
MIN_POINTS = {"homography": 4, "affine": 3, "fundamental": 8}
LEGACY_SETTINGS = {"threshold": "reproj_px"}  # fusion.json files from before the rename


@dataclass(frozen=True)
class MatchResult:
    """``matches``: the matcher's putative correspondences; ``inliers``: those consistent with one geometry."""

    inliers: int
    matches: int


@dataclass(frozen=True)
class Correspondences:
    """The putative matches of one pair, as keypoint indices into ``a`` and ``b``, and which of them one
    geometric transform explains (``inlier``, a boolean mask): the count and the drawn evidence both come from
    here, so a picture always shows exactly the inliers a score counted."""

    query: np.ndarray  # (M,) int indices into a
    target: np.ndarray  # (M,) int indices into b
    inlier: np.ndarray  # (M,) bool

    @property
    def result(self) -> MatchResult:
        return MatchResult(int(self.inlier.sum()), len(self.query))


def check_geometry(model: str, reproj_px: float) -> None:
    """ValueError for a geometric model this check does not know, or a reprojection error that is not > 0."""
    if model not in MIN_POINTS:
        raise ValueError(f"unknown geometric model {model!r}; choose homography, affine or fundamental")
    if not reproj_px > 0:
        raise ValueError(f"reproj_px is a reprojection error in pixels, > 0; got {reproj_px}")


def verify(a: LocalFeatures, b: LocalFeatures, query: np.ndarray, target: np.ndarray,
           model: GeometricModel = "affine", reproj_px: float = 8.0) -> Correspondences:
    """Which putative matches (``a.xy[query[i]]`` ↔ ``b.xy[target[i]]``, from any matcher) one geometric
    ``model`` explains within ``reproj_px`` pixels of the common frame.

    ``affine`` (default) fits a 4-DoF similarity (rotation, scale, shift; ``estimateAffinePartial2D`` with
    RANSAC), ``homography`` an 8-DoF plane (USAC MAGSAC++) and ``fundamental`` an epipolar geometry (MAGSAC++).
    On the real photos the similarity won: a head seen from the side is near-planar and near-fronto-parallel,
    and fewer degrees of freedom leave chance matches between different turtles rarer, so weak true matches
    stand out (see ``scripts/bench_rerank.py``).
    """
    check_geometry(model, reproj_px)
    qi, ti = np.asarray(query, dtype=np.int64), np.asarray(target, dtype=np.int64)
    none = np.zeros(len(qi), dtype=bool)
    if len(qi) < MIN_POINTS[model]:
        return Correspondences(qi, ti, none)
    src = np.ascontiguousarray(a.xy[qi], dtype=np.float32).reshape(-1, 1, 2)
    dst = np.ascontiguousarray(b.xy[ti], dtype=np.float32).reshape(-1, 1, 2)
    try:
        if model == "homography":
            _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, reproj_px, maxIters=2000, confidence=0.999)
        elif model == "affine":
            _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=reproj_px,
                                                  maxIters=2000, confidence=0.999)
        else:
            _, mask = cv2.findFundamentalMat(src, dst, cv2.USAC_MAGSAC, reproj_px / 2, 0.999, 2000)
    except cv2.error:
        return Correspondences(qi, ti, none)  # degenerate sample (e.g. all points on a line): no model, no inliers
    inlier = mask.ravel().astype(bool) if mask is not None else none
    return Correspondences(qi, ti, inlier)


@runtime_checkable
class Matcher(Protocol):
    """What the pipeline needs of a matcher: putative matches → correspondences (with the geometric check's
    inlier mask) → a :class:`MatchResult`, and its settings as ``fusion.json`` records them."""

    name: ClassVar[str]

    def putative(self, a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray, np.ndarray]: ...

    def correspondences(self, a: LocalFeatures, b: LocalFeatures) -> Correspondences: ...

    def __call__(self, a: LocalFeatures, b: LocalFeatures) -> MatchResult: ...

    def to_dict(self) -> dict[str, Any]: ...


class GeometricMatcher:
    """Everything a matcher shares: its putative matches verified by one geometric ``model`` within
    ``reproj_px`` (:func:`verify`), counted, and recorded by name and settings.

    A subclass is a frozen dataclass with a ``name``, its own settings plus ``model`` and ``reproj_px``, and
    ``putative(a, b)``; ``check()`` may refuse its own settings.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()  # names older fusion.json files recorded it under
    model: GeometricModel
    reproj_px: float

    def __post_init__(self) -> None:
        check_geometry(self.model, self.reproj_px)
        self.check()

    def check(self) -> None:
        """Refuse settings of the subclass' own (ValueError); nothing to check by default."""

    def putative(self, a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def correspondences(self, a: LocalFeatures, b: LocalFeatures) -> Correspondences:
        """The putative matches behind :meth:`__call__`'s count, with the inlier mask."""
        query, target = self.putative(a, b)
        return verify(a, b, query, target, self.model, self.reproj_px)

    def __call__(self, a: LocalFeatures, b: LocalFeatures) -> MatchResult:
        return self.correspondences(a, b).result

    def to_dict(self) -> dict[str, Any]:
        """The matcher's name and settings, as a saved fit records them (:meth:`from_dict` rebuilds it)."""
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        return cls(**settings_of(cls, data))


def settings_of(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in a matcher's :meth:`~GeometricMatcher.to_dict` output, checked against ``cls`` (its name
    or one of its old ``aliases``, its fields); settings saved under their old names are read under the new ones."""
    settings = {LEGACY_SETTINGS.get(k, k): v for k, v in data.items()}
    name = settings.pop("name", cls.name)  # type: ignore[attr-defined]
    if name != cls.name and name not in getattr(cls, "aliases", ()):  # type: ignore[attr-defined]
        raise ValueError(f"settings of the {name!r} matcher cannot build a {cls.name!r} matcher")  # type: ignore
    unknown = set(settings) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.name} matcher settings: {', '.join(sorted(unknown))}")  # type: ignore
    return settings
