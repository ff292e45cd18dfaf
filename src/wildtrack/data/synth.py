"""Procedural synthetic sea-turtle heads: a stand-in dataset for demos and tests (real photos can't ship).

Each identity is a head silhouette tiled with polygonal "scales" (a Voronoi tessellation, like the facial
scutes that real re-identification relies on) whose layout, colours and seams are fixed per individual.
Every image re-renders that template with a random pose, crop, blur, colour cast, noise and background.

The generator deliberately reproduces the trap of real field data: one encounter (one turtle, one day) shares
its scenery and lighting, and every encounter draws these independently. A model that learns the
scenery instead of the scales looks great on random splits and fails on time-aware ones, exactly as with
real photos.

Every random draw is seeded from ``(seed, stream, identity, encounter/image)``, so the output is
byte-identical whatever the worker count or scheduling.
"""

from __future__ import annotations

import colorsys
import csv
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import cv2
import numpy as np

__all__ = ["METADATA_COLUMNS", "METADATA_NAME", "generate_synthetic"]

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


# --------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _ImageSpec:
    """One output file: which identity, which image, which encounter and when."""

    identity: int
    name: str
    index: int
    encounter: int
    date: str
    file_name: str


def _width(n: int) -> int:
    """Zero-padding width so names sort correctly (at least 3 digits)."""
    return max(3, len(str(max(n - 1, 0))))


def _encounter_dates(seed: int, identity: int, n: int) -> list[date]:
    """``n`` distinct, sorted dates spread over a few years."""
    days = _rng(seed, _S_DATES, identity).choice(_SPAN_DAYS, size=n, replace=False)
    return [_FIRST_DAY + timedelta(days=int(d)) for d in np.sort(days)]


def _encounter_sizes(seed: int, identity: int, images: int, encounters: int) -> list[int]:
    """Images per encounter: one each, the rest spread at random (real encounters vary in size)."""
    extra = _rng(seed, _S_SPLIT, identity).multinomial(images - encounters, [1.0 / encounters] * encounters)
    return [1 + int(e) for e in extra]


def _plan(identities: int, images_per_id: int, encounters_per_id: int, seed: int) -> list[list[_ImageSpec]]:
    """Every file to write, grouped by identity, in date order (image index increases with time)."""
    id_w, im_w = _width(identities), _width(images_per_id)
    plan = []
    for i in range(identities):
        name = f"t{i:0{id_w}d}"
        n_enc = min(encounters_per_id, images_per_id)
        dates = _encounter_dates(seed, i, n_enc)
        sizes = _encounter_sizes(seed, i, images_per_id, n_enc)
        encs = np.repeat(np.arange(n_enc), sizes)
        plan.append([
            _ImageSpec(i, name, k, int(e), dates[e].isoformat(), f"{name}/{name}_{k:0{im_w}d}.jpg")
            for k, e in enumerate(encs)
        ])
    return plan


# --------------------------------------------------------------------------------------------- identity


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


# ------------------------------------------------------------------------------------------- encounters


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


# ------------------------------------------------------------------------------------------------ images


