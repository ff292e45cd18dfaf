"""Local features on disk, one file per photo and extractor setting, with a bounded memory in front."""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from wildtrack.config import cache_root
from wildtrack.data import storage
from wildtrack.features.projection import DescriptorProjection
from wildtrack.features.rootsift import SiftExtractor
from wildtrack.features.types import Extractor, LocalFeatures, Source
from wildtrack.images import ImageError

__all__ = ["FeatureCache", "default_workers"]


def default_workers(workers: int | None = None) -> int:
    """Threads for extraction and matching: all cores unless told (OpenCV releases the GIL)."""
    return max(1, workers or os.cpu_count() or 1)


def _cache_root(cache_dir: str | Path | None) -> Path:
    return (Path(cache_dir) if cache_dir else cache_root()) / "local_features"


class FeatureCache:
    """Per-image features on disk (one ``.npz`` each) plus a bounded in-memory LRU in front of it
    (``memory_items`` × ~0.8 MB at the default 1500 keypoints, half that when projected).

    The file name is a hash of the absolute path (or URL), its version (mtime and size of a file, ETag and size
    of an object: :func:`wildtrack.data.storage.stamp`) and the extractor's parameters, so an edited photo
    or a changed setting is simply a miss; files are written atomically, so concurrent threads or processes can
    share a cache. ``hits``/``misses`` count lookups (a miss means one extraction). The disk holds the
    extractor's raw output (uint8 SIFT, XFeat's float32 rows), rebuilt by its ``features()``; a ``projection``
    is applied as features are loaded, so every projection shares them.
    """

    def __init__(self, extractor: Extractor | None = None, cache_dir: str | Path | None = None,
                 memory_items: int = 256, projection: DescriptorProjection | None = None):
        self.extractor = extractor or SiftExtractor()
        self.root = _cache_root(cache_dir)
        self.memory_items = memory_items
        self._projection = projection
        self._memory: OrderedDict[str, LocalFeatures] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def key(self, path: str | Path) -> str:
        text = f"{storage.resolve(path)}\0{storage.stamp(path)}\0{self.extractor.key()}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def file_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def _remember(self, key: str, feats: LocalFeatures) -> None:
        with self._lock:
            self._memory[key] = feats
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def _recall(self, key: str, counter: str = "hits") -> LocalFeatures | None:
        """Features kept in memory under ``key`` (now the most recently used; ``counter`` counted), or None."""
        with self._lock:
            feats = self._memory.get(key)
            if feats is not None:
                self._memory.move_to_end(key)
                setattr(self, counter, getattr(self, counter) + 1)
            return feats

    def _read(self, file: Path) -> LocalFeatures | None:
        try:
            with np.load(file) as z:
                xy, desc, scale = z["xy"], z["desc"], float(z["scale"])
                offset = (float(z["offset"][0]), float(z["offset"][1])) if "offset" in z else (0.0, 0.0)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return None  # missing or half-written by a crashed run: extract again
        return self._features(xy, desc, scale, offset)

    @property
    def projection(self) -> DescriptorProjection | None:
        """Fixed for the cache's life (its memory holds projected features): use :meth:`with_projection`."""
        return self._projection

    def _features(self, xy: np.ndarray, desc: np.ndarray, scale: float, offset: tuple[float, float]
                  ) -> LocalFeatures:
        feats = self.extractor.features(xy, desc, scale, offset)
        return self.projection(feats) if self.projection is not None else feats

    def with_projection(self, projection: DescriptorProjection | None) -> FeatureCache:
        """The same extractor and disk cache, loading features through ``projection``."""
        return FeatureCache(self.extractor, self.root.parent, self.memory_items, projection)

    def get(self, source: Source) -> LocalFeatures:
        """Features of a file (cached), or of uploaded bytes or decoded pixels (extracted, never cached: they have no
        stable key)."""
        if isinstance(source, bytes | Image.Image):
            return self._features(*self.extractor.raw(source))
        try:
            key = self.key(source)
        except OSError as exc:
            raise ImageError(f"{source}: cannot open ({exc.strerror or exc})") from exc
        feats = self._recall(key)
        if feats is not None:
            return feats
        file = self.file_for(key)
        feats = self._read(file)
        if feats is not None:
            with self._lock:
                self.hits += 1
            self._remember(key, feats)
            return feats
        xy, desc, scale, offset = self.extractor.raw(storage.photo_source(source))
        with self._lock:
            self.misses += 1
        tmp = file.with_name(f".{file.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, xy=xy, desc=desc, scale=np.float32(scale), offset=np.asarray(offset, np.float32))
            os.replace(tmp, file)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only cache still works, it just never warms up
        feats = self._features(xy, desc, scale, offset)
        self._remember(key, feats)
        return feats

    def get_many(self, sources: Sequence[Source], workers: int | None = None,
                 progress: Callable[[int], None] | None = None) -> list[LocalFeatures]:
        """Features of many images, extracted in parallel threads; order follows ``sources``. ``progress`` is
        advanced once per image as it is read or extracted."""

        def get(source: Source) -> LocalFeatures:
            feats = self.get(source)
            if progress:
                progress(1)
            return feats

        with ThreadPoolExecutor(default_workers(workers)) as pool:
            return list(pool.map(get, sources))
