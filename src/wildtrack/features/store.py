"""A feature store that grows with the catalogue: the gallery's local features in shards, read one photo at a time.

One ``FeatureCache`` file per photo does not scale to millions of photos, and cannot be verified against an
index. The store keeps the extractor's raw output (keypoints, descriptors - uint8 RootSIFT or float32 learned ones -,
frame) of many photos per shard file,
and a table naming which photos each shard holds, all under one directory (``features/`` of an index)::

    features/<shard key>.wtfs     one shard: a JSON header (image id -> first row, rows, scale, offset) followed by
                                  all its keypoints (float32 x, y) and descriptors (uint8 x 128 RootSIFT, or
                                  float32 x 64 XFeat), memory-mapped
    features/table-<sha>.json     the store: extractor key and settings, and the image ids of every shard

A shard's name is a hash of its *inputs* (extractor, photos and their mtime/size), so a job that was killed can
tell which shards it already wrote; the table's name is a hash of its content. Both are immutable once written:
a new generation of an index writes new files and its manifest lists them (name, sha256, bytes).
:class:`FeatureStore` checks each file's sha256 the first time it opens it (not at index load: a store of a
million photos is hundreds of GB), so re-ranking a shortlist reads and verifies only the shards it touches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wildtrack.atomic import atomic_write_bytes
from wildtrack.data import storage
from wildtrack.features.cache import FeatureCache
from wildtrack.features.projection import DescriptorProjection
from wildtrack.features.types import Extractor, LocalFeatures, Source
from wildtrack.images import ImageError
from wildtrack.index import image_id_for

__all__ = ["STORE_DIR", "FeatureShard", "FeatureStore", "RawFeatures", "StoreError", "StoreFeatureCache",
           "file_entry", "open_store", "shard_bytes", "table_bytes", "table_name", "write_store_file"]

log = logging.getLogger(__name__)

STORE_DIR = "features"
SHARD_SUFFIX = ".wtfs"
TABLE_PREFIX = "table-"
SHARD_MAGIC = b"WTFS0001"
TABLE_FORMAT = "wildtrack-feature-store-v1"
ALIGN = 64

RawFeatures = tuple[np.ndarray, np.ndarray, float, tuple[float, float]]  # an extractor's raw(): xy, desc, ...


class StoreError(ValueError):
    """A store file is missing, or does not match what the table or manifest recorded."""


_DESCRIPTOR_TYPES = {"u1": np.dtype(np.uint8), "<f4": np.dtype("<f4")}  # RootSIFT's uint8, learned float32


def _descriptor_type(entries: Sequence[tuple[str, RawFeatures]]) -> tuple[str, int]:
    """The one descriptor type and width of a shard's photos (RootSIFT: uint8 × 128; XFeat: float32 × 64)."""
    kinds = {(np.asarray(desc).dtype.str.lstrip("|"), int(np.asarray(desc).reshape(len(xy), -1).shape[1]))
             for _, (xy, desc, _scale, _offset) in entries if len(xy)}
    if len(kinds) > 1:
        raise StoreError(f"one shard holds one kind of descriptor, got {sorted(kinds)}")
    kind = kinds.pop() if kinds else ("u1", 128)
    if kind[0] not in _DESCRIPTOR_TYPES:
        raise StoreError(f"the feature store holds uint8 or float32 descriptors, not {kind[0]}")
    return kind


def shard_bytes(extractor_key: str, entries: Sequence[tuple[str, RawFeatures]],
                failed: Mapping[str, str] | None = None) -> bytes:
    """One shard's file content: ``entries`` are (image id, the extractor's ``raw`` output); ``failed`` the photos
    that could not be read (image id -> why), recorded so a re-run does not retry them."""
    dtype, dim = _descriptor_type(entries)
    images, start = {}, 0
    for image_id, (xy, _desc, scale, offset) in entries:
        images[image_id] = [start, len(xy), float(scale), float(offset[0]), float(offset[1])]
        start += len(xy)
    header = json.dumps({"extractor": extractor_key, "rows": start, "images": images, "descriptors": [dtype, dim],
                         "failed": dict(failed or {})}).encode()
    head = SHARD_MAGIC + struct.pack("<Q", len(header)) + header
    head += b"\0" * (-len(head) % ALIGN)
    xy = np.concatenate([np.asarray(r[0], "<f4").reshape(-1, 2) for _, r in entries] or [np.zeros((0, 2), "<f4")])
    kind = _DESCRIPTOR_TYPES[dtype]
    desc = np.concatenate([np.asarray(r[1]).astype(kind, copy=False).reshape(-1, dim) for _, r in entries]
                          or [np.zeros((0, dim), kind)])
    xy_bytes = xy.astype("<f4").tobytes()
    return head + xy_bytes + b"\0" * (-len(xy_bytes) % ALIGN) + desc.astype(kind, copy=False).tobytes()


