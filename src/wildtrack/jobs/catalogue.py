"""A catalogue's jobs, resumable on either engine: embed its photos, extract its local features into the store.

Each shard's result is written under its input-addressed name as soon as it arrives (temp file, fsync, rename),
so a job killed half-way leaves complete shards only, and the same job run again reuses them and runs the rest.
Nothing here touches the committed index: the caller commits what these return in one generation.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.atomic import atomic_write_bytes
from wildtrack.data import storage
from wildtrack.embed import Embedder, EmbedResult, embed_files_cached
from wildtrack.features import Extractor
from wildtrack.features.store import (
    STORE_DIR,
    FeatureStore,
    StoreFeatureCache,
    file_entry,
    open_store,
    table_bytes,
    table_name,
    write_store_file,
)
from wildtrack.index import image_id_for
from wildtrack.jobs.engines import Engine
from wildtrack.jobs.plan import Shard, plan_shards
from wildtrack.jobs.tasks import EmbedTask, FeatureTask, read_embedding_shard
from wildtrack.progress import Advance, announce_total

__all__ = ["STAGING_DIR", "catalogue_feature_cache", "clear_staging", "embed_photos", "extract_features",
           "extract_shards", "photo_ids", "store_files"]

STAGING_DIR = ".staging"  # in the index directory: a cluster job's embedding shards until the commit


def _run_resumable(engine: Engine, task: Any, shards: Sequence[Shard], directory: Path,
                   advance: Advance | None) -> dict[str, Path]:
    """Every shard's file in ``directory`` (key + task suffix): existing valid ones are kept, the rest run."""
    directory.mkdir(parents=True, exist_ok=True)
    announce_total(advance, sum(len(s.items) for s in shards))
    files = {s.key: directory / f"{s.key}{task.suffix}" for s in shards}
    todo = [s for s in shards if not (files[s.key].is_file() and task.check(files[s.key]))]
    if advance and len(todo) < len(shards):
        advance(sum(len(s.items) for s in shards) - sum(len(s.items) for s in todo))
    for shard, data in engine.run(task, todo):
        atomic_write_bytes(files[shard.key], data)
        if advance:
            advance(len(shard.items))
    return files


def embed_photos(engine: Engine, embedder: Embedder, artifacts: str | Path, backend: str,
                 paths: Sequence[str | Path], stage: Path, advance: Advance | None = None) -> EmbedResult:
    """Embeddings of ``paths`` in order, as :func:`~wildtrack.embed.embed_paths` reports them.

    The local engine embeds here through the per-model embedding cache (a re-run reuses what it embedded); a
    cluster engine embeds shards on its workers and keeps them under ``stage`` until :func:`clear_staging`.
    """
    if engine.name == "local":
        return embed_files_cached(embedder, paths, progress=advance)
    items = [(str(n), str(storage.resolve(p))) for n, p in enumerate(paths)]
    shards = plan_shards(items, engine.shard_size, f"embed:{embedder.fingerprint}")
    files = _run_resumable(engine, EmbedTask(str(Path(artifacts).resolve()), backend), shards,
                           stage / "embeddings", advance)
    ok: list[int] = []
    vectors: list[np.ndarray] = [np.zeros((0, embedder.dim), np.float32)]
    failed: list[tuple[int, str]] = []
    for shard in shards:
        done, vecs, bad = read_embedding_shard(files[shard.key].read_bytes())
        ok += [int(shard.items[i][0]) for i in done]
        vectors.append(vecs)
        failed += [(int(shard.items[i][0]), why) for i, why in bad]
    return EmbedResult(np.concatenate(vectors), ok, sorted(failed))


def extract_features(engine: Engine, extractor: Extractor, items: Sequence[tuple[str, str | Path]],
                     root: Path, advance: Advance | None = None,
                     keep: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Write the local features of ``items`` (image id, path) as feature-store shards under ``root``, and a
    table of them plus the shards of the store ``keep`` (its files, to grow it; ignored when another extractor
    wrote it). Returns the new store's files (name -> sha256 and bytes) for the index's manifest."""
    return store_files(root, extractor, extract_shards(engine, extractor, items, root, advance), keep)


def extract_shards(engine: Engine, extractor: Extractor, items: Sequence[tuple[str, str | Path]], root: Path,
                   advance: Advance | None = None) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """The first half of :func:`extract_features`: the shard files only (name -> image ids, manifest entry), so a
    caller can write the table later, e.g. under the index's writer lock (:func:`store_files`)."""
    shards = plan_shards([(i, str(storage.resolve(p))) for i, p in items], engine.shard_size,
                         f"features:{extractor.key()}")
    task = FeatureTask({"name": extractor.name, **asdict(extractor)})
    files = _run_resumable(engine, task, shards, root / STORE_DIR, advance)
    return {f"{STORE_DIR}/{files[s.key].name}": ([i for i, _ in s.items], file_entry(files[s.key].read_bytes()))
            for s in shards}


def store_files(root: Path, extractor: Extractor, new: Mapping[str, tuple[list[str], dict[str, Any]]],
                keep: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The second half of :func:`extract_features`: a table of the ``new`` shards plus those of the store ``keep``,
    written under ``root``; returns the store's files for the index's manifest."""
    table: dict[str, list[str]] = {}
    entries: dict[str, dict[str, Any]] = {}
    old = open_store(root, keep or {})
    if old is not None and old.extractor_key == extractor.key():
        for image_id, name in old.shard_of.items():
            if name in keep:  # type: ignore[operator]  # a shard left out of ``keep`` (damaged) is dropped
                table.setdefault(name, []).append(image_id)
        entries.update({name: dict(keep[name]) for name in table})  # type: ignore[index]
    for name, (ids, entry) in new.items():
        table[name] = list(ids)
        entries[name] = dict(entry)
    data = table_bytes(extractor, table)
    entries[table_name(data)] = write_store_file(root, table_name(data), data)
    return entries


def photo_ids(paths: Sequence[str | Path], root: str | Path) -> list[str]:
    """Image ids of photos as a catalogue under ``root`` (a folder or an s3:// prefix) names them (relative
    path, as in the index)."""
    return [image_id_for(storage.relative(p, root)) for p in paths]


def catalogue_feature_cache(extractor: Extractor, store_root: Path, files: Mapping[str, Mapping[str, Any]],
                            data_root: str | Path) -> StoreFeatureCache:
    """A feature cache that reads the catalogue's photos (under ``data_root``) from the store in ``store_root``."""
    store: FeatureStore | None = open_store(store_root, files)
    return StoreFeatureCache(store, data_root, extractor)


def clear_staging(directory: Path) -> None:
    """Drop a finished job's staged shards (after its results were committed)."""
    shutil.rmtree(directory / STAGING_DIR, ignore_errors=True)
