"""One photo: the identity's template posed in its encounter's scene, then blurred, tinted and encoded."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from wildtrack.data.synth.common import _S_IMAGE, _SUPERSAMPLE, JPEG_QUALITY, _rng
from wildtrack.data.synth.plan import _ImageSpec
from wildtrack.data.synth.scene import _encounter_look, _Look
from wildtrack.data.synth.turtle import _render_template, _Template


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


