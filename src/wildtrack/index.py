"""Catalogue index: a FAISS gallery of L2-normalised embeddings that must survive years of use and crashes.

Files in an index directory::

    embeddings.npy   float32 N x D, L2-normalised - the source of truth; any faiss index can be rebuilt from it
    meta.csv         image_id,path,identity,date - one row per embedding row, same order; path is relative to
                     the data root so a catalogue folder can be moved
    index.faiss      the search structure over embeddings.npy (flat = exact, hnsw, or ivf; inner product = cosine)
    manifest.json    format_version, catalogue_id, generation, model_fingerprint, dim, count, index kind and params,
                     data_root, decision_threshold, created/updated, and the sha256 + size of every data file.
                     Written last: it is the commit point.
    *.prev           the previous committed generation of each file (hard links, so no extra disk until replaced)
    .lock            the writer lock (filelock); readers never take it

Crash safety
------------
A writer holds ``.lock`` and commits generation g+1 in four steps:

1. write every new file (the three data files and the manifest) to a temp name in the same directory, flush, fsync;
2. snapshot generation g: hard-link (or copy, where links are unsupported) each data file that verifies against
   the committed manifest to ``<name>.prev``, then ``manifest.json`` to ``manifest.json.prev``; fsync the directory;
3. ``os.replace`` each data file into place; fsync the directory;
4. ``os.replace`` the manifest into place and fsync the directory: generation g+1 is now committed.

A reader reads ``manifest.json`` and, for each data file, takes whichever of ``<name>`` / ``<name>.prev`` has the
sha256 that this manifest records. A writer that died in step 1 or 2 left the live files intact; one that died
in step 3 left new data files that do not match the old manifest, and step 2 put matching copies in ``*.prev``;
after step 4 every live file matches. So a reader sees generation g or g+1, never a mix: every file is checked
against the one manifest. Each file is hashed through the same open descriptor it is then parsed from, so a
concurrent rename cannot swap bytes between the check and the read; a reader that races two writers retries.
Fallbacks, each logged and listed in ``GalleryIndex.recovery_notes``: when only ``index.faiss`` fails to verify
it is rebuilt from ``embeddings.npy``; when ``manifest.json`` cannot be used at all, ``manifest.json.prev`` with its
``.prev`` files is (losing at most the last write). The next writer deletes temp files left by a dead one, and
never overwrites a ``.prev`` file with anything that has not verified. A crash during the very first save leaves
no manifest: the directory then holds no committed index (``IndexNotFoundError``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from datetime import date as _date
from pathlib import Path
from typing import IO, Any, Literal

import faiss
import numpy as np
from filelock import FileLock, Timeout

from wildtrack import __version__

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
EMBEDDINGS, META, FAISS_FILE, MANIFEST = "embeddings.npy", "meta.csv", "index.faiss", "manifest.json"
DATA_FILES = (EMBEDDINGS, META, FAISS_FILE)
PREV = ".prev"
LOCK_FILE = ".lock"
META_COLUMNS = ("image_id", "path", "identity", "date")
DEFAULT_LOCK_TIMEOUT = 60.0

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64
IVF_MIN_SIZE = 10_000  # below this exact search takes well under a millisecond and IVF cannot train well
IVF_POINTS_PER_CENTROID = 64  # k-means sample cap: stable centroids with a bounded build time
IVF_TRAIN_ITERS = 20

_DRIVE = re.compile(r"[A-Za-z]:/")  # a Windows drive, after backslashes became slashes

IndexKind = Literal["flat", "hnsw", "ivf"]
KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")

# Test-only hook: a writer whose environment names one of COMMIT_POINTS prints "PAUSED <point>" to stdout at that
# point and sleeps, so a test can SIGKILL it at an exact place in the commit sequence.
PAUSE_ENV = "WILDTRACK_INDEX_PAUSE_AT"
COMMIT_POINTS = (
    "locked",
    "tmp-written",
    *(f"prev:{n}" for n in (*DATA_FILES, MANIFEST)),
    *(f"replaced:{n}" for n in DATA_FILES),
    "committed",
)


class GalleryIndexError(Exception):
    """Base class for catalogue index errors."""


class IndexNotFoundError(GalleryIndexError, FileNotFoundError):
    """The directory holds no committed index."""


class IndexMismatchError(GalleryIndexError):
    """The index was built for another model or embedding size than the caller's."""


