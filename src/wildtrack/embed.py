"""Turning photos into unit vectors: the ``Embedder`` interface, its Keras backend, and a cache.

Decoding runs in a thread pool a couple of batches ahead of the model (see
:func:`wildtrack.images.iter_decoded_batches`), so a folder is limited by the slower of the two, not their sum.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from wildtrack.config import cache_root
from wildtrack.data import storage
from wildtrack.images import Photo, iter_decoded_batches, prepare_photo
from wildtrack.vectors import unit_rows


class Embedder(Protocol):
    """Anything that maps a batch of ``(N, H, W, 3)`` uint8 images to ``(N, D)`` float32 unit vectors."""

    image_size: tuple[int, int]
    fingerprint: str
    dim: int

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray: ...


class KerasEmbedder:
    """The ``l2norm`` output of a trained WildTrack model (or any model :func:`embedding_model` accepts)."""

    backend = "keras"

    def __init__(self, artifacts: str | Path):
        from wildtrack.model import embedding_model, load_model, load_preprocessor, model_fingerprint

        self.artifacts = Path(artifacts)
        self.preprocessor = load_preprocessor(self.artifacts / "preprocessor.pkl")
        self.model = embedding_model(load_model(self.artifacts))
        w, h = self.preprocessor["image_size"]
        self.image_size = (int(w), int(h))
        self.dim = int(self.model.output.shape[-1])
        self.fingerprint = model_fingerprint(self.artifacts)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        return unit_rows(self.model.predict_on_batch(pixels.astype(np.float32)))


class OnnxEmbedder:
    """The exported ``model.onnx`` under ONNX Runtime: same embeddings as Keras (checked at export), faster.

    Its ``fingerprint`` is the Keras model's, so an index built with either backend serves the other.
    """

    backend = "onnx"

    def __init__(self, artifacts: str | Path, threads: int | None = None):
        import onnxruntime as ort

        from wildtrack.model.artifacts import load_preprocessor
        from wildtrack.model.export import ONNX_FILE, ONNX_MANIFEST, onnx_export_status

        self.artifacts = Path(artifacts)
        usable, why = onnx_export_status(self.artifacts)
        if not usable:
            raise ValueError(f"{self.artifacts}: {why}")
        self.preprocessor = load_preprocessor(self.artifacts / "preprocessor.pkl")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        self.session = ort.InferenceSession(str(self.artifacts / ONNX_FILE), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        w, h = self.preprocessor["image_size"]
        self.image_size = (int(w), int(h))
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        # A usable export was made from the current Keras model: its manifest names it, no need to hash it again.
        self.fingerprint = str(json.loads((self.artifacts / ONNX_MANIFEST).read_text())["source_model_fingerprint"])
        self.model = None  # no Keras graph: Grad-CAM needs the Keras backend

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        return unit_rows(self.session.run(None, {self.input_name: pixels.astype(np.float32)})[0])


BACKENDS = ("auto", "keras", "onnx")


def load_embedder(artifacts: str | Path, backend: str = "auto") -> Embedder:
    """``onnx`` when a current export exists and onnxruntime imports (``auto``), else ``keras``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "keras":
        return KerasEmbedder(artifacts)
    if backend == "onnx":
        return OnnxEmbedder(artifacts)
    from wildtrack.model.export import onnx_export_status

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return KerasEmbedder(artifacts)
    usable, _why = onnx_export_status(artifacts)
    return OnnxEmbedder(artifacts) if usable else KerasEmbedder(artifacts)