class FeatureShard:
    """One shard file, memory-mapped: reading a photo touches only its own rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            magic, size = f.read(len(SHARD_MAGIC)), f.read(8)
            if magic != SHARD_MAGIC or len(size) != 8:
                raise StoreError(f"{path} is not a feature shard")
            (n,) = struct.unpack("<Q", size)
            try:
                header = json.loads(f.read(n))
            except ValueError as exc:
                raise StoreError(f"{path}: unreadable shard header ({exc})") from exc
        self.extractor_key: str = header["extractor"]
        self.images: dict[str, list[float]] = header["images"]
        self.failed: dict[str, str] = header.get("failed", {})
        rows = int(header["rows"])
        dtype, dim = header.get("descriptors", ["u1", 128])  # shards from before learned features: RootSIFT
        if dtype not in _DESCRIPTOR_TYPES:
            raise StoreError(f"{path}: unknown descriptor type {dtype!r}")
        kind, dim = _DESCRIPTOR_TYPES[dtype], int(dim)
        xy_at = len(SHARD_MAGIC) + 8 + n
        xy_at += -xy_at % ALIGN
        desc_at = xy_at + rows * 8 + (-(rows * 8) % ALIGN)
        expected = desc_at + rows * dim * kind.itemsize
        if os.path.getsize(path) != expected:
            raise StoreError(f"{path}: {os.path.getsize(path)} bytes, its header describes {expected}")
        self._xy = np.memmap(path, "<f4", "r", xy_at, (rows, 2)) if rows else np.zeros((0, 2), "<f4")
        self._desc = np.memmap(path, kind, "r", desc_at, (rows, dim)) if rows else np.zeros((0, dim), kind)

    def raw(self, image_id: str) -> RawFeatures:
        start, count, scale, ox, oy = self.images[image_id]
        a, b = int(start), int(start) + int(count)
        return np.array(self._xy[a:b]), np.array(self._desc[a:b]), float(scale), (float(ox), float(oy))


def table_bytes(extractor: Extractor, shards: Mapping[str, Sequence[str]]) -> bytes:
    """The store's table: its extractor, and shard name -> the image ids it holds."""
    doc = {"format": TABLE_FORMAT, "extractor": extractor.key(),
           "settings": {"name": extractor.name, **asdict(extractor)},
           "shards": {name: list(ids) for name, ids in sorted(shards.items())}}
    return json.dumps(doc).encode()


def file_entry(data: bytes) -> dict[str, Any]:
    """What a manifest records for a store file: its sha256 and size."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def write_store_file(root: Path, name: str, data: bytes) -> dict[str, Any]:
    """Write one store file durably under ``root`` (temp file, fsync, rename) and return its manifest entry."""
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(root / name, data)
    return file_entry(data)


def table_name(data: bytes) -> str:
    return f"{STORE_DIR}/{TABLE_PREFIX}{hashlib.sha256(data).hexdigest()[:24]}.json"


class FeatureStore:
    """The gallery's features under ``root``, verified against ``files`` (name -> sha256 and bytes, as an index's
    manifest records them) the first time each file is opened."""

    def __init__(self, root: Path, files: Mapping[str, Mapping[str, Any]]) -> None:
        tables = [name for name in files if Path(name).name.startswith(TABLE_PREFIX)]
        if len(tables) != 1:
            raise StoreError(f"a feature store has exactly one table, found {len(tables)} in {root}")
        self.root, self.files = Path(root), dict(files)
        table = json.loads(self._verified(tables[0]).read_bytes())
        if table.get("format") != TABLE_FORMAT:
            raise StoreError(f"{root / tables[0]} is not a {TABLE_FORMAT} table")
        self.extractor_key: str = table["extractor"]
        self.settings: dict[str, Any] = table["settings"]
        self.shard_of = {image_id: name for name, ids in table["shards"].items() for image_id in ids}
        self._shards: dict[str, FeatureShard] = {}
        self._lock = threading.Lock()

    def _verified(self, name: str) -> Path:
        expect = self.files.get(name)
        if expect is None:
            raise StoreError(f"{name} is not part of this feature store")
        path = self.root / name
        try:
            with open(path, "rb") as f:
                size_ok = os.fstat(f.fileno()).st_size == expect.get("bytes")
                digest = hashlib.file_digest(f, "sha256").hexdigest() if size_ok else None
        except FileNotFoundError as exc:
            raise StoreError(f"{path} is missing") from exc
        if digest != expect.get("sha256"):
            raise StoreError(f"{path} does not match the sha256 its manifest records (changed or damaged)")
        return path

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.shard_of

    def __len__(self) -> int:
        return len(self.shard_of)

    def raw(self, image_id: str) -> RawFeatures:
        """One photo's raw features; the shard is verified and mapped on first use. KeyError when not stored."""
        name = self.shard_of[image_id]
        with self._lock:
            shard = self._shards.get(name)
            if shard is None:
                shard = self._shards[name] = FeatureShard(self._verified(name))
        return shard.raw(image_id)