class IndexLockedError(GalleryIndexError):
    """Another writer holds the index lock."""


class IndexCorruptError(GalleryIndexError):
    """No consistent committed generation could be read."""


class IndexConflictError(GalleryIndexError):
    """Saving would overwrite a catalogue, or changes, that this object never saw."""


@dataclass(frozen=True)
class MetaRow:
    """One gallery image; ``path`` is relative to the data root, ``date`` is ISO ``YYYY-MM-DD`` or None."""

    image_id: str
    path: str
    identity: str
    date: str | None = None

    @classmethod
    def coerce(cls, obj: MetaRow | Mapping[str, Any] | Any) -> MetaRow:
        """Accept a MetaRow, a dict (path, identity, [image_id], [date]) or a ``Record`` (relpath, identity, date)."""
        if isinstance(obj, MetaRow):
            return cls._make(obj.path, obj.identity, obj.date, obj.image_id)
        if isinstance(obj, Mapping):
            return cls._make(obj.get("path"), obj.get("identity"), obj.get("date"), obj.get("image_id"))
        path = getattr(obj, "relpath", None) or getattr(obj, "path", None)
        return cls._make(path, getattr(obj, "identity", None), getattr(obj, "date", None), None)

    @classmethod
    def _make(cls, path: Any, identity: Any, day: Any, image_id: Any) -> MetaRow:
        rel = _relative_posix(path)
        ident = "" if identity is None else str(identity).strip()
        if not ident:
            raise ValueError(f"meta row for {rel!r} has no identity")
        if isinstance(day, _date):
            day = day.isoformat()
        day = str(day).strip() if day not in (None, "") else None
        return cls(str(image_id) if image_id not in (None, "") else image_id_for(rel), rel, ident, day or None)


@dataclass(frozen=True)
class Hit:
    """One gallery image returned by a search; ``score`` is the cosine similarity, ``rank`` starts at 1.

    After local re-ranking, ``inliers`` counts the geometrically verified keypoint matches with the query and
    ``match_probability`` is the fitted fusion's calibrated "same individual" score; both stay ``None`` for a
    global-only search (or an image outside the re-ranked shortlist).
    """

    image_id: str
    path: str
    identity: str
    date: str | None
    score: float
    rank: int
    inliers: int | None = None
    match_probability: float | None = None


