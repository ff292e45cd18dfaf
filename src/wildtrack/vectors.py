"""Unit-length rows (the one normalisation every embedding goes through before a cosine is a dot product) and the
one ranking of a (query × gallery) similarity matrix, shared by metrics and the matching shortlist."""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of a 2-D array scaled to unit length, as float32 (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


def rank_gallery(sim: np.ndarray) -> np.ndarray:
    """Per query, gallery indices by descending similarity; ties keep gallery order (stable sort)."""
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a 2-D (queries, gallery) array, got shape {sim.shape}")
    # Negating keeps the sort stable in the descending direction (flipping an ascending sort would not).
    return np.argsort(-sim, axis=1, kind="stable")
