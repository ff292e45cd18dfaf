"""Shared pieces of the synthetic generator: constants, seeded random streams, colour and noise helpers."""

from __future__ import annotations

import colorsys
import re
from collections.abc import Callable
from datetime import date

import cv2
import numpy as np

METADATA_NAME = "metadata.csv"
METADATA_COLUMNS = ("file_name", "identity", "date", "encounter")
JPEG_QUALITY = 92
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024

_FIRST_DAY = date(2019, 3, 1)
_SPAN_DAYS = 4 * 365
_SUPERSAMPLE = 2  # compose at 2x and downscale with INTER_AREA: anti-aliased seams for free

# Independent random streams: a draw for one purpose never shifts the draws of another.
_S_TEMPLATE, _S_DATES, _S_SPLIT, _S_ENCOUNTER, _S_IMAGE = range(5)

# Identity palettes (HSV, hue in degrees): brown to olive, similar across identities on purpose so colour
# alone does not identify a turtle; the identity lives in the spatial arrangement of scales.
_HUE_RANGE = (18.0, 58.0)
_FILE_RE = re.compile(r"^t\d+/t\d+_\d+\.jpg$")

Progress = Callable[[int], None]


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator keyed by (seed, stream, ...): reproducible and independent of call order."""
    return np.random.default_rng([seed, *keys])


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    """HSV (hue in degrees) to an RGB float32 triple in [0, 1]."""
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return np.array([r, g, b], dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise: a coarse random grid upsampled bicubically."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    out = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (out - out.mean()) / (out.std() + 1e-6)


