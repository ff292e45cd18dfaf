"""What the web service does, without HTTP: embed a photo, search, decide, enrol, make thumbnails.

Everything here is synchronous and blocking (model inference, faiss, file I/O); the app runs it in a
thread pool. Searches need no lock: ``GalleryIndex.add`` swaps its state in one assignment and only appends,
and a reload (another process committed) swaps the whole searcher in one assignment, so a search sees the old or
the new catalogue, never a mix. Mutations are serialised by ``write_lock`` (and across processes by the index's
own file lock).

Where enrolled photos live
--------------------------
An uploaded photo is stored under ``<index_dir>/enrolled/<folder>/``, where ``<folder>`` is the identity made
filesystem-safe (see :func:`~wildtrack.workflows.enrolment.safe_folder`), named by its content (see
:mod:`wildtrack.workflows.enrolment`, which also explains how a crash mid-enrolment is recovered) with the
extension of its decoded format, never the client's file name. Its meta.csv ``path`` is that file's path relative
to the *data root* (the manifest's ``data_root``, or the index directory when the index has none), as every other
gallery image's path is; it starts with ``..`` when the index lives outside the data root. So a catalogue moved
together with its data keeps working, and thumbnails resolve every row the same way: ``data_root / path``,
accepted only if the resolved file lies inside the data root or the index directory.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date as _date
from pathlib import Path

import numpy as np
from PIL import Image

from wildtrack.config import MAX_SEARCH_K
from wildtrack.data import storage
from wildtrack.decide.policy import DecisionPolicy
from wildtrack.embed import Embedder
from wildtrack.features.store import StoreFeatureCache
from wildtrack.images import ImageError, Photo, open_image, prepare_photo
from wildtrack.index import GalleryIndex, Hit
from wildtrack.search import CatalogueSearch, EncounterIdentification, Identification, open_catalogue
from wildtrack.serve.reload import committed_generation
from wildtrack.serve.uploads import ImageInfo, UploadError, inspect_image
from wildtrack.workflows import enrolment

log = logging.getLogger(__name__)

THUMBNAIL_PX = 256
THUMBNAIL_CACHE = 512  # ~10 kB each: a few MB keeps a whole results page and the identity pages hot
ENROL_LOCK_TIMEOUT = enrolment.ENROL_LOCK_TIMEOUT  # seconds to wait for another writer before a 503
ENROL_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its bytes and the name the client gave it (used only in error messages)."""

    data: bytes
    name: str = "upload"


@dataclass(frozen=True)
class Searched:
    """A search's answer: its top ``k`` ``hits``, and every photo it ``ranked`` (the re-ranking shortlist can
    hold more), which is what warnings about unreadable catalogue photos are read from."""

    hits: list[Hit]
    ranked: list[Hit]


Enrolment = enrolment.EnrolResult  # what an enrolment did, as /enroll answers it


@dataclass(frozen=True)
class Prepared:
    """An upload decoded once (:func:`~wildtrack.images.prepare_photo`): the model's pixels and what local
    matching reads."""

    info: ImageInfo
    pixels: np.ndarray
    image: Photo