def image_id_for(path: str) -> str:
    """Stable id from the relative path: 64 bits keeps collisions negligible even at millions of images."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


def _relative_posix(path: Any) -> str:
    """POSIX separators, never absolute; plain string checks because catalogues can hold millions of rows."""
    if path in (None, ""):
        raise ValueError("meta row has no path")
    rel = str(path).replace("\\", "/")
    if rel.startswith("/") or _DRIVE.match(rel):
        raise ValueError(f"meta path must be relative to the data root, got {str(path)!r}")
    return rel


# ----------------------------------------------------------------------------------------------------- state


@dataclass
class _State:
    """Everything one committed (or about to be committed) generation consists of."""

    emb: np.ndarray
    rows: list[MetaRow]
    index: Any  # faiss.Index
    info: dict[str, Any]  # catalogue_id, generation, model_fingerprint, index, data_root, created, updated
    pos: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.pos:
            self.pos = {r.image_id: i for i, r in enumerate(self.rows)}


class GalleryIndex:
    """A searchable catalogue of known individuals; see the module docstring for the on-disk format."""

    def __init__(self, state: _State, recovery_notes: list[str] | None = None) -> None:
        self._s = state
        self.recovery_notes: list[str] = list(recovery_notes or [])

    # -------------------------------------------------------------------------------------------- build

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        meta: Iterable[MetaRow | Mapping[str, Any] | Any],
        model_fingerprint: str,
        kind: IndexKind = "flat",
        data_root: str | os.PathLike[str] | None = None,
        *,
        ef_search: int = HNSW_EF_SEARCH,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        nprobe: int | None = None,
    ) -> GalleryIndex:
        """Build an in-memory index (not saved); embeddings are L2-normalised here so cosine = inner product."""
        if not model_fingerprint:
            raise ValueError("model_fingerprint is required: it is what stops a model/index mix-up later")
        emb = _as_unit(embeddings, None)
        rows = [MetaRow.coerce(m) for m in meta]
        if len(rows) != len(emb):
            raise ValueError(f"{len(emb)} embeddings but {len(rows)} meta rows")
        _check_unique(rows)
        spec = _index_spec(kind, len(emb), ef_search, ef_construction, nprobe)
        now = _now()
        info = {
            "catalogue_id": uuid.uuid4().hex,
            "generation": None,
            "model_fingerprint": model_fingerprint,
            "index": spec,
            "data_root": None if data_root is None else str(data_root),
            "decision_threshold": None,
            "created": now,
            "updated": now,
        }
        return cls(_State(emb, rows, _make_faiss(emb, spec), info))

    def rebuild(self, kind: IndexKind | None = None, **params: int) -> GalleryIndex:
        """Same catalogue, new search structure built from the embeddings (e.g. switch to hnsw as it grows)."""
        old = self._s.info["index"]
        kind = kind or old["kind"]
        keep = old["params"] if kind == old["kind"] else {}
        spec = _index_spec(
            kind,
            len(self),
            params.get("ef_search", keep.get("ef_search", HNSW_EF_SEARCH)),
            params.get("ef_construction", keep.get("ef_construction", HNSW_EF_CONSTRUCTION)),
            params.get("nprobe"),
        )
        info = {**self._s.info, "index": spec}
        return GalleryIndex(_State(self._s.emb, list(self._s.rows), _make_faiss(self._s.emb, spec), info))

    # ------------------------------------------------------------------------------------- persistence

    def save(
        self, index_dir: str | os.PathLike[str], *, overwrite: bool = False, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> Path:
        """Commit this catalogue to ``index_dir`` as a new generation.

        Refuses (IndexConflictError) to replace a different catalogue, or a newer generation of this one written
        by someone else, unless ``overwrite`` - so a stale object cannot silently drop another writer's images.
        """
        d = Path(index_dir)
        with writer_lock(d, lock_timeout):
            disk = _peek_manifest(d)
            if disk is not None and not overwrite and not self._same_generation(disk):
                raise IndexConflictError(
                    f"{d} holds catalogue {disk.get('catalogue_id')} generation {disk.get('generation')}, "
                    f"not the one this index was loaded from; load it and add(), or save(overwrite=True)"
                )
            self._s = _commit(d, self._s, disk)
        return d

    @classmethod
    def load(
        cls,
        index_dir: str | os.PathLike[str],
        expected_model_fingerprint: str | None = None,
        *,
        expected_dim: int | None = None,
        verify: bool = True,
    ) -> GalleryIndex:
        """Open the latest committed generation; never blocks on writers.

        ``verify=False`` checks file sizes instead of sha256 (faster for very large catalogues, weaker).
        """
        d = Path(index_dir)
        with ExitStack() as stack:
            res = _resolve(d, stack, verify)
            m = res.manifest
            _check_expected(d, m, expected_model_fingerprint, expected_dim)
            emb = _read_embeddings(res.files[EMBEDDINGS], m)
            rows = _read_meta(res.files[META], m)
            notes = list(res.notes)
            spec = m["index"]
            if FAISS_FILE in res.files:
                index = _read_faiss(res.files[FAISS_FILE], m)
            else:
                notes.append(f"{FAISS_FILE} did not verify; rebuilt it from {EMBEDDINGS}")
                index = _make_faiss(emb, spec)
        for note in notes:
            log.warning("index %s: %s", d, note)
        info = {k: m[k] for k in ("catalogue_id", "generation", "model_fingerprint", "index", "data_root")}
        info.update(decision_threshold=m.get("decision_threshold"), created=m["created"], updated=m["updated"])
        return cls(_State(emb, rows, index, info), notes)

    def add(
        self,
        index_dir: str | os.PathLike[str],
        embeddings: np.ndarray,
        rows: Iterable[MetaRow | Mapping[str, Any] | Any],
        *,
        skip_existing: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> list[str]:
        """Append images (of known or new individuals) to the faiss index in place and commit; returns new ids.

        Under the lock it first catches up with any newer generation on disk, so concurrent adders never lose
        each other's images. Already-catalogued image ids raise ValueError unless ``skip_existing``.
        This object changes only once the commit succeeded.
        """
        new_rows = [MetaRow.coerce(r) for r in rows]
        emb = _as_unit(embeddings, self.dim)
        if len(new_rows) != len(emb):
            raise ValueError(f"{len(emb)} embeddings but {len(new_rows)} meta rows")
        _check_unique(new_rows)
        d = Path(index_dir)
        with writer_lock(d, lock_timeout):
            disk = _peek_manifest(d)
            if disk is not None and not self._same_generation(disk):
                self._catch_up(d, disk)
            keep = [i for i, r in enumerate(new_rows) if r.image_id not in self._s.pos]
            if len(keep) < len(new_rows) and not skip_existing:
                dup = [r.path for r in new_rows if r.image_id in self._s.pos][:5]
                raise ValueError(f"{len(new_rows) - len(keep)} image(s) already in the catalogue, e.g. {dup}")
            if not keep and disk is not None:
                return []
            self._s = _commit(d, _appended(self._s, emb[keep], [new_rows[i] for i in keep]), disk)
        return [new_rows[i].image_id for i in keep]

    def _same_generation(self, disk: Mapping[str, Any]) -> bool:
        info = self._s.info
        return disk.get("catalogue_id") == info["catalogue_id"] and disk.get("generation") == info["generation"]

    def _catch_up(self, d: Path, disk: Mapping[str, Any]) -> None:
        if disk.get("catalogue_id") != self._s.info["catalogue_id"]:
            raise IndexConflictError(
                f"{d} holds another catalogue ({disk.get('catalogue_id')}); load that one to add to it"
            )
        fresh = GalleryIndex.load(d, self.model_fingerprint, expected_dim=self.dim)
        self._s, self.recovery_notes = fresh._s, fresh.recovery_notes

    # ------------------------------------------------------------------------------------------ search

    def search(
        self, queries: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None
    ) -> list[list[Hit]]:
        """Top-k gallery images per query (a 1-D query counts as one), best first, ties broken by row order.

        Safe alongside ``add`` in another thread: it reads one state snapshot, and ``add`` swaps states whole.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        st = self._s
        q = _as_unit(queries, int(st.emb.shape[1]))
        if not st.rows:
            return [[] for _ in range(len(q))]
        kk = min(k, len(st.rows))
        scores, ids = st.index.search(q, kk, params=_search_params(st.info["index"], kk, ef_search, nprobe))
        return [_hits(st.rows, s, i) for s, i in zip(scores, ids, strict=True)]

    def set_decision_threshold(self, threshold: float | None) -> None:
        """Keep the calibrated new-individual threshold with the catalogue (persisted by the next save/add).

        It belongs to the model that made the embeddings, so it travels with the index rather than a config file.
        """
        if threshold is not None:
            threshold = float(threshold)
            if not math.isfinite(threshold):
                raise ValueError("decision threshold must be finite")
        self._s.info = {**self._s.info, "decision_threshold": threshold}

    @property
    def decision_threshold(self) -> float | None:
        """Score below which a query is reported as a possible new individual; None when never calibrated."""
        return self._s.info.get("decision_threshold")

    # ------------------------------------------------------------------------------------- accessors

    def identities(self) -> dict[str, int]:
        """Images per identity, sorted by identity name."""
        return dict(sorted(Counter(r.identity for r in self._s.rows).items()))

    def row(self, image_id: str) -> MetaRow:
        """The meta row of one image; KeyError when it is not catalogued."""
        return self._s.rows[self._s.pos[image_id]]

    def embedding(self, image_id: str) -> np.ndarray:
        return self._s.emb[self._s.pos[image_id]].copy()

    def __len__(self) -> int:
        return len(self._s.rows)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._s.pos

    @property
    def rows(self) -> tuple[MetaRow, ...]:
        return tuple(self._s.rows)

    @property
    def embeddings(self) -> np.ndarray:
        view = self._s.emb.view()
        view.flags.writeable = False
        return view

    @property
    def dim(self) -> int:
        return int(self._s.emb.shape[1])

    @property
    def kind(self) -> str:
        """The structure actually used (``ivf`` on a small catalogue falls back to ``flat``)."""
        return str(self._s.info["index"]["effective_kind"])

    @property
    def index_info(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._s.info["index"]))

    @property
    def model_fingerprint(self) -> str:
        return str(self._s.info["model_fingerprint"])

    @property
    def catalogue_id(self) -> str:
        return str(self._s.info["catalogue_id"])

    @property
    def generation(self) -> int | None:
        """Committed generation this object reflects; None until first saved."""
        return self._s.info["generation"]

    @property
    def data_root(self) -> Path | None:
        root = self._s.info["data_root"]
        return None if root is None else Path(root)

    def __repr__(self) -> str:
        return (
            f"GalleryIndex(n={len(self)}, dim={self.dim}, ids={len(self.identities())}, kind={self.kind}, "
            f"generation={self.generation})"
        )


