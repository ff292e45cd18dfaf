"""Catalogue index: a FAISS gallery of L2-normalised embeddings that must survive years of use and crashes.

One concept per module: :mod:`~wildtrack.index.types` (rows, hits, errors), :mod:`~wildtrack.index.faiss_spec`
(which FAISS structure, how to search it), :mod:`~wildtrack.index.files` (the directory's file formats),
:mod:`~wildtrack.index.store` (crash-safe generations: commit, resolve, writer lock; the on-disk layout is
documented there) and :mod:`~wildtrack.index.gallery` (the :class:`GalleryIndex` API).
"""

from wildtrack.index.faiss_spec import (
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    IVF_MIN_SIZE,
    IVF_POINTS_PER_CENTROID,
    IVF_TRAIN_ITERS,
    KINDS,
    IndexKind,
)
from wildtrack.index.files import (
    DATA_FILES,
    EMBEDDINGS,
    FAISS_FILE,
    FORMAT_VERSION,
    LOCK_FILE,
    MANIFEST,
    META,
    META_COLUMNS,
    PREV,
)
from wildtrack.index.gallery import GalleryIndex
from wildtrack.index.store import (
    COMMIT_POINTS,
    DEFAULT_LOCK_TIMEOUT,
    committed_generation,
    set_commit_pause,
    writer_lock,
)
from wildtrack.index.types import (
    GalleryIndexError,
    Hit,
    IndexConflictError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    MetaRow,
    image_id_for,
)

__all__ = [
    "COMMIT_POINTS",
    "DATA_FILES",
    "DEFAULT_LOCK_TIMEOUT",
    "EMBEDDINGS",
    "FAISS_FILE",
    "FORMAT_VERSION",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "IVF_MIN_SIZE",
    "IVF_POINTS_PER_CENTROID",
    "IVF_TRAIN_ITERS",
    "KINDS",
    "LOCK_FILE",
    "MANIFEST",
    "META",
    "META_COLUMNS",
    "PREV",
    "GalleryIndex",
    "GalleryIndexError",
    "Hit",
    "IndexConflictError",
    "IndexCorruptError",
    "IndexKind",
    "IndexLockedError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "MetaRow",
    "committed_generation",
    "image_id_for",
    "set_commit_pause",
    "writer_lock",
]