class Catalogue:
    """The loaded model plus the loaded gallery index: one per server process.

    Searching and deciding is :class:`~wildtrack.search.CatalogueSearch`'s, the same as ``wildtrack search``;
    this adds decoding uploads, enrolment, reloading what other processes committed, and thumbnails.
    """

    def __init__(self, embedder: Embedder, searcher: CatalogueSearch, max_pixels: int,
                 threshold: float | None = None, rerank: bool = True) -> None:
        self.embedder = embedder
        self.rerank = rerank  # kept across reloads: --no-rerank stays global-only
        self.searcher = searcher
        self.index_dir = searcher.index_dir
        self.data_root = searcher.data_root
        self.max_pixels = max_pixels
        self.threshold_override = threshold
        self.write_lock = threading.Lock()
        self._thumbs: OrderedDict[str, bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()
        self._unreadable: dict[str, str] = {}  # image id -> why, found by thumbnails and the start-up scan

    @property
    def index(self) -> GalleryIndex:
        return self.searcher.index

    # ------------------------------------------------------------------------------------- start-up

    @classmethod
    def open(cls, index_dir: str | os.PathLike[str], artifacts: str | os.PathLike[str],
             threshold: float | None = None, max_pixels: int = 60_000_000, rerank: bool = True) -> Catalogue:
        """Load the model, then the index it must match (IndexMismatchError otherwise), finish or undo enrolments
        a crash interrupted, then warm up.

        Without a ``threshold`` override, a re-ranking index decides on its fitted match-probability threshold
        and a global one (or any, with ``rerank`` false) on the cosine threshold stored with it.
        """
        embedder, searcher = open_catalogue(index_dir, artifacts, threshold=threshold, rerank=rerank)
        enrolment.recover_enrolments(searcher.index_dir, searcher.data_root, searcher.index)
        w, h = embedder.image_size
        embedder.embed_pixels(np.zeros((1, h, w, 3), np.uint8))  # first call traces the graph: pay it now
        searcher.warm_up()
        return cls(embedder, searcher, max_pixels, threshold, rerank)

    def reload_if_committed_elsewhere(self) -> bool | None:
        """Load the index again when another process committed a newer generation (e.g. ``wildtrack index add``).

        A catalogue that no longer fits the model is logged and the loaded one kept serving. None: an enrolment
        holds the write lock, try again later (never wait for it: /health must stay fast).
        """
        catalogue_id, generation = committed_generation(self.index_dir)
        if generation is None or (catalogue_id, generation) == (self.index.catalogue_id, self.index.generation):
            return False
        if not self.write_lock.acquire(blocking=False):
            return None  # an enrolment is committing (and catches up itself): look again on a later request
        try:
            try:
                _, searcher = open_catalogue(self.index_dir, self.embedder, threshold=self.threshold_override,
                                             rerank=self.rerank)
                index = searcher.index
            except Exception as exc:  # keep serving what is loaded; the next commit is tried again
                log.error("index %s changed but cannot be reloaded, still serving generation %s: %s",
                          self.index_dir, self.index.generation, exc)
                return False
            searcher.warm_up()
            old = self.index.generation
            self.searcher = searcher
        finally:
            self.write_lock.release()
        log.info("index %s: reloaded generation %s (was %s): %d images of %d individuals", self.index_dir,
                 index.generation, old, len(index), len(index.identities()))
        return True

    @property
    def policy(self) -> DecisionPolicy:
        """How the loaded catalogue decides (score kind, thresholds, their source). An answer carries the policy
        that decided it: read that one, since a reload may swap this between the two reads."""
        return self.searcher.policy

    @property
    def backend(self) -> str:
        return str(getattr(self.embedder, "backend", type(self.embedder).__name__))

    # ------------------------------------------------------------------------------------- queries

    def prepare(self, upload: Upload) -> Prepared:
        """Decode one photo for the model and for local matching; UploadError (400/413/415) if it is unusable.

        The header is checked first (size, type, pixel count), then the photo takes the path ``wildtrack search``
        takes (:func:`~wildtrack.images.prepare_photo`), so both give the same scores.
        """
        info = inspect_image(upload.data, self.max_pixels, upload.name)
        try:
            photo = prepare_photo(upload.data, self.embedder.image_size, self.max_pixels,
                                  max(info.width, info.height))
        except ImageError as exc:
            raise UploadError(400, f"{upload.name}: cannot decode the image, is the file complete? ({exc})") from exc
        return Prepared(info, photo.pixels, photo.local)

    def embed(self, prepared: list[Prepared]) -> np.ndarray:
        """Unit vectors, one per prepared photo."""
        return self.embedder.embed_pixels(np.stack([p.pixels for p in prepared]))

    def search(self, upload: Upload, k: int) -> Searched:
        """Top-``k`` gallery images, re-ordered by local matching when the index carries a fitted fusion."""
        p = self.prepare(upload)
        ranked = self.searcher.ranked(self.embed([p])[0], p.image, k)
        return Searched(ranked[: max(1, min(k, MAX_SEARCH_K))], ranked)

    def predict(self, upload: Upload, topk: int) -> Identification:
        """Which individual: the catalogue search's verdict on the uploaded photo."""
        p = self.prepare(upload)
        return self.searcher.identify(self.embed([p])[0], p.image, topk)

    def predict_encounter(self, uploads: list[Upload], topk: int) -> EncounterIdentification:
        """Which individual, from several photos of one encounter identified together."""
        prepared = [self.prepare(u) for u in uploads]
        return self.searcher.identify_encounter(self.embed(prepared), [p.image for p in prepared], topk)

    # ------------------------------------------------------------------------------------- enrolment

    def enroll(self, identity: str, uploads: list[Upload], day: str | None = None) -> Enrolment:
        """Validate every photo first (all or nothing), then enrol them through the enrolment core
        (:func:`~wildtrack.workflows.enrolment.enrol_photos`: stage, commit to the index, move in).

        A photo this identity already has (same bytes) is not added again: it is reported in
        ``already_enrolled``, so retrying a request whose answer was lost is harmless.
        """
        try:
            identity = enrolment.validate_identity(identity)
        except enrolment.InvalidIdentityError as exc:
            raise UploadError(400, str(exc)) from exc
        day = validate_date(day)
        if not uploads:
            raise UploadError(400, "no image uploaded")
        prepared = [self.prepare(u) for u in uploads]
        vectors = self.embed(prepared)
        photos = [enrolment.EnrolPhoto(u.data, p.info.format, v, day)
                  for u, p, v in zip(uploads, prepared, vectors, strict=True)]
        with self.write_lock:
            try:
                done = enrolment.enrol_photos(self.searcher, identity, photos, lock_timeout=ENROL_LOCK_TIMEOUT,
                                              max_pixels=self.max_pixels)
            except enrolment.LookAlikeIdentityError as exc:
                raise UploadError(409, str(exc)) from exc
            except enrolment.CatalogueBusyError as exc:
                raise UploadError(503, f"{exc}; retry in {ENROL_RETRY_AFTER_S} s",
                                  headers={"Retry-After": str(ENROL_RETRY_AFTER_S)}) from exc
            except enrolment.EnrolmentError as exc:
                raise UploadError(400, str(exc)) from exc
        log.info("enrolled %d image(s) of %s%s%s", len(done.image_ids), done.identity,
                 " (new identity)" if done.new_identity else "",
                 f", {len(done.already_enrolled)} already there" if done.already_enrolled else "")
        return done

    # ------------------------------------------------------------------------------------- thumbnails

    def image_file(self, image_id: str) -> Path:
        """The file of a catalogued image, by id only; 404 unless it exists inside the data root or index dir."""
        try:
            row = self.index.row(image_id)
        except KeyError:
            raise UploadError(404, f"no catalogued image with id {image_id!r}") from None
        if storage.is_url(self.data_root):  # photos in object storage: searched from the feature store, not served
            raise UploadError(404, f"image {image_id!r} lives in object storage ({self.data_root}); the service "
                              "serves photos of folder catalogues only")
        path = (self.data_root / row.path).resolve()
        if not (path.is_relative_to(self.data_root) or path.is_relative_to(self.index_dir)):
            log.warning("refusing image %s: %s lies outside the data root and index dir", image_id, path)
            raise UploadError(404, f"image {image_id!r} is not available")
        if not path.is_file():
            self._note_unreadable(image_id, "its file is missing")
            raise UploadError(404, f"image {image_id!r} is catalogued but its file is missing (see `wildtrack index "
                              "check`)")
        return path

    def thumbnail(self, image_id: str) -> bytes:
        """A JPEG of at most 256 px per side, draft-decoded (JPEG DCT scaling) and kept in a small LRU."""
        with self._thumbs_lock:
            if image_id in self._thumbs:
                self._thumbs.move_to_end(image_id)
                return self._thumbs[image_id]
        path = self.image_file(image_id)
        try:
            img = open_image(path, size=(THUMBNAIL_PX, THUMBNAIL_PX), max_pixels=self.max_pixels)
        except ImageError as exc:
            self._note_unreadable(image_id, "its file cannot be decoded")
            raise UploadError(404, f"image {image_id!r} is catalogued but its file cannot be read (see `wildtrack "
                              "index check`)") from exc
        self._unreadable.pop(image_id, None)
        img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85, optimize=True)
        data = buf.getvalue()
        with self._thumbs_lock:
            self._thumbs[image_id] = data
            while len(self._thumbs) > THUMBNAIL_CACHE:
                self._thumbs.popitem(last=False)
        return data

    # ------------------------------------------------------------------------------------- damage

    def _note_unreadable(self, image_id: str, why: str) -> None:
        if self._unreadable.get(image_id) != why:
            log.warning("catalogue photo %s: %s", image_id, why)
        self._unreadable[image_id] = why

    def scan_files(self) -> int:
        """Note every catalogued photo whose file is missing (one ``stat`` each, for /health); returns how many."""
        if storage.is_url(self.data_root):
            return 0
        missing = 0
        for row in self.index.rows:
            if not (self.data_root / row.path).is_file():
                self._note_unreadable(row.image_id, "its file is missing")
                missing += 1
        return missing

    def damage(self) -> Damage:
        """What is known to be unreadable: photos (by id) and feature-store files found damaged."""
        photos = {i: why for i, why in list(self._unreadable.items()) if i in self.index}  # list(): other threads add
        shards: list[str] = []
        cache = self.searcher.pipeline.features if self.searcher.pipeline is not None else None
        if isinstance(cache, StoreFeatureCache):
            photos.update((i, why) for i, why in list(cache.unreadable.items()) if i in self.index)
            shards = cache.damaged_shards
        return Damage(photos, shards)

    def warnings(self, hits: list[Hit]) -> list[str]:
        """One line per shortlisted catalogue photo that could not be compared with this query. Pass every hit
        the search ranked (``Searched.ranked``, ``Identification.ranked``), not only those shown: an unreadable
        photo gets no evidence, so re-ranking can push it below them."""
        photos = self.damage().photos
        return [f"catalogue photo {h.image_id} ({h.identity}) cannot be read and was not compared: {photos[h.image_id]}"
                for h in dict.fromkeys(hits) if h.image_id in photos]


@dataclass(frozen=True)
class Damage:
    photos: dict[str, str]  # image id -> why it cannot be read
    shards: list[str]  # feature-store files (relative to the index dir) that failed their check


# ----------------------------------------------------------------------------------------------- helpers


def validate_date(day: str | None) -> str | None:
    if day is None or not day.strip():
        return None
    try:
        return _date.fromisoformat(day.strip()).isoformat()
    except ValueError:
        raise UploadError(400, f"date must be YYYY-MM-DD, got {day!r}") from None


class Timer:
    """Milliseconds since creation, for the ``elapsed_ms`` every answer carries."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    @property
    def ms(self) -> float:
        return round((time.perf_counter() - self._t0) * 1000, 2)
