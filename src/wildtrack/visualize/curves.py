"""training_curves.png: did training converge, and did the frozen warm-up help? Loss and validation per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["plot_training_curves"]

VALIDATION = {"val_R@1": "Recall@1: share of queries with their own turtle first",
              "val_mAP": "mAP: how high all of a turtle's photos rank"}
FROZEN_PHASE = "head"  # trainer's name for the epochs with the backbone frozen


def plot_training_curves(history: Sequence[dict], path: str | Path) -> Path:
    """Loss (left) and validation retrieval on new encounters (right) per epoch; the frozen warm-up is shaded."""
    epochs = [int(row["epoch"]) for row in history]
    fig = Figure(figsize=(11, 4), dpi=90)
    loss_ax, val_ax = fig.subplots(1, 2)
    frozen = [e for e, row in zip(epochs, history, strict=True) if row.get("phase") == FROZEN_PHASE]
    for ax in (loss_ax, val_ax):
        if frozen:
            ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="#dddddd", zorder=0,
                       label="backbone frozen (warm-up)")
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    loss_ax.plot(epochs, [float(row["loss"]) for row in history], marker="o", color="#444444", label="training loss")
    loss_ax.set(title="Training loss (lower is better)", ylabel="loss")
    loss_ax.legend(frameon=False)
    for key, label in VALIDATION.items():
        if all(key in row for row in history):
            val_ax.plot(epochs, [float(row[key]) for row in history], marker="o", label=label)
    # Recall@1 is a share of queries, mAP a mean of average precisions: both run from 0 to 1, neither is the other
    val_ax.set(title="Validation on new encounters (higher is better)", ylabel="score, 0 (worst) to 1 (best)",
               ylim=(0, 1.02))
    val_ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90, facecolor="white")
    return path
