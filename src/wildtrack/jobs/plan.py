"""Cutting a job into shards whose names say what went in, so a re-run can tell which ones are done."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from wildtrack.data import storage

__all__ = ["DEFAULT_SHARD_SIZE", "Shard", "plan_shards"]

DEFAULT_SHARD_SIZE = 256  # photos per shard: ~50 MB of local features, a few seconds of one worker's time


@dataclass(frozen=True)
class Shard:
    """``items`` are (id, absolute path or object URL) of the photos one task handles; ``key`` names its output
    file."""

    key: str
    items: tuple[tuple[str, str], ...]


def plan_shards(items: Sequence[tuple[str, str]], size: int, salt: str) -> list[Shard]:
    """Consecutive runs of ``size`` items. A shard's key hashes ``salt`` (the job and its model or extractor)
    with each photo's id, path and version (mtime and size of a file, ETag and size of an object): the same
    photos, unchanged, give the same key."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    shards = []
    for start in range(0, len(items), size):
        chunk = tuple((str(i), str(p)) for i, p in items[start:start + size])
        h = hashlib.sha256(salt.encode())
        for image_id, path in chunk:
            try:
                stamp = storage.stamp(path)
            except OSError:
                stamp = "missing"  # reported by the task; the key still changes once the file appears
            h.update(f"\0{image_id}\0{path}\0{stamp}".encode())
        shards.append(Shard(h.hexdigest()[:32], chunk))
    return shards