def _search_params(spec: Mapping[str, Any], k: int, ef_search: int | None, nprobe: int | None) -> Any:
    if spec["effective_kind"] == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=max(k, ef_search or spec["params"]["ef_search"]))
    if spec["effective_kind"] == "ivf":
        return faiss.SearchParametersIVF(nprobe=nprobe or spec["params"]["nprobe"])
    return None


def _hits(rows: list[MetaRow], scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
    found = sorted((-s, i) for s, i in zip(scores.tolist(), ids.tolist(), strict=True) if i >= 0)
    picked = [(rows[i], -neg) for neg, i in found]
    return [Hit(r.image_id, r.path, r.identity, r.date, s, rank) for rank, (r, s) in enumerate(picked, start=1)]


# ------------------------------------------------------------------------------------------- embeddings


def _as_unit(x: Any, dim: int | None) -> np.ndarray:
    """float32, 2-D, finite, unit-length rows: the one representation the index stores and searches."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"embeddings must be 1-D or 2-D, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise IndexMismatchError(f"embedding dim {a.shape[1]} does not match the index dim {dim}")
    if a.shape[1] == 0:
        raise ValueError("embeddings have zero dimensions")
    if not np.isfinite(a).all():
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("an embedding has zero length and cannot be compared by cosine")
    return np.ascontiguousarray(a / norms, dtype=np.float32)


def _check_unique(rows: list[MetaRow]) -> None:
    counts = Counter(r.image_id for r in rows)
    dup = [i for i, c in counts.items() if c > 1]
    if dup:
        paths = [r.path for r in rows if r.image_id in set(dup[:3])]
        raise ValueError(f"{len(dup)} duplicate image id(s) (same path twice?), e.g. {paths[:5]}")


def _appended(s: _State, emb: np.ndarray, rows: list[MetaRow]) -> _State:
    """A new state with rows appended; the faiss index is cloned so the current one stays valid on failure."""
    index = faiss.clone_index(s.index)
    if len(emb):
        index.add(emb)
    pos = dict(s.pos)
    pos.update({r.image_id: len(s.rows) + i for i, r in enumerate(rows)})
    return _State(np.concatenate([s.emb, emb]), s.rows + rows, index, dict(s.info), pos)


# ---------------------------------------------------------------------------------------------- faiss


def _index_spec(kind: str, n: int, ef_search: int, ef_construction: int, nprobe: int | None) -> dict[str, Any]:
    """Requested kind, what is actually built, and its parameters (stored in the manifest)."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
    spec: dict[str, Any] = {"kind": kind, "effective_kind": kind, "metric": "inner_product", "params": {}, "note": None}
    if kind == "hnsw":
        spec["params"] = {"M": HNSW_M, "ef_construction": int(ef_construction), "ef_search": int(ef_search)}
    elif kind == "ivf" and n < IVF_MIN_SIZE:
        spec["effective_kind"] = "flat"
        spec["note"] = (
            f"ivf needs >= {IVF_MIN_SIZE} images to train (have {n}); using exact flat search, which is fast "
            f"at this size. Rebuild as ivf once the catalogue grows."
        )
    elif kind == "ivf":
        nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
        probe = nprobe or max(16, nlist // 8)
        train = min(n, nlist * IVF_POINTS_PER_CENTROID)
        spec["params"] = {
            "nlist": nlist,
            "nprobe": int(min(probe, nlist)),
            "train_size": train,
            "train_iters": IVF_TRAIN_ITERS,
        }
    return spec


def _make_faiss(emb: np.ndarray, spec: Mapping[str, Any]) -> Any:
    """A new faiss index over ``emb`` (trained first for ivf)."""
    dim, p, kind = emb.shape[1], spec["params"], spec["effective_kind"]
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.max_points_per_centroid = IVF_POINTS_PER_CENTROID
        index.cp.niter = IVF_TRAIN_ITERS
        index.train(emb)
        index.nprobe = p["nprobe"]
    else:
        index = faiss.IndexFlatIP(dim)
    if len(emb):
        index.add(emb)
    return index


# ------------------------------------------------------------------------------------------ locking


@contextmanager
def writer_lock(index_dir: str | os.PathLike[str], timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the directory's writer lock; IndexLockedError after ``timeout`` seconds of waiting."""
    d = Path(index_dir)
    d.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(d / LOCK_FILE), timeout=timeout)
    try:
        lock.acquire()
    except Timeout as e:
        raise IndexLockedError(
            f"another process is writing the index at {d} (waited {timeout:g}s for {d / LOCK_FILE}); "
            "try again when it has finished"
        ) from e
    try:
        _pause("locked")
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------- writing


def _commit(d: Path, s: _State, disk: Mapping[str, Any] | None) -> _State:
    """Write ``s`` as the next generation (steps 1-4 of the module docstring); caller holds the lock."""
    _remove_stale_tmp(d)
    old = _committed_paths(d)
    gen = max(int((disk or {}).get("generation") or 0), int(s.info["generation"] or 0)) + 1
    info = {**s.info, "generation": gen, "updated": _now()}
    tmp: dict[str, Path] = {}
    try:
        files = {}
        for name, writer in (
            (EMBEDDINGS, lambda f: np.save(f, s.emb, allow_pickle=False)),
            (META, lambda f: f.write(_meta_bytes(s.rows))),
            (FAISS_FILE, lambda f: _write_faiss(s.index, f)),
        ):
            tmp[name], files[name] = _write_tmp(d, name, writer)
        manifest = _manifest(info, s, files)
        tmp[MANIFEST], _ = _write_tmp(d, MANIFEST, lambda f: f.write(manifest))
        _pause("tmp-written")
        if old is not None:
            _snapshot(d, *old)
        _fsync_dir(d)
        for name in DATA_FILES:
            os.replace(tmp.pop(name), d / name)
            _pause(f"replaced:{name}")
        _fsync_dir(d)
        os.replace(tmp.pop(MANIFEST), d / MANIFEST)
        _fsync_dir(d)
        _pause("committed")
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    return replace(s, info=info)


def _snapshot(d: Path, manifest_path: Path, paths: Mapping[str, Path]) -> None:
    """Make ``*.prev`` hold the committed generation, linking only files that verified."""
    for name in DATA_FILES:
        src = paths.get(name)
        if src is not None and src == d / name:
            _link_or_copy(src, d / (name + PREV))
        _pause(f"prev:{name}")
    if manifest_path == d / MANIFEST:
        _link_or_copy(manifest_path, d / (MANIFEST + PREV))
    _pause(f"prev:{MANIFEST}")


def _committed_paths(d: Path) -> tuple[Path, dict[str, Path]] | None:
    """Where the committed generation's verified files are, or None when there is none to preserve."""
    with ExitStack() as stack:
        try:
            res = _resolve(d, stack, verify=True)
        except (IndexNotFoundError, IndexCorruptError):
            return None
        return res.manifest_path, {name: Path(f.name) for name, f in res.files.items()}


def _write_tmp(d: Path, name: str, write: Callable[[Any], object]) -> tuple[Path, dict[str, Any]]:
    """Write a temp file next to its final name, fsync it, and return its path, sha256 and size."""
    tmp = d / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "xb") as raw:
            out = _HashingWriter(raw)
            write(out)
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, {"sha256": out.hexdigest(), "bytes": out.size}


class _HashingWriter:
    """File-like that hashes what it writes, so the manifest's sha256 costs no second read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw, self._h, self.size = raw, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        mv = memoryview(data).cast("B")
        self._h.update(mv)
        self._raw.write(mv)
        self.size += mv.nbytes
        return mv.nbytes

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _write_faiss(index: Any, out: _HashingWriter) -> None:
    writer = faiss.PyCallbackIOWriter(out.write)
    faiss.write_index(index, writer)
    del writer


def _meta_bytes(rows: list[MetaRow]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(META_COLUMNS)
    w.writerows((r.image_id, r.path, r.identity, r.date or "") for r in rows)
    return buf.getvalue().encode("utf-8")


def _manifest(info: Mapping[str, Any], s: _State, files: Mapping[str, Any]) -> bytes:
    doc = {
        "format_version": FORMAT_VERSION,
        "catalogue_id": info["catalogue_id"],
        "generation": info["generation"],
        "model_fingerprint": info["model_fingerprint"],
        "dim": int(s.emb.shape[1]),
        "count": len(s.rows),
        "num_identities": len({r.identity for r in s.rows}),
        "index": info["index"],
        "data_root": info["data_root"],
        "decision_threshold": info.get("decision_threshold"),
        "created": info["created"],
        "updated": info["updated"],
        "files": dict(files),
        "writer": {"wildtrack": __version__, "faiss": faiss.__version__},
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a copy of ``src``: a hard link when the filesystem allows (free), else a copy."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_tmp(d: Path) -> None:
    """Temp files of a writer that died; safe to delete because we hold the lock."""
    for p in d.glob(".*.tmp-*"):
        p.unlink(missing_ok=True)


def _fsync_dir(d: Path) -> None:
    """Make renames durable; directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause(point: str) -> None:
    if os.environ.get(PAUSE_ENV) == point:
        sys.stdout.write(f"PAUSED {point}\n")
        sys.stdout.flush()
        time.sleep(3600)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------- reading


@dataclass
class _Resolved:
    manifest: dict[str, Any]
    manifest_path: Path
    files: dict[str, IO[bytes]]
    notes: list[str]


def _resolve(d: Path, stack: ExitStack, verify: bool, attempts: int = 3) -> _Resolved:
    """Find one manifest and data files that all verify against it (see the module docstring)."""
    if not (d / MANIFEST).exists() and not (d / (MANIFEST + PREV)).exists():
        raise IndexNotFoundError(f"no committed index in {d} ({MANIFEST} missing)")
    problems: list[str] = []
    for attempt in range(attempts):
        res = _try_manifest(d, d / MANIFEST, stack, verify, problems)
        if res is not None:
            return res
        if attempt + 1 < attempts:
            time.sleep(0.05 * (attempt + 1))  # most likely a writer renaming files right now
    res = _try_manifest(d, d / (MANIFEST + PREV), stack, verify, problems)
    if res is not None:
        res.notes.insert(0, f"{MANIFEST} unusable ({problems[0]}); recovered the previous generation")
        return res
    raise IndexCorruptError(f"no consistent index generation in {d}: " + "; ".join(dict.fromkeys(problems)))


def _try_manifest(d: Path, path: Path, stack: ExitStack, verify: bool, problems: list[str]) -> _Resolved | None:
    try:
        m = json.loads(path.read_bytes())
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
        version = int(m.get("format_version", 0))
    except FileNotFoundError:
        problems.append(f"{path.name} missing")
        return None
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} unreadable: {e}")
        return None
    if version > FORMAT_VERSION:
        raise GalleryIndexError(
            f"{d} uses index format {version}, newer than this wildtrack understands ({FORMAT_VERSION}); upgrade"
        )
    files: dict[str, IO[bytes]] = {}
    with ExitStack() as mine:
        for name in DATA_FILES:
            f = _open_matching(d, name, (m.get("files") or {}).get(name), verify)
            if f is not None:
                files[name] = mine.enter_context(f)
            elif name != FAISS_FILE:
                problems.append(f"{name} matches neither the live nor the .prev copy named in {path.name}")
                return None
        stack.enter_context(mine.pop_all())  # success: the caller closes them
    return _Resolved(m, path, files, [])


