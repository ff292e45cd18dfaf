"""One identity's fixed template: a head silhouette tiled with polygonal scales of fixed layout and colours."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from wildtrack.data.synth.common import _HUE_RANGE, _S_TEMPLATE, _hsv, _rng, _smooth_noise


@dataclass
class _Template:
    """An identity's head, premultiplied RGBA float32, plus where the head is and how long it is."""

    rgba: np.ndarray
    center: tuple[float, float]
    extent: float


def _head_outline(rng: np.random.Generator, a: float, b: float) -> np.ndarray:
    """Head silhouette (relative to its centre): an ellipse with a tapered snout and low-order wobble."""
    theta = np.linspace(0.0, 2 * np.pi, 180, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4):
        r += rng.uniform(0.0, 0.035) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    taper = rng.uniform(0.18, 0.35)
    x = a * np.cos(theta) * r
    y = b * np.sin(theta) * r * (1.0 - taper * (1.0 + np.cos(theta)) / 2.0)
    y += b * rng.uniform(0.0, 0.15) * np.clip(np.cos(theta), 0, None) ** 3  # snout droops a little
    return np.stack([x, y], axis=1)


def _scale_seeds(rng: np.random.Generator, a: float, b: float) -> tuple[np.ndarray, float]:
    """Jittered-grid seed points covering the head, and the typical scale width.

    Scale count and elongation vary per identity (as scute counts do in real turtles): a pose-invariant
    texture cue that a CNN picks up easily but raw pixels and colour histograms do not.
    """
    n_scales = rng.uniform(16, 40)
    cell = math.sqrt(math.pi * a * b / n_scales)
    stretch = math.exp(rng.uniform(-0.3, 0.3))  # >1: scales wider than tall
    cx, cy = cell * stretch, cell / stretch
    xs = np.arange(-a - cx, a + cx, cx) + rng.uniform(0, cx)
    ys = np.arange(-b - cy, b + cy, cy) + rng.uniform(0, cy)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    pts[:, 0] += np.arange(len(pts)) // len(xs) % 2 * cx * 0.5  # hexagonal-ish offset rows
    pts += rng.uniform(-0.42, 0.42, pts.shape) * (cx, cy)
    keep = rng.random(len(pts)) > rng.uniform(0.0, 0.25)
    inside = (pts[:, 0] / (a + cx)) ** 2 + (pts[:, 1] / (b + cy)) ** 2 <= 1.0
    return pts[keep & inside], cell