class StoreFeatureCache(FeatureCache):
    """A :class:`FeatureCache` that serves the catalogue's photos (files under ``root``, found by the image id of
    their relative path, as the index names them) from a :class:`FeatureStore`, and everything else (queries,
    photos enrolled since) as before.

    The store is used only when it was written by this cache's extractor; a damaged store file is logged once and
    its photos are extracted instead, so a search stays correct, only slower. A catalogue photo that can be read
    neither from the store nor from its file (moved away, truncated, corrupted) matches nothing: it gets no
    keypoints, a log line, and an entry in :attr:`unreadable` (image id -> why) until it can be read again, so
    one damaged photo costs a query that photo's evidence, never the answer.
    """

    def __init__(self, store: FeatureStore | None, root: str | Path, extractor: Extractor | None = None,
                 cache_dir: str | Path | None = None, memory_items: int = 256,
                 projection: DescriptorProjection | None = None):
        super().__init__(extractor, cache_dir, memory_items, projection)
        usable = store is not None and store.extractor_key == self.extractor.key()
        self.store = store if usable else None
        self.data_root = storage.resolve(root)  # a folder, or an object-storage prefix (s3://…)
        self.store_hits = 0
        self._broken: set[str] = set()
        self.unreadable: dict[str, str] = {}

    def use_store(self, store: FeatureStore | None) -> None:
        """Read from ``store`` from now on (the catalogue's store grew by a commit); ignored if another extractor
        wrote it. Features already in memory stay (a photo's stored features never change)."""
        if store is not None and store.extractor_key == self.extractor.key():
            self.store = store

    def with_projection(self, projection: DescriptorProjection | None) -> StoreFeatureCache:
        clone = StoreFeatureCache(self.store, self.data_root, self.extractor, self.root.parent, self.memory_items,
                                  projection)
        clone._broken, clone.unreadable = self._broken, self.unreadable
        return clone

    @property
    def damaged_shards(self) -> list[str]:
        """Store files found damaged or missing since start-up (their photos are extracted instead)."""
        return sorted(self._broken)

    def image_id(self, source: Source) -> str | None:
        """The stored photo ``source`` is, or None (uploaded bytes, a photo the store does not hold)."""
        if isinstance(source, bytes | Image.Image) or self.store is None:
            return None
        try:
            image_id = image_id_for(storage.relative(source, self.data_root))
        except ValueError:  # a URL outside the catalogue's prefix, or a file beside an object-storage catalogue
            return None
        return image_id if image_id in self.store and self.store.shard_of[image_id] not in self._broken else None

    def get(self, source: Source) -> LocalFeatures:
        if isinstance(source, bytes):
            return super().get(source)
        try:
            feats = self._stored_or_extracted(source)
        except (ImageError, OSError, KeyError) as exc:
            return self._nothing(source, exc)
        self._readable(source)
        return feats

    def _stored_or_extracted(self, source: str | Path) -> LocalFeatures:
        image_id = self.image_id(source)
        if image_id is None or self.store is None:
            return super().get(source)
        memo = f"store:{image_id}"
        feats = self._recall(memo, "store_hits")
        if feats is not None:
            return feats
        try:
            xy, desc, scale, offset = self.store.raw(image_id)
        except (StoreError, OSError, KeyError, ValueError) as exc:
            log.warning("feature store: %s; extracting those photos instead", _public(exc, self.store.root))
            self._broken.add(self.store.shard_of[image_id])
            return super().get(source)
        feats = self._features(xy, desc, scale, offset)
        with self._lock:
            self.store_hits += 1
        self._remember(memo, feats)
        return feats

    def _catalogue_id(self, source: str | Path) -> str:
        try:
            return image_id_for(storage.relative(source, self.data_root))
        except ValueError:
            return str(source)

    def _nothing(self, source: str | Path, exc: BaseException) -> LocalFeatures:
        """No keypoints for a catalogue photo that cannot be read: it matches nothing this time."""
        image_id = self._catalogue_id(source)
        missing = not storage.is_url(source) and not Path(source).is_file()
        why = "its file is missing" if missing else "its file cannot be read"
        if self.unreadable.get(image_id) != why:
            log.warning("catalogue photo %s: %s, so it matches nothing until it is restored (%s: %s)",
                        image_id, why, type(exc).__name__, exc)
        self.unreadable[image_id] = why
        empty = (np.zeros((0, 64), np.float32) if self.extractor.name == "xfeat" else np.zeros((0, 128), np.uint8))
        return self._features(np.zeros((0, 2), np.float32), empty, 1.0, (0.0, 0.0))

    def _readable(self, source: str | Path) -> None:
        if self.unreadable:
            image_id = self._catalogue_id(source)
            if self.unreadable.pop(image_id, None) is not None:
                log.info("catalogue photo %s can be read again", image_id)


def _public(exc: BaseException, root: str | Path) -> str:
    """An error's text without the folder it happened in (answers and logs name photos by id)."""
    return str(exc).replace(f"{storage.resolve(root)}/", "").replace(f"{root}/", "")


def open_store(root: Path, files: Mapping[str, Mapping[str, Any]]) -> FeatureStore | None:
    """The store described by ``files``, or None when there is none or its table cannot be used (logged)."""
    if not files:
        return None
    try:
        return FeatureStore(root, files)
    except (StoreError, OSError, ValueError, KeyError) as exc:
        log.warning("feature store in %s unusable (%s); local features will be extracted from the photos", root, exc)
        return None


