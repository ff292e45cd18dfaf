"""Match evidence: a query photo beside a catalogue photo, the geometrically verified keypoint pairs drawn between
them (the way HotSpotter and Wildbook show a match), so a biologist can see which scutes and spots agree.

This module only draws: it takes the two photos and the point pairs in each photo's original pixels (from
:func:`wildtrack.matching.inlier_pairs.match_evidence`), and never computes a match itself.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from wildtrack.images import open_image

__all__ = ["match_picture", "match_picture_png"]

SIDE_PX = 560  # each photo's longer side in the picture
GAP_PX = 16
DPI = 100
TITLE_PX = 40
MAX_LINES = 150  # beyond this the picture is a hairball; the strongest are not known here, so a seeded sample


def _photo(source: str | Path | bytes, side: int) -> tuple[np.ndarray, float]:
    """The upright photo, longer side ``side``, and the factor from original pixels to its pixels."""
    img = open_image(source, max_side=side)
    original = img.info.get("original_max_side", max(img.size))
    scale = side / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.Resampling.BILINEAR)
    return np.asarray(img), max(img.size) / original


def match_picture_png(query: str | Path | bytes, target: str | Path | bytes, query_xy: np.ndarray,
                      target_xy: np.ndarray, query_label: str, target_label: str, title: str) -> bytes:
    """The picture as PNG bytes: ``query`` left, ``target`` right, line ``i`` joining ``query_xy[i]`` and
    ``target_xy[i]`` (original pixels of each photo, ``(N, 2)`` x, y), with a label under each photo."""
    query_xy = np.asarray(query_xy, dtype=np.float64).reshape(-1, 2)
    target_xy = np.asarray(target_xy, dtype=np.float64).reshape(-1, 2)
    if len(query_xy) != len(target_xy):
        raise ValueError(f"{len(query_xy)} query points but {len(target_xy)} catalogue points: pairs must align")
    left, left_scale = _photo(query, SIDE_PX)
    right, right_scale = _photo(target, SIDE_PX)
    height = max(left.shape[0], right.shape[0])
    width = left.shape[1] + GAP_PX + right.shape[1]
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    top_l, top_r = (height - left.shape[0]) // 2, (height - right.shape[0]) // 2
    canvas[top_l:top_l + left.shape[0], : left.shape[1]] = left
    x_r = left.shape[1] + GAP_PX
    canvas[top_r:top_r + right.shape[0], x_r:] = right

    label_px = 40
    fig = Figure(figsize=(width / DPI, (height + TITLE_PX + label_px) / DPI), dpi=DPI)
    fig.patch.set_facecolor("white")
    total = height + TITLE_PX + label_px
    ax = fig.add_axes((0, label_px / total, 1, height / total))
    ax.imshow(canvas, interpolation="bilinear")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    shown = np.arange(len(query_xy))
    if len(shown) > MAX_LINES:
        shown = np.sort(np.random.default_rng(0).choice(shown, MAX_LINES, replace=False))
    colours = _colours(len(shown))
    for colour, i in zip(colours, shown, strict=True):
        (x0, y0), (x1, y1) = query_xy[i] * left_scale, target_xy[i] * right_scale
        y0, x1, y1 = y0 + top_l, x1 + x_r, y1 + top_r
        ax.plot([x0, x1], [y0, y1], color=colour, linewidth=1.2, alpha=0.85)
        ax.plot([x0, x1], [y0, y1], "o", color=colour, markersize=4, markeredgecolor="white", markeredgewidth=0.6)
    fig.text(0.5, 1 - 10 / total, title, ha="center", va="top", fontsize=13, fontweight="bold")
    fig.text(left.shape[1] / 2 / width, 26 / total, query_label, ha="center", va="center", fontsize=11,
             color="#1f5ab4")
    fig.text((x_r + right.shape[1] / 2) / width, 26 / total, target_label, ha="center", va="center", fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png", facecolor="white")
    return buf.getvalue()


def match_picture(query: str | Path | bytes, target: str | Path | bytes, query_xy: np.ndarray,
                  target_xy: np.ndarray, out_path: str | Path, query_label: str, target_label: str,
                  title: str) -> Path:
    """:func:`match_picture_png` written to ``out_path``."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(match_picture_png(query, target, query_xy, target_xy, query_label, target_label, title))
    return out_path


def _colours(n: int) -> list[tuple[float, float, float, float]]:
    """Distinct, bright hues so neighbouring lines can be told apart."""
    from matplotlib import colormaps

    cmap = colormaps["hsv"]
    return [cmap(i / max(n, 1)) for i in range(n)]