def _pose(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Angle (degrees), head length (fraction of frame) and centre (fractions of frame), drawn per image.

    Pose is independent of the encounter on purpose: the scenery is the shortcut to emulate, and a shared
    pose would only add near-duplicates.
    """
    angle = rng.uniform(-25, 25)
    scale = math.exp(rng.uniform(math.log(0.6), math.log(1.1)))
    cx, cy = rng.uniform(0.38, 0.62), rng.uniform(0.38, 0.62)
    if rng.random() < 0.12:  # head partly out of frame
        d = rng.uniform(0, 2 * np.pi)
        cx, cy = 0.5 + math.cos(d) * rng.uniform(0.3, 0.45), 0.5 + math.sin(d) * rng.uniform(0.3, 0.45)
    return angle, scale, cx, cy


def _compose(rng: np.random.Generator, tpl: _Template, look: _Look, size: int) -> np.ndarray:
    """Place the posed head (and its soft shadow) on the encounter's scenery.

    The head is warped at 2x and area-downscaled (anti-aliased seams); the smooth scenery needs no 2x.
    """
    angle, scale, cx, cy = _pose(rng)
    canvas = size * _SUPERSAMPLE
    m = cv2.getRotationMatrix2D(tpl.center, angle, scale * canvas / tpl.extent)
    m[:, 2] += (cx * canvas - tpl.center[0], cy * canvas - tpl.center[1])
    head = cv2.warpAffine(tpl.rgba, m, (canvas, canvas), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    head = cv2.resize(head, (size, size), interpolation=cv2.INTER_AREA)
    spare = look.background.shape[0] - size
    ox, oy = (int(v) for v in rng.integers(0, spare + 1, 2))
    bg = look.background[oy:oy + size, ox:ox + size]

    alpha = head[..., 3]
    shift = np.float32([[1, 0, size * 0.03], [0, 1, size * 0.05]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(alpha, shift, (size, size)), (0, 0), size * 0.03)
    keep = (1 - float(rng.uniform(0.2, 0.4)) * shadow) * (1 - alpha)
    return head[..., :3] + bg * keep[..., None]


def _develop(rng: np.random.Generator, img: np.ndarray, look: _Look) -> np.ndarray:
    """Water haze, light fall-off, colour cast, exposure, focus and sensor noise: the camera's part.

    Scalars are Python floats so float32 images are never silently promoted to float64 (2x slower).
    """
    size = img.shape[0]
    img = img * (1 - look.haze) + look.water * look.haze
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    light = 1 + look.light_strength * (math.cos(look.light_angle) * ramp[None, :]
                                       + math.sin(look.light_angle) * ramp[:, None])
    gain = (look.gain * np.exp(rng.normal(0, 0.03, 3))).astype(np.float32)
    img = img * (light[..., None] * gain)
    contrast = look.contrast * math.exp(rng.normal(0, 0.04))
    offset = 0.5 - 0.5 * contrast + look.brightness + float(rng.normal(0, 0.02))
    img = cv2.pow(np.clip(img * contrast + offset, 0, 1), look.gamma * math.exp(rng.normal(0, 0.03)))
    sigma = max(0.05, look.blur * math.exp(rng.normal(0, 0.25))) * size / 128
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.standard_normal(img.shape, dtype=np.float32) * look.noise
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def _render_image(seed: int, spec: _ImageSpec, tpl: _Template, look: _Look, image_size: int) -> bytes:
    """One JPEG: pose and compose, develop, encode."""
    rng = _rng(seed, _S_IMAGE, spec.identity, spec.index)
    rgb = _develop(rng, _compose(rng, tpl, look, image_size), look)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
        raise RuntimeError(f"JPEG encoding failed for {spec.file_name}")
    return buf.tobytes()


def _render_identity(seed: int, specs: Sequence[_ImageSpec], image_size: int, out_dir: Path) -> int:
    """All images of one identity: the template and each encounter's scenery are rendered only once."""
    tpl = _render_template(seed, specs[0].identity, image_size * _SUPERSAMPLE)
    looks: dict[int, _Look] = {}
    (out_dir / specs[0].name).mkdir(parents=True, exist_ok=True)
    for spec in specs:
        if spec.encounter not in looks:
            looks[spec.encounter] = _encounter_look(seed, spec.identity, spec.encounter, image_size)
        data = _render_image(seed, spec, tpl, looks[spec.encounter], image_size)
        (out_dir / spec.file_name).write_bytes(data)
    return len(specs)


# ---------------------------------------------------------------------------------------------- output


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _previous_files(out_dir: Path) -> list[str] | None:
    """Files listed by a previous synth run's metadata.csv, or None if the folder is not one."""
    meta = out_dir / METADATA_NAME
    if not meta.is_file():
        return None
    try:
        with meta.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            if tuple(next(reader, ())) != METADATA_COLUMNS:
                return None
            names = [row[0] for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return names if all(_FILE_RE.match(n) for n in names) else None


def _prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir``, or clear a previous synth output from it; never touch anyone else's files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        out_dir.mkdir(parents=True, exist_ok=True)
        return
    previous = _previous_files(out_dir)
    if previous is None:
        raise ValueError(
            f"{out_dir} is not empty and is not a previous synthetic dataset (no {METADATA_NAME} with columns "
            f"{','.join(METADATA_COLUMNS)}); refusing to write into it. Choose an empty or new folder."
        )
    # Remove only what the previous run wrote, so a smaller new dataset leaves no stale identities behind.
    for name in previous:
        (out_dir / name).unlink(missing_ok=True)
    for name in sorted({n.split("/")[0] for n in previous}):
        folder = out_dir / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (out_dir / METADATA_NAME).unlink()


def _write_metadata(out_dir: Path, plan: list[list[_ImageSpec]]) -> None:
    """Written before the images, so an interrupted run is still recognised (and overwritten) next time."""
    tmp = out_dir / (METADATA_NAME + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(METADATA_COLUMNS)
        for specs in plan:
            for s in specs:
                writer.writerow([s.file_name, s.name, s.date, f"{s.name}_e{s.encounter}"])
    os.replace(tmp, out_dir / METADATA_NAME)


def generate_synthetic(
    out_dir: str | Path,
    identities: int = 20,
    images_per_id: int = 8,
    image_size: int = 128,
    encounters_per_id: int = 3,
    seed: int = 0,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write a synthetic re-identification dataset and return its folder.

    Layout: ``out_dir/<identity>/<identity>_<k>.jpg`` plus ``out_dir/metadata.csv`` with columns
    ``file_name,identity,date,encounter`` (``file_name`` relative to ``out_dir``, ``date`` ISO, ``encounter`` a
    label like ``t000_e1`` unique across the dataset). Image indices increase with the encounter date.
    Each identity gets ``min(encounters_per_id, images_per_id)`` encounters on distinct dates, each with at
    least one image. ``progress(n)`` is called with the number of images *just* finished (an increment, as
    ``tqdm.update`` expects), once per identity. The output is byte-identical for the same arguments and
    seed whatever ``workers`` is. A non-empty folder that is not a previous synthetic output is refused.
    """
    identities = _check_int("identities", identities, 1)
    images_per_id = _check_int("images_per_id", images_per_id, 1)
    image_size = _check_int("image_size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    encounters_per_id = _check_int("encounters_per_id", encounters_per_id, 1, _SPAN_DAYS)
    seed = _check_int("seed", seed, 0)
    if workers is not None:
        workers = _check_int("workers", workers, 1)
    workers = workers or os.cpu_count() or 1

    out = Path(out_dir)
    _prepare_out_dir(out)
    plan = _plan(identities, images_per_id, encounters_per_id, seed)
    _write_metadata(out, plan)

    if workers == 1:
        for specs in plan:
            n = _render_identity(seed, specs, image_size, out)
            if progress is not None:
                progress(n)
        return out
    # Threads, not processes: OpenCV and numpy release the GIL for the heavy work, and threads are safe to
    # start from a process that has already loaded TensorFlow (fork is not).
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_render_identity, seed, specs, image_size, out) for specs in plan]
        try:
            for fut in as_completed(futures):
                n = fut.result()
                if progress is not None:
                    progress(n)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return out
