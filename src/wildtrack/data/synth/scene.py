"""One encounter's look: water, background rocks and light, shared by every photo of that day."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wildtrack.data.synth.common import _S_ENCOUNTER, _hsv, _rng, _smooth_noise


@dataclass
class _Look:
    """What an encounter shares across its images: scenery, water, light and camera focus."""

    background: np.ndarray
    water: np.ndarray
    haze: float
    gain: np.ndarray
    brightness: float
    contrast: float
    gamma: float
    light_angle: float
    light_strength: float
    blur: float
    noise: float


def _water_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom colours of the scene: blue to green water, sometimes a sandy or rocky floor."""
    hue = rng.uniform(150, 225)
    top = _hsv(hue + rng.normal(0, 8), rng.uniform(0.35, 0.85), rng.uniform(0.45, 0.9))
    u = rng.random()
    if u < 0.35:  # sandy bottom
        bottom = _hsv(rng.uniform(30, 55), rng.uniform(0.2, 0.45), rng.uniform(0.45, 0.8))
    elif u < 0.55:  # dark reef
        bottom = _hsv(rng.uniform(60, 200), rng.uniform(0.2, 0.5), rng.uniform(0.12, 0.35))
    else:
        bottom = _hsv(hue + rng.normal(0, 12), rng.uniform(0.4, 0.9), rng.uniform(0.15, 0.55))
    return top, bottom


def _render_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A water scene: tilted gradient, caustic light ridges, out-of-focus rocks and marine snow."""
    top, bottom = _water_colours(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ang = rng.uniform(-0.6, 0.6)
    t = np.clip((yy - 0.5) * np.cos(ang) + (xx - 0.5) * np.sin(ang) + 0.5 + rng.normal(0, 0.15), 0, 1)
    t = t ** rng.uniform(0.6, 1.6)
    img = top * (1 - t[..., None]) + bottom * t[..., None]

    img *= (1.0 + rng.uniform(0.04, 0.15) * _smooth_noise(rng, (size, size), int(rng.integers(3, 7))))[..., None]
    ridges = np.zeros((size, size), np.float32)
    for cells, width in ((int(rng.integers(5, 10)), 0.12), (int(rng.integers(10, 18)), 0.1)):
        n = _smooth_noise(rng, (size, size), cells)
        ridges = np.maximum(ridges, np.exp(-((n / width) ** 2)))
    img += (rng.uniform(0.0, 0.3) * ridges * (1 - 0.7 * t))[..., None]

    _draw_rocks(rng, img, size)
    for _ in range(int(rng.integers(0, 50))):
        c = (int(rng.uniform(0, size) * 16), int(rng.uniform(0, size) * 16))  # sub-pixel (shift=4)
        r = round(size * rng.uniform(0.002, 0.007) * 16)
        cv2.circle(img, c, r, (0.85, 0.9, 0.9), -1, cv2.LINE_AA, 4)
    return np.clip(img, 0, 1).astype(np.float32), top


def _draw_rocks(rng: np.random.Generator, img: np.ndarray, size: int) -> None:
    """Irregular blurred blobs (rocks, coral heads, seagrass clumps) concentrated towards the bottom."""
    n = int(rng.integers(0, 7))
    if n == 0:
        return
    layer = np.zeros_like(img)
    mask = np.zeros(img.shape[:2], np.float32)
    for _ in range(n):
        r = size * rng.uniform(0.05, 0.3)
        c = np.array([rng.uniform(0, size), size * rng.beta(3, 1.5)])
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        rad = r * (1 + 0.25 * np.cos(2 * ang + rng.uniform(0, 6.3)) + 0.15 * np.cos(3 * ang + rng.uniform(0, 6.3))
                   + rng.uniform(-0.08, 0.08, len(ang)))
        poly = c + np.stack([np.cos(ang) * rad, np.sin(ang) * rad * rng.uniform(0.5, 0.9)], axis=1)
        col = _hsv(rng.uniform(20, 140), rng.uniform(0.1, 0.5), rng.uniform(0.12, 0.5))
        pts = [np.round(poly * 16).astype(np.int32)]
        cv2.fillPoly(layer, pts, col.tolist(), cv2.LINE_AA, shift=4)
        cv2.fillPoly(mask, pts, 1.0, cv2.LINE_AA, shift=4)
    sigma = size * rng.uniform(0.004, 0.02)
    layer = cv2.GaussianBlur(layer, (0, 0), sigma)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)[..., None]
    texture = (1.0 + 0.15 * _smooth_noise(rng, img.shape[:2], 20))[..., None]
    img[:] = img * (1 - mask) + layer * texture


def _encounter_look(seed: int, identity: int, encounter: int, image_size: int) -> _Look:
    """Everything an encounter shares, drawn independently per encounter so it never marks an identity."""
    rng = _rng(seed, _S_ENCOUNTER, identity, encounter)
    background, water = _render_background(rng, int(image_size * 1.15))
    return _Look(
        background=background,
        water=water,
        haze=float(rng.uniform(0.0, 0.35)),
        gain=np.exp(rng.normal(0, 0.12, 3)).astype(np.float32) * np.array([0.9, 1.0, 1.02], np.float32),
        brightness=float(rng.normal(0, 0.06)),
        contrast=float(np.exp(rng.normal(0, 0.18))),
        gamma=float(np.exp(rng.normal(0, 0.15))),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        light_strength=float(rng.uniform(0.0, 0.3)),
        blur=float(rng.uniform(0.2, 1.1)),
        noise=float(rng.uniform(0.005, 0.03)),
    )


