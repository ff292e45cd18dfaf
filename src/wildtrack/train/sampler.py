"""Which images go into each batch.

P×K batches (P identities × K images each) give every anchor positives and negatives in the same batch, which
triplet mining needs. A hard-negative memory over-samples identities that were confused last epoch.
"""

from __future__ import annotations

import numpy as np


def shuffled_batches(num_items: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Plain shuffled batches for softmax/ArcFace training: ``(steps, batch_size)`` indices, last batch
    filled by wrapping around so every step has a fixed shape."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_items)
    steps = max(1, int(np.ceil(num_items / batch_size)))
    order = np.resize(order, steps * batch_size)
    return order.reshape(steps, batch_size)


class PKSampler:
    """P identities × K images per batch, with an optional memory of each identity's confusers."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int = 0, hard_fraction: float = 0.5):
        labels = np.asarray(labels)
        self.classes = np.unique(labels)
        if len(self.classes) < 2:
            raise ValueError("P×K sampling needs at least 2 identities")
        self.p = min(p, len(self.classes))
        self.k = k
        self.seed = seed
        self.hard_fraction = hard_fraction
        self.members = {c: np.flatnonzero(labels == c) for c in self.classes}
        self.num_items = len(labels)
        self.confusers: dict[int, list[int]] = {}

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def update_confusers(self, embeddings: np.ndarray, labels: np.ndarray, top: int = 3) -> None:
        """Remember, per identity, the ``top`` identities whose mean embedding is closest to its own."""
        labels = np.asarray(labels)
        classes = [c for c in self.classes if np.any(labels == c)]
        means = np.stack([embeddings[labels == c].mean(axis=0) for c in classes])
        means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
        sim = means @ means.T
        np.fill_diagonal(sim, -np.inf)
        order = np.argsort(-sim, axis=1, kind="stable")[:, :top]
        self.confusers = {int(classes[i]): [int(classes[j]) for j in row] for i, row in enumerate(order)}

    def _pick_classes(self, rng: np.random.Generator) -> list[int]:
        chosen: list[int] = []
        n_seed = self.p if not self.confusers else max(1, int(round(self.p * (1 - self.hard_fraction))))
        for c in rng.permutation(self.classes):
            if len(chosen) >= n_seed:
                break
            chosen.append(int(c))
        # Fill the rest with confusers of those already chosen, then at random.
        for c in list(chosen):
            for other in self.confusers.get(c, []):
                if len(chosen) < self.p and other not in chosen:
                    chosen.append(other)
        for c in rng.permutation(self.classes):
            if len(chosen) >= self.p:
                break
            if int(c) not in chosen:
                chosen.append(int(c))
        return chosen

    def epoch(self, epoch: int) -> np.ndarray:
        """``(steps, P·K)`` indices; about one pass over the data per epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        steps = max(1, self.num_items // self.batch_size)
        batches = []
        for _ in range(steps):
            idx = []
            for c in self._pick_classes(rng):
                pool = self.members[c]
                idx.extend(rng.choice(pool, size=self.k, replace=len(pool) < self.k))
            batches.append(idx)
        return np.asarray(batches, dtype=np.int64)
