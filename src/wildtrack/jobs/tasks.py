"""What one worker does to one shard: embed its photos, or extract their local features, into one file's bytes.

Tasks are small picklable descriptions (model folder, extractor settings, object-storage options); ``setup()``
loads the model once per worker process, so an actor pool pays it once per worker, not once per photo. Photos are
read through :mod:`wildtrack.data.storage`, so a worker reads ``s3://…`` objects as well as files (credentials
from the worker's environment, other options such as the endpoint from the task).
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.data import storage
from wildtrack.embed import Embedder, embed_paths, load_embedder
from wildtrack.features import EXTRACTORS, Extractor, SiftExtractor
from wildtrack.features.store import FeatureShard, StoreError, shard_bytes
from wildtrack.images import ImageError
from wildtrack.jobs.plan import Shard

__all__ = ["EmbedTask", "FeatureTask", "read_embedding_shard"]


def _limit_threads(threads: int) -> None:
    """One worker per CPU: keep TensorFlow and OpenCV to ``threads`` so workers do not fight over cores."""
    import cv2

    cv2.setNumThreads(threads)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except (ImportError, RuntimeError):  # TensorFlow already initialised in this process: keep its setting
        pass


@dataclass(kw_only=True)
class _WorkerTask:
    """What each job's task sets up once per worker: the object-storage options, and a worker's share of the
    threads before its model or extractor is first built (``threads`` None: all cores, the local engine)."""

    threads: int | None = None
    storage_options: dict[str, Any] = field(default_factory=storage.storage_options)

    def setup(self) -> None:
        storage.configure(self.storage_options)
        if not self._built():
            if self.threads:
                _limit_threads(self.threads)
            self._build()

    def _built(self) -> bool:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError


@dataclass
class EmbedTask(_WorkerTask):
    """Embed a shard's photos with the model in ``artifacts``; output: ``.npz`` of positions, vectors, failures."""

    artifacts: str
    backend: str = "auto"
    suffix: str = ".npz"
    _embedder: Embedder | None = field(default=None, repr=False)

    def _built(self) -> bool:
        return self._embedder is not None

    def _build(self) -> None:
        self._embedder = load_embedder(self.artifacts, backend=self.backend)

    def __call__(self, shard: Shard) -> bytes:
        self.setup()
        assert self._embedder is not None
        result = embed_paths(self._embedder, [p for _, p in shard.items], workers=self.threads)
        buf = io.BytesIO()
        np.savez(buf, ok=np.asarray(result.ok, np.int64), vectors=result.embeddings,
                 failed=np.asarray(json.dumps(result.failed)))
        return buf.getvalue()

    @staticmethod
    def check(path: Path) -> bool:
        try:
            read_embedding_shard(path.read_bytes())
        except (OSError, ValueError, KeyError):
            return False
        return True


def read_embedding_shard(data: bytes) -> tuple[list[int], np.ndarray, list[tuple[int, str]]]:
    """(positions within the shard that embedded, their vectors, (position, reason) of those that failed)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return ([int(i) for i in z["ok"]], np.asarray(z["vectors"], np.float32),
                [(int(i), str(why)) for i, why in json.loads(str(z["failed"]))])


@dataclass
class FeatureTask(_WorkerTask):
    """Extract a shard's local features with the extractor ``settings`` name (``EXTRACTORS[name](**rest)``, RootSIFT
    when unnamed); output: a feature-store shard."""

    settings: dict[str, Any]
    suffix: str = ".wtfs"
    _extractor: Extractor | None = field(default=None, repr=False)

    def _built(self) -> bool:
        return self._extractor is not None

    def _build(self) -> None:
        settings = dict(self.settings)
        self._extractor = EXTRACTORS[settings.pop("name", SiftExtractor.name)](**settings)

    def __call__(self, shard: Shard) -> bytes:
        self.setup()
        extractor = self._extractor
        assert extractor is not None

        def one(item: tuple[str, str]) -> tuple[str, Any]:
            try:
                return item[0], extractor.raw(storage.photo_source(item[1]))
            except (ImageError, OSError) as exc:
                return item[0], f"{item[1]}: {exc}"

        # OpenCV releases the GIL in SIFT, so threads use every core of this worker
        with ThreadPoolExecutor(max(1, self.threads or os.cpu_count() or 1)) as pool:
            done = list(pool.map(one, shard.items))
        entries = [(i, raw) for i, raw in done if not isinstance(raw, str)]
        failed = {i: why for i, why in done if isinstance(why, str)}
        return shard_bytes(extractor.key(), entries, failed)

    @staticmethod
    def check(path: Path) -> bool:
        try:
            FeatureShard(path)
        except (OSError, StoreError, ValueError, KeyError):
            return False
        return True