def _open_matching(d: Path, name: str, expect: Mapping[str, Any] | None, verify: bool) -> IO[bytes] | None:
    """The live or .prev copy of ``name`` whose size and sha256 match ``expect``, opened at offset 0."""
    if not expect:
        return None
    for p in (d / name, d / (name + PREV)):
        try:
            f = open(p, "rb")  # noqa: SIM115 - handed to the caller's ExitStack
        except FileNotFoundError:
            continue
        ok = os.fstat(f.fileno()).st_size == expect.get("bytes") and (not verify or _sha256(f) == expect.get("sha256"))
        if ok:
            f.seek(0)
            return f
        f.close()
    return None


def _sha256(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _check_expected(d: Path, m: Mapping[str, Any], fingerprint: str | None, dim: int | None) -> None:
    if fingerprint is not None and m.get("model_fingerprint") != fingerprint:
        raise IndexMismatchError(
            f"the index at {d} was built with model {m.get('model_fingerprint')!r}, but the current model is "
            f"{fingerprint!r}; its embeddings are not comparable - rebuild the index with this model"
        )
    if dim is not None and m.get("dim") != dim:
        raise IndexMismatchError(f"the index at {d} holds {m.get('dim')}-d embeddings, but the model makes {dim}-d")


def _read_embeddings(f: IO[bytes], m: Mapping[str, Any]) -> np.ndarray:
    emb = np.load(f, allow_pickle=False)
    if emb.dtype != np.float32 or emb.shape != (m["count"], m["dim"]):
        raise IndexCorruptError(f"{EMBEDDINGS} is {emb.dtype}{emb.shape}, manifest says ({m['count']}, {m['dim']})")
    return emb


def _read_meta(f: IO[bytes], m: Mapping[str, Any]) -> list[MetaRow]:
    reader = csv.reader(io.StringIO(f.read().decode("utf-8"), newline=""))
    header = tuple(next(reader, ()))
    if header != META_COLUMNS:
        raise IndexCorruptError(f"{META} header is {header}, expected {META_COLUMNS}")
    try:
        rows = [MetaRow(i, p, ident, day or None) for i, p, ident, day in reader]
    except ValueError as e:
        raise IndexCorruptError(f"{META} has a malformed row: {e}") from e
    if len(rows) != m["count"]:
        raise IndexCorruptError(f"{META} has {len(rows)} rows, manifest says {m['count']}")
    return rows


def _read_faiss(f: IO[bytes], m: Mapping[str, Any]) -> Any:
    reader = faiss.PyCallbackIOReader(f.read)
    index = faiss.read_index(reader)
    del reader
    if index.ntotal != m["count"] or index.d != m["dim"]:
        raise IndexCorruptError(f"{FAISS_FILE} holds {index.ntotal}x{index.d}, manifest says {m['count']}x{m['dim']}")
    return index


def _peek_manifest(d: Path) -> dict[str, Any] | None:
    """The committed manifest without verifying files (for conflict checks), or None if there is none."""
    for path in (d / MANIFEST, d / (MANIFEST + PREV)):
        try:
            m = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict):
            return m
    return None
