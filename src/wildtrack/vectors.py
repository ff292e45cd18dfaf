"""Unit-length rows: the one normalisation every embedding goes through before a cosine is a dot product."""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of a 2-D array scaled to unit length, as float32 (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)