class EmbeddingCache:
    """Embeddings keyed by (model fingerprint, photo, its version) in one SQLite file per model, so
    re-evaluating after adding a few photos embeds only those. A file's version is its mtime and size, an
    object's (``s3://…``) its ETag and size (:func:`wildtrack.data.storage.stamp`)."""

    def __init__(self, fingerprint: str, cache_dir: str | Path | None = None):
        root = Path(cache_dir) if cache_dir else cache_root()
        root = root / "embeddings"
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{fingerprint}.sqlite"
        self._db = sqlite3.connect(self.path)
        with self._db:
            self._db.execute("DROP TABLE IF EXISTS emb")  # keyed by mtime/size columns before object storage
            self._db.execute("CREATE TABLE IF NOT EXISTS photo_emb (photo TEXT PRIMARY KEY, version TEXT, vec BLOB)")

    @staticmethod
    def _stamp(path: storage.Photo) -> tuple[str, str]:
        return str(storage.resolve(path)), storage.stamp(path)

    def get(self, path: storage.Photo) -> np.ndarray | None:
        try:
            key, version = self._stamp(path)
        except OSError:
            return None
        row = self._db.execute("SELECT version, vec FROM photo_emb WHERE photo = ?", (key,)).fetchone()
        if row is None or row[0] != version:
            return None
        return np.frombuffer(row[1], dtype=np.float32).copy()

    def put_many(self, items: list[tuple[storage.Photo, np.ndarray]]) -> None:
        rows = []
        for path, vec in items:
            key, version = self._stamp(path)
            rows.append((key, version, np.asarray(vec, np.float32).tobytes()))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO photo_emb VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


@dataclass
class EmbedResult:
    """``embeddings[i]`` belongs to ``paths[ok[i]]``; ``failed`` lists (index, reason) of unreadable files."""

    embeddings: np.ndarray
    ok: list[int]
    failed: list[tuple[int, str]] = field(default_factory=list)
    cached: int = 0


def embed_paths(
    embedder: Embedder,
    paths: Sequence[str | Path],
    batch_size: int = 32,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    cache: EmbeddingCache | None = None,
) -> EmbedResult:
    """Embed image files (or objects, ``s3://…``) in order; unreadable ones are reported in ``failed`` and the
    rest still embedded."""
    paths = [p if storage.is_url(p) else Path(p) for p in paths]
    vectors: dict[int, np.ndarray] = {}
    todo = list(range(len(paths)))
    if cache is not None:
        for i in list(todo):
            hit = cache.get(paths[i])
            if hit is not None and hit.shape == (embedder.dim,):
                vectors[i] = hit
        todo = [i for i in todo if i not in vectors]
        if progress and vectors:
            progress(len(vectors))
    failed: list[tuple[int, str]] = []
    for batch in iter_decoded_batches([paths[i] for i in todo], embedder.image_size, batch_size, workers,
                                      load=storage.load_photo):
        failed.extend((todo[j], msg) for j, msg in batch.failed)
        if batch.indices:
            emb = embedder.embed_pixels(batch.pixels)
            fresh = [(todo[j], v) for j, v in zip(batch.indices, emb, strict=True)]
            vectors.update(fresh)
            if cache is not None:
                cache.put_many([(paths[i], v) for i, v in fresh])
        if progress:
            progress(len(batch.indices) + len(batch.failed))
    ok = sorted(vectors)
    dim = embedder.dim
    matrix = np.stack([vectors[i] for i in ok]).astype(np.float32) if ok else np.zeros((0, dim), np.float32)
    return EmbedResult(matrix, ok, sorted(failed), cached=len(paths) - len(todo))


def embed_photo(embedder: Embedder, source: str | Path | bytes, max_pixels: int | None = None
                ) -> tuple[np.ndarray, Photo]:
    """One photo (file or uploaded bytes) prepared once (:func:`~wildtrack.images.prepare_photo`, as the service
    prepares an upload): its ``(D,)`` unit vector, and what local matching reads of it."""
    photo = prepare_photo(source, embedder.image_size, **({"max_pixels": max_pixels} if max_pixels else {}))
    return embedder.embed_pixels(photo.pixels[None])[0], photo.local


def embed_image(embedder: Embedder, source: str | Path | bytes, max_pixels: int | None = None) -> np.ndarray:
    """One image (file or uploaded bytes) → a ``(D,)`` unit vector (:func:`embed_photo`)."""
    return embed_photo(embedder, source, max_pixels)[0]


def embed_files_cached(
    embedder: Embedder, paths: Sequence[str | Path], progress: Callable[[int], None] | None = None,
    cache_dir: str | Path | None = None,
) -> EmbedResult:
    """:func:`embed_paths` through the per-model :class:`EmbeddingCache`, opened and closed around the call."""
    cache = EmbeddingCache(embedder.fingerprint, cache_dir)
    try:
        return embed_paths(embedder, paths, progress=progress, cache=cache)
    finally:
        cache.close()
