"""The catalogue API: build, save, load, add to and search a gallery of L2-normalised embeddings.

The on-disk format and its crash safety are :mod:`wildtrack.index.store`'s; the FAISS structures are
:mod:`wildtrack.index.faiss_spec`'s.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from wildtrack.index.faiss_spec import (
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    IndexKind,
    index_spec,
    make_faiss,
    search_params,
    to_hits,
)
from wildtrack.index.files import EMBEDDINGS, FAISS_FILE, MANIFEST, META, now, read_embeddings, read_faiss, read_meta
from wildtrack.index.store import (
    DEFAULT_LOCK_TIMEOUT,
    LEGACY_EXTRAS,
    State,
    check_expected,
    check_extra_name,
    check_shard_name,
    commit,
    peek_manifest,
    resolve,
    writer_lock,
)
from wildtrack.index.types import Hit, IndexConflictError, IndexMismatchError, MetaRow
from wildtrack.vectors import unit_rows

log = logging.getLogger("wildtrack.index")

ShardFiles = Mapping[str, Mapping[str, Any]]  # shard name under the index dir -> its sha256 and bytes


class GalleryIndex:
    """A searchable catalogue of known individuals; the on-disk format is :mod:`wildtrack.index.store`'s."""

    def __init__(self, state: State, recovery_notes: list[str] | None = None) -> None:
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
        spec = index_spec(kind, len(emb), ef_search, ef_construction, nprobe)
        stamp = now()
        info = {
            "catalogue_id": uuid.uuid4().hex,
            "generation": None,
            "model_fingerprint": model_fingerprint,
            "index": spec,
            "data_root": None if data_root is None else str(data_root),
            "decision_threshold": None,
            "created": stamp,
            "updated": stamp,
        }
        return cls(State(emb, rows, make_faiss(emb, spec), info))

    # ------------------------------------------------------------------------------------- persistence

    def save(
        self,
        index_dir: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        extras: Mapping[str, bytes] | None = None,
        shards: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Path:
        """Commit this catalogue to ``index_dir`` as a new generation.

        Refuses (IndexConflictError) to replace a different catalogue, or a newer generation of this one written
        by someone else, unless ``overwrite`` - so a stale object cannot silently drop another writer's images.
        ``extras`` (file name -> bytes, e.g. ``{"fusion.json": ...}``) becomes the generation's complete set of
        extra files, committed and verified with it (:meth:`read_extra`); None keeps the ones this object has.
        Extras are held in memory: they are for small files that belong to the catalogue.
        ``shards`` (``"<folder>/<file>"`` -> ``{"sha256", "bytes"}``) lists large files the caller already wrote
        into ``index_dir`` (e.g. the feature store): they become the generation's complete set of shards, listed
        in its manifest and verified by their reader (:attr:`shards`); None keeps the ones this object has.
        """
        d = Path(index_dir)
        state = self._with_shards(self._s, shards)
        if extras is not None:
            for name in extras:
                check_extra_name(name)
            state = replace(state, extras={name: bytes(data) for name, data in extras.items()})
        with writer_lock(d, lock_timeout):
            disk = peek_manifest(d)
            if disk is not None and not overwrite and not self._same_generation(disk):
                raise IndexConflictError(
                    f"{d} holds catalogue {disk.get('catalogue_id')} generation {disk.get('generation')}, "
                    f"not the one this index was loaded from; load it and add(), or save(overwrite=True)"
                )
            self._s = commit(d, state, disk)
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
            res = resolve(d, stack, verify)
            m = res.manifest
            check_expected(d, m, expected_model_fingerprint, expected_dim)
            emb = read_embeddings(res.files[EMBEDDINGS], m)
            rows = read_meta(res.files[META], m)
            notes = list(res.notes)
            spec = m["index"]
            if FAISS_FILE in res.files:
                index = read_faiss(res.files[FAISS_FILE], m)
            else:
                notes.append(f"{FAISS_FILE} did not verify; rebuilt it from {EMBEDDINGS}")
                index = make_faiss(emb, spec)
            extras = {name: f.read() for name, f in res.extras.items()}
        if res.legacy_extras:
            extras = _legacy_extras(d)
        for note in notes:
            log.warning("index %s: %s", d, note)
        info = {k: m[k] for k in ("catalogue_id", "generation", "model_fingerprint", "index", "data_root")}
        info.update(decision_threshold=m.get("decision_threshold"), created=m["created"], updated=m["updated"])
        shards = m.get("shards") or {}
        for name in shards:
            check_shard_name(name)
        return cls(State(emb, rows, index, info, extras=extras, shards=dict(shards)), notes)

    def read_extra(self, name: str) -> bytes | None:
        """The content of an extra file committed with this generation (see :meth:`save`), None if it has none."""
        return self._s.extras.get(name)

    def add(
        self,
        index_dir: str | os.PathLike[str],
        embeddings: np.ndarray,
        rows: Iterable[MetaRow | Mapping[str, Any] | Any],
        *,
        skip_existing: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        shards: ShardFiles | Callable[[dict[str, dict[str, Any]]], ShardFiles] | None = None,
    ) -> list[str]:
        """Append images (of known or new individuals) to the faiss index in place and commit; returns new ids.

        Under the lock it first catches up with any newer generation on disk, so concurrent adders never lose
        each other's images. Already-catalogued image ids raise ValueError unless ``skip_existing``.
        This object changes only once the commit succeeded. ``shards`` is as for :meth:`save` (None: keep them),
        or a function of the shards committed on disk (after catching up) returning the new set: a feature store
        grown by two writers at once then keeps both writers' files.
        """
        new_rows = [MetaRow.coerce(r) for r in rows]
        emb = _as_unit(embeddings, self.dim)
        if len(new_rows) != len(emb):
            raise ValueError(f"{len(emb)} embeddings but {len(new_rows)} meta rows")
        _check_unique(new_rows)
        d = Path(index_dir)
        with writer_lock(d, lock_timeout):
            disk = peek_manifest(d)
            if disk is not None and not self._same_generation(disk):
                self._catch_up(d, disk)
            if callable(shards):
                shards = shards(self.shards)
            keep = [i for i, r in enumerate(new_rows) if r.image_id not in self._s.pos]
            if len(keep) < len(new_rows) and not skip_existing:
                dup = [r.path for r in new_rows if r.image_id in self._s.pos][:5]
                raise ValueError(f"{len(new_rows) - len(keep)} image(s) already in the catalogue, e.g. {dup}")
            if not keep and disk is not None and shards is None:
                return []
            grown = _appended(self._s, emb[keep], [new_rows[i] for i in keep])
            self._s = commit(d, self._with_shards(grown, shards), disk)
        return [new_rows[i].image_id for i in keep]

    def without(self, image_ids: Iterable[str]) -> GalleryIndex:
        """This catalogue less some images, in memory (the search structure rebuilt); :meth:`save` commits it as
        the next generation of the same catalogue, e.g. to drop rows whose photos are gone for good."""
        drop = set(image_ids)
        keep = [i for i, r in enumerate(self._s.rows) if r.image_id not in drop]
        emb = np.ascontiguousarray(self._s.emb[keep])
        s = self._s
        return GalleryIndex(State(emb, [s.rows[i] for i in keep], make_faiss(emb, s.info["index"]), dict(s.info),
                                  extras=dict(s.extras), shards=dict(s.shards)))

    @staticmethod
    def _with_shards(state: State, shards: Mapping[str, Mapping[str, Any]] | None) -> State:
        if shards is None:
            return state
        for name in shards:
            check_shard_name(name)
        return replace(state, shards={name: {"sha256": str(e["sha256"]), "bytes": int(e["bytes"])}
                                      for name, e in shards.items()})

    @property
    def shards(self) -> dict[str, dict[str, Any]]:
        """This generation's shard files (name under the index directory -> sha256 and bytes)."""
        return {name: dict(e) for name, e in self._s.shards.items()}

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
        scores, ids = st.index.search(q, kk, params=search_params(st.info["index"], kk, ef_search, nprobe))
        return [to_hits(st.rows, s, i) for s, i in zip(scores, ids, strict=True)]

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
    def data_root(self) -> Path | str | None:
        """The catalogue's folder, or its object-storage URL (``s3://bucket/prefix``) as a string."""
        root = self._s.info["data_root"]
        return None if root is None else root if "://" in root else Path(root)

    def __repr__(self) -> str:
        return (
            f"GalleryIndex(n={len(self)}, dim={self.dim}, ids={len(self.identities())}, kind={self.kind}, "
            f"generation={self.generation})"
        )


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
    if (np.linalg.norm(a, axis=1) == 0).any():
        raise ValueError("an embedding has zero length and cannot be compared by cosine")
    return np.ascontiguousarray(unit_rows(a))


def _check_unique(rows: list[MetaRow]) -> None:
    counts = Counter(r.image_id for r in rows)
    dup = [i for i, c in counts.items() if c > 1]
    if dup:
        paths = [r.path for r in rows if r.image_id in set(dup[:3])]
        raise ValueError(f"{len(dup)} duplicate image id(s) (same path twice?), e.g. {paths[:5]}")


def _appended(s: State, emb: np.ndarray, rows: list[MetaRow]) -> State:
    """A new state with rows appended; the faiss index is cloned so the current one stays valid on failure."""
    index = faiss.clone_index(s.index)
    if len(emb):
        index.add(emb)
    pos = dict(s.pos)
    pos.update({r.image_id: len(s.rows) + i for i, r in enumerate(rows)})
    return State(np.concatenate([s.emb, emb]), s.rows + rows, index, dict(s.info), pos, dict(s.extras),
                 dict(s.shards))


def _legacy_extras(d: Path) -> dict[str, bytes]:
    """Loose files beside an index written before extras were committed: taken as they are (the next commit
    adopts them), since that wildtrack could not tie them to a generation."""
    found = {}
    for name in LEGACY_EXTRAS:
        try:
            found[name] = (d / name).read_bytes()
        except FileNotFoundError:
            continue
        log.info("index %s: %s is not in %s (an index written before it was committed); read the loose file",
                 d, name, MANIFEST)
    return found
