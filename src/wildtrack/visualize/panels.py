"""Retrieval panels: the query photo beside its top-K gallery matches, right ones framed green, wrong red.

This is the picture a biologist uses to judge a model, so it favours legibility over density: equal cells,
photos letterboxed (never cropped, a scute pattern at the edge matters), large labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from PIL import Image, ImageOps

from wildtrack.images import ImageError, open_image

__all__ = ["PanelItem", "choose_examples", "panel_title", "retrieval_panel"]

GREEN = (0, 158, 47)
RED = (214, 39, 40)
QUERY_COLOUR = (31, 90, 180)
LETTERBOX = (232, 232, 232)

DPI = 100
COLUMN_IN = 3.0  # one column per photo
CELL_IN = 2.7  # the square photo cell inside a column
MARGIN_IN = (COLUMN_IN - CELL_IN) / 2
BOTTOM_IN = 0.8  # room for three label lines under each photo
HEIGHT_IN = 3.85
BORDER_PX = 8


@dataclass(frozen=True)
class PanelItem:
    """One photo in a panel. ``correct`` None means "derive it from the identity" (queries ignore it).

    ``score`` is the number the panel's ranking is ordered by, named ``score_name`` (``P(same)`` after re-ranking,
    ``cosine`` otherwise); ``detail`` is a smaller third line (e.g. inliers and the cosine)."""

    path: str | Path
    identity: str
    score: float | None = None
    correct: bool | None = None
    score_name: str = "cosine"
    detail: str | None = None


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _thumbnail(path: str | Path, cell_px: int, colour: tuple[int, int, int]) -> np.ndarray:
    """The photo fitted inside a square cell (aspect kept), framed with ``colour``; a grey tile if unreadable."""
    inner = cell_px - 2 * BORDER_PX
    tile = Image.new("RGB", (cell_px, cell_px), colour)
    canvas = Image.new("RGB", (inner, inner), LETTERBOX)
    try:
        photo = ImageOps.contain(open_image(path, size=(inner, inner)), (inner, inner),
                                 Image.Resampling.BILINEAR)
        canvas.paste(photo, ((inner - photo.width) // 2, (inner - photo.height) // 2))
    except ImageError:
        canvas = Image.new("RGB", (inner, inner), (160, 160, 160))
    tile.paste(canvas, (BORDER_PX, BORDER_PX))
    return np.asarray(tile)


def retrieval_panel(
    query: PanelItem, results: Sequence[PanelItem], out_path: str | Path, title: str | None = None,
    failure: bool | None = None,
) -> Path:
    """Draw the query (left) and its ranked ``results`` (right) to a PNG of (K+1)·300 × 385 px.

    ``failure`` frames the panel red: a query the product named wrong. None: when the first result is another
    turtle (a caller showing a ranking that is not the product's answer passes False)."""
    if not results:
        raise ValueError("a retrieval panel needs at least one result")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    columns = len(results) + 1
    width_in = COLUMN_IN * columns
    fig = Figure(figsize=(width_in, HEIGHT_IN), dpi=DPI)
    fig.patch.set_facecolor("white")
    cell_px = round(CELL_IN * DPI)

    def draw(col: int, item: PanelItem, colour: tuple[int, int, int], lines: list[str]) -> None:
        left = (col * COLUMN_IN + MARGIN_IN) / width_in
        ax = fig.add_axes((left, BOTTOM_IN / HEIGHT_IN, CELL_IN / width_in, CELL_IN / HEIGHT_IN))
        ax.imshow(_thumbnail(item.path, cell_px, colour), interpolation="nearest")
        ax.set_axis_off()
        x = (col * COLUMN_IN + COLUMN_IN / 2) / width_in
        fig.text(x, (BOTTOM_IN - 0.08) / HEIGHT_IN, lines[0], ha="center", va="top", fontsize=12,
                 fontweight="bold", color=_hex(colour))
        if len(lines) > 1:
            fig.text(x, (BOTTOM_IN - 0.30) / HEIGHT_IN, lines[1], ha="center", va="top", fontsize=11.5,
                     fontweight="bold" if col else "normal", color=_hex(colour))
        if len(lines) > 2:
            fig.text(x, (BOTTOM_IN - 0.52) / HEIGHT_IN, lines[2], ha="center", va="top", fontsize=9.5,
                     color="#555555")

    draw(0, query, QUERY_COLOUR, [f"QUERY  {query.identity}", _short_name(query.path)])
    for rank, item in enumerate(results, start=1):
        correct = item.correct if item.correct is not None else item.identity == query.identity
        colour = GREEN if correct else RED
        second = f"#{rank}" + (f"   {item.score_name} {item.score:.3f}" if item.score is not None else "")
        draw(rank, item, colour, [f"{'✓' if correct else '✗'} {item.identity}", second,
                                  *([item.detail] if item.detail else [])])

    fig.add_artist(Line2D([COLUMN_IN / width_in] * 2, [0.04, 0.92], color="#999999", linewidth=1.5))
    if title is None:
        title = f"Query {query.identity}: top {len(results)} gallery matches (green = same turtle)"
    first = results[0]
    first_wrong = not (first.correct if first.correct is not None else first.identity == query.identity)
    first_wrong = first_wrong if failure is None else failure
    fig.text(0.5, 1 - 0.06 / HEIGHT_IN, title, ha="center", va="top", fontsize=13,
             color=_hex(RED) if first_wrong else "black", fontweight="bold" if first_wrong else "normal")
    if first_wrong:  # the whole panel framed red: a failure is seen at a glance among successes
        fig.patches.append(Rectangle((0.002, 0.004), 0.996, 0.992, transform=fig.transFigure, fill=False,
                                     edgecolor=_hex(RED), linewidth=4))
    fig.savefig(out_path, dpi=DPI, format="png", facecolor="white")
    return out_path


def _short_name(path: str | Path, limit: int = 30) -> str:
    name = Path(path).name
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def choose_examples(first_correct_rank: np.ndarray, n: int, seed: int = 0) -> list[int]:
    """Pick ``n`` query indices, half successes (rank 0), half failures (rank > 0), for the report.

    A random but seeded pick: a report that shows only successes (or only failures) misleads. When one
    kind is short the other fills in. Queries with no match in the gallery (rank -1) are never picked:
    no ranking of them can be right. Returns successes then failures, each in index order.
    """
    ranks = np.asarray(first_correct_rank).ravel()
    if n <= 0:
        return []
    successes = np.flatnonzero(ranks == 0)
    failures = np.flatnonzero(ranks > 0)
    n_fail = min(len(failures), max(n - len(successes), (n + 1) // 2))
    n_succ = min(len(successes), n - n_fail)
    rng = np.random.default_rng(seed)
    chosen_s = np.sort(rng.choice(successes, size=n_succ, replace=False)) if n_succ else successes[:0]
    chosen_f = np.sort(rng.choice(failures, size=n_fail, replace=False)) if n_fail else failures[:0]
    return [int(i) for i in chosen_s] + [int(i) for i in chosen_f]


def panel_title(identity: str, date: object, first_correct_rank: int, how: str = "") -> str:
    """What a reader needs first: whose photo, when, and whether the model named it right (``first_correct_rank``:
    where the query's own turtle comes, 0 first)."""
    when = f" on {date}" if date else " (undated)"
    if first_correct_rank == 0:
        verdict = "RIGHT: first match is the same turtle"
    elif first_correct_rank > 0:
        verdict = f"WRONG: another turtle comes first; the right one at rank {first_correct_rank + 1}"
    else:
        verdict = "turtle not in the catalogue"
    return f"Query {identity}{when}: {verdict}{how}"
