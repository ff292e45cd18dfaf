"""A t-SNE map of embeddings coloured by identity: do photos of one turtle cluster together?

A qualitative check only (t-SNE distorts global distances); the metrics are the quantitative one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

__all__ = ["plot_tsne", "tsne_perplexity"]

LEGEND_MAX_IDS = 30
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# Kelly's colours of maximum contrast (white and black left out): twenty that an eye tells apart
DISTINCT = ("#0067a5", "#f38400", "#008856", "#be0032", "#875692", "#882d17", "#e68fac", "#848482", "#dcd300",
            "#2b3d26", "#e25822", "#a1caf1", "#604e97", "#8db600", "#b3446c", "#c2b280", "#f99379", "#654522",
            "#f6a600", "#f3c300")
CAPTION_GALLERY = ("Each point is a photo; one colour and shape per turtle. What to look for: each turtle's photos in\n"
                   "one tight group, apart from the others. Groups that mix turtles are the ones the model confuses.\n"
                   "Distances between groups mean little (t-SNE keeps neighbours, not global distances).")
CAPTION = ("Each point is a photo; one colour and shape per turtle; outlined points are the queries (new encounters).\n"
           "What to look for: each query inside its own turtle's group. A query in another turtle's group is a\n"
           "likely mistake. Distances between groups mean little (t-SNE keeps neighbours, not global distances).")


def tsne_perplexity(n: int) -> float:
    """sklearn's default of 30 needs n > 30; scale it down so even six points give a (crude) map."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def identity_styles(names: Sequence[str]) -> dict[str, tuple[tuple[float, ...], str]]:
    """A (colour, marker) per identity, no two alike: twenty distinct colours (the first twenty turtles differ
    by colour alone), and a new marker shape for every further twenty."""
    styles = {}
    for i, name in enumerate(names):
        colour = to_rgba(DISTINCT[i % len(DISTINCT)])
        marker = MARKERS[(i // len(DISTINCT)) % len(MARKERS)]
        if i >= len(DISTINCT) * len(MARKERS):  # beyond 160 identities: shades of a colormap, cycling markers
            colour = colormaps["turbo"]((i * 0.6180339887) % 1.0)
        styles[name] = (tuple(colour), marker)
    return styles


def plot_tsne(
    embeddings: np.ndarray,
    identities: Sequence[str],
    out_path: str | Path,
    max_points: int = 2000,
    seed: int = 0,
    queries: tuple[np.ndarray, Sequence[str]] | None = None,
) -> Path:
    """Project gallery embeddings (and the evaluation ``queries``, drawn outlined) to 2-D with t-SNE, one colour
    and marker per identity, with a caption of what to look for.

    Embeddings are L2-normalised first so the map reflects the cosine geometry retrieval uses. Above
    ``max_points`` a seeded random subset is drawn (t-SNE is quadratic-ish), and the title says so.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    ids = np.asarray([str(i) for i in identities])
    if x.ndim != 2 or x.shape[0] != len(ids):
        raise ValueError(f"embeddings {x.shape} and {len(ids)} identities do not line up")
    is_query = np.zeros(len(ids), bool)
    if queries is not None:
        q = np.asarray(queries[0], dtype=np.float32)
        q_ids = np.asarray([str(i) for i in queries[1]])
        if q.ndim != 2 or q.shape[0] != len(q_ids) or (len(q) and q.shape[1] != x.shape[1]):
            raise ValueError(f"query embeddings {q.shape} and {len(q_ids)} identities do not line up")
        x, ids = np.concatenate([x, q.reshape(-1, x.shape[1])]), np.concatenate([ids, q_ids])
        is_query = np.concatenate([is_query, np.ones(len(q_ids), bool)])
    if x.shape[0] < 2:
        raise ValueError("t-SNE needs at least two embeddings")
    total = x.shape[0]
    rng = np.random.default_rng(seed)
    if total > max_points:
        keep = np.sort(rng.choice(total, size=max_points, replace=False))
        x, ids, is_query = x[keep], ids[keep], is_query[keep]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    tsne = TSNE(n_components=2, perplexity=tsne_perplexity(n), init="pca", learning_rate="auto",
                random_state=seed)
    # One OpenMP thread: on a busy 2-core box the default spin-waiting threads made t-SNE 4-25× slower.
    with threadpool_limits(limits=1):
        xy = tsne.fit_transform(x)

    names = sorted(set(ids))
    styles = identity_styles(names)
    legend = len(names) <= LEGEND_MAX_IDS
    fig = Figure(figsize=(9, 8) if legend else (8, 8), dpi=100)
    ax = fig.add_axes((0.03, 0.11, 0.72 if legend else 0.94, 0.83))  # the caption's three lines just below
    size = 22 if n > 300 else 40
    for name in names:
        colour, marker = styles[name]
        gallery, query = (ids == name) & ~is_query, (ids == name) & is_query
        ax.scatter(xy[gallery, 0], xy[gallery, 1], s=size, color=colour, marker=marker, label=name, alpha=0.85,
                   edgecolors="none")
        ax.scatter(xy[query, 0], xy[query, 1], s=size * 2.2, facecolors="white", edgecolors=[colour],
                   marker=marker, linewidths=2)
    sample = f" (random {n} of {total}, cap {max_points})" if total > n else ""
    what = f"{int((~is_query).sum())} catalogue photos" + (f" + {int(is_query.sum())} queries" if is_query.any()
                                                          else "")
    ax.set_title(f"t-SNE map of {what}, {len(names)} turtles{sample}", fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if is_query.any():
            handles.append(ax.scatter([], [], s=size * 2.2, facecolors="white", edgecolors="black", linewidths=2))
            labels.append("query (outlined)")
        ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False,
                  title="turtle")
    fig.text(0.03, 0.02, CAPTION if is_query.any() else CAPTION_GALLERY, fontsize=10, color="#333333",
             va="bottom")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100, format="png", facecolor="white")
    return out_path
