"""A t-SNE map of embeddings coloured by identity: do photos of one turtle cluster together?

A qualitative check only (t-SNE distorts global distances); the metrics are the quantitative one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

__all__ = ["plot_tsne", "tsne_perplexity"]

LEGEND_MAX_IDS = 20


def tsne_perplexity(n: int) -> float:
    """sklearn's default of 30 needs n > 30; scale it down so even six points give a (crude) map."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def plot_tsne(
    embeddings: np.ndarray,
    identities: Sequence[str],
    out_path: str | Path,
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """Project embeddings to 2-D with t-SNE and plot them, one colour per identity.

    Embeddings are L2-normalised first so the map reflects the cosine geometry retrieval uses. Above
    ``max_points`` a seeded random subset is drawn (t-SNE is quadratic-ish), and the title says so.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    ids = np.asarray([str(i) for i in identities])
    if x.ndim != 2 or x.shape[0] != len(ids):
        raise ValueError(f"embeddings {x.shape} and {len(ids)} identities do not line up")
    if x.shape[0] < 2:
        raise ValueError("t-SNE needs at least two embeddings")
    total = x.shape[0]
    rng = np.random.default_rng(seed)
    if total > max_points:
        keep = np.sort(rng.choice(total, size=max_points, replace=False))
        x, ids = x[keep], ids[keep]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    tsne = TSNE(n_components=2, perplexity=tsne_perplexity(n), init="pca", learning_rate="auto",
                random_state=seed)
    # One OpenMP thread: on a busy 2-core box the default spin-waiting threads made t-SNE 4-25× slower.
    with threadpool_limits(limits=1):
        xy = tsne.fit_transform(x)

    names = sorted(set(ids))
    cmap = colormaps["tab20" if len(names) <= 20 else "turbo"]
    fig = Figure(figsize=(8, 7.2) if len(names) <= LEGEND_MAX_IDS else (7.2, 7.2), dpi=100)
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        sel = ids == name
        # Many identities: golden-ratio hops along the colormap so neighbouring names differ in colour.
        # tab20 pairs dark/light shades of one hue; take the dark ones first so neighbours differ.
        colour = cmap((2 * i) % 20 + (i % 20) // 10) if len(names) <= 20 else cmap((i * 0.6180339887) % 1.0)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=22 if n > 300 else 40, color=colour, label=name,
                   alpha=0.85, edgecolors="none")
    sample = f" (random {n} of {total}, cap {max_points})" if total > n else ""
    ax.set_title(f"t-SNE of {n} embeddings, {len(names)} identities{sample}", fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) <= LEGEND_MAX_IDS:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False,
                  title="identity")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100, format="png", facecolor="white")
    return out_path