def _scale_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-scale RGB around an identity base colour: mostly brown/olive, some pale or very dark scales.

    How many are pale or dark varies per identity, so the scattered light/dark scales form a distinctive
    constellation; the base colours overlap across identities so colour alone does not identify.
    """
    hue = rng.uniform(*_HUE_RANGE)
    sat = rng.uniform(0.45, 0.75)
    val = rng.uniform(0.38, 0.58)
    pale, dark = rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.25)
    spread = rng.uniform(0.2, 0.4)
    out = np.empty((n, 3), np.float32)
    for j in range(n):
        u = rng.random()
        if u < pale:
            out[j] = _hsv(rng.uniform(35, 50), rng.uniform(0.2, 0.4), rng.uniform(0.7, 0.85))
        elif u < pale + dark:
            out[j] = _hsv(hue, sat, val * rng.uniform(0.3, 0.5))
        else:
            out[j] = _hsv(hue + rng.normal(0, 6), sat * math.exp(rng.normal(0, 0.12)),
                          val * math.exp(rng.normal(0, spread)))
    return out


def _render_template(seed: int, identity: int, size: int) -> _Template:
    """Draw one identity's head at ``size`` (the composition resolution): scales, seams, eye, beak, neck."""
    rng = _rng(seed, _S_TEMPLATE, identity)
    h, w = size, int(size * 1.5)
    cx, cy = w - size * 0.5, size * 0.5
    a = size * 0.46
    b = a * rng.uniform(0.55, 0.72)
    outline = _head_outline(rng, a, b) + (cx, cy)
    seeds, cell = _scale_seeds(rng, a, b)
    seeds = seeds + (cx, cy)
    seeds = seeds[(seeds[:, 0] > 1) & (seeds[:, 0] < w - 2) & (seeds[:, 1] > 1) & (seeds[:, 1] < h - 2)]
    colours = _scale_colours(rng, len(seeds))
    seam = max(2, round(size * rng.uniform(0.008, 0.015)))
    fix = 16.0  # fixed-point (shift=4) sub-pixel polygon coordinates

    rgb = np.zeros((h, w, 3), np.float32)
    seams = np.zeros((h, w), np.uint8)
    subdiv = cv2.Subdiv2D((0, 0, w, h))
    subdiv.insert([(float(x), float(y)) for x, y in seeds])
    facets, centres = subdiv.getVoronoiFacetList([])
    owner = np.argmin(((np.asarray(centres)[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
    for facet, j in zip(facets, owner, strict=True):
        poly = np.round(facet * fix).astype(np.int32)
        cv2.fillPoly(rgb, [poly], colours[j].tolist(), cv2.LINE_8, shift=4)
        cv2.polylines(seams, [poly], True, 255, seam, cv2.LINE_AA, shift=4)

    # Domed scales (lighter in the middle) or pale-rimmed ones (as in green turtles), per identity.
    dist = np.clip(cv2.distanceTransform(255 - seams, cv2.DIST_L2, 3) / (0.35 * cell), 0, 1)
    dome = 0.72 + 0.4 * dist ** 0.7
    rim = rng.uniform(0.0, 0.6) * np.exp(-((dist / 0.25) ** 2))
    rgb = rgb * dome[..., None] * (1 - rim[..., None]) + _hsv(42, 0.35, 0.85) * rim[..., None]
    seam_col = _hsv(rng.uniform(20, 35), 0.6, rng.uniform(0.08, 0.16))
    sa = (seams.astype(np.float32) / 255.0)[..., None]
    rgb = rgb * (1 - sa) + seam_col * sa

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    _draw_beak_and_eye(rng, rgb, xx, yy, cx, cy, a, b, seam)
    rgb *= (1.12 - 0.3 * np.clip((yy - (cy - b)) / (2 * b), 0, 1))[..., None]  # lit from above

    head = np.zeros((h, w), np.uint8)
    cv2.fillPoly(head, [np.round(outline * fix).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    neck, neck_rgb = _render_neck(rng, h, w, cx, cy, a, b)
    cv2.polylines(rgb, [np.round(outline * fix).astype(np.int32)], True, seam_col.tolist(), seam, cv2.LINE_AA, 4)
    ha = (head.astype(np.float32) / 255.0)[..., None]
    na = (neck.astype(np.float32) / 255.0)[..., None] * (1 - ha)
    alpha = ha + na
    premul = rgb * ha + neck_rgb * na
    rgba = np.concatenate([premul, alpha], axis=2)
    extent = float(outline[:, 0].max() - outline[:, 0].min())
    return _Template(np.ascontiguousarray(rgba, dtype=np.float32), (cx, cy), extent)


def _draw_beak_and_eye(rng: np.random.Generator, rgb: np.ndarray, xx: np.ndarray, yy: np.ndarray,
                       cx: float, cy: float, a: float, b: float, seam: int) -> None:
    """Features every turtle shares (a horny beak tip, an eye, a jaw line): realism without identity."""
    beak = np.clip((xx - (cx + 0.8 * a)) / (0.06 * a), 0, 1)[..., None]
    beak_col = _hsv(rng.uniform(30, 45), rng.uniform(0.25, 0.45), rng.uniform(0.55, 0.7))
    rgb[:] = rgb * (1 - beak) + beak_col * beak
    ex, ey = cx + 0.48 * a, cy - 0.12 * b
    er = 0.16 * b
    cv2.ellipse(rgb, (round(ex), round(ey)), (round(er * 1.35), round(er * 1.1)), 0, 0, 360,
                _hsv(35, 0.3, 0.55).tolist(), -1, cv2.LINE_AA)
    cv2.circle(rgb, (round(ex), round(ey)), round(er), (0.04, 0.03, 0.02), -1, cv2.LINE_AA)
    cv2.circle(rgb, (round(ex + er * 0.3), round(ey - er * 0.35)), max(1, round(er * 0.22)),
               (0.85, 0.85, 0.8), -1, cv2.LINE_AA)
    jaw = np.array([[cx + 0.97 * a, cy + 0.12 * b], [cx + 0.7 * a, cy + 0.3 * b], [cx + 0.35 * a, cy + 0.42 * b],
                    [cx + 0.05 * a, cy + 0.55 * b]])
    cv2.polylines(rgb, [np.round(jaw * 16).astype(np.int32)], False, (0.06, 0.04, 0.03), seam, cv2.LINE_AA, 4)


def _render_neck(rng: np.random.Generator, h: int, w: int, cx: float, cy: float, a: float,
                 b: float) -> tuple[np.ndarray, np.ndarray]:
    """A wrinkled, scale-less neck widening to the left: turtles are rarely photographed as bare heads."""
    x0 = cx - 0.55 * a
    xs = np.linspace(x0, 0, 12)
    t = (x0 - xs) / x0
    top = cy - b * (rng.uniform(0.55, 0.7) + rng.uniform(0.1, 0.35) * t ** 1.5)
    bottom = cy + b * (rng.uniform(0.75, 0.9) + rng.uniform(0.1, 0.3) * t)
    poly = np.concatenate([np.stack([xs, top], 1), np.stack([xs[::-1], bottom[::-1]], 1)])
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    skin = _hsv(rng.uniform(30, 55), rng.uniform(0.2, 0.4), rng.uniform(0.4, 0.55))
    texture = 1.0 + 0.1 * _smooth_noise(rng, (h, w), 24)
    neck = skin * texture[..., None]
    for _ in range(int(rng.integers(3, 7))):  # wrinkles
        x = rng.uniform(0.1, 0.9) * x0
        arc = np.array([[x + rng.normal(0, 0.05 * a), cy - 1.2 * b], [x - 0.1 * a, cy], [x + rng.normal(0, 0.05 * a),
                        cy + 1.2 * b]])
        cv2.polylines(neck, [np.round(arc * 16).astype(np.int32)], False, (skin * 0.7).tolist(),
                      max(1, round(a * 0.015)), cv2.LINE_AA, 4)
    neck = cv2.GaussianBlur(neck, (0, 0), max(1.0, a * 0.01))
    fade = np.clip(0.55 + 0.45 * np.arange(w, dtype=np.float32) / x0, 0.55, 1.0)  # falls into shade
    return mask, neck * fade[None, :, None]


