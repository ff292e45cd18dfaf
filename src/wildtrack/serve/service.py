"""What the web service does, without HTTP: embed a photo, search, decide, enrol, make thumbnails.

Everything here is synchronous and blocking (model inference, faiss, file I/O); the app runs it in a
thread pool. Searches need no lock: ``GalleryIndex.add`` swaps its state in one assignment and only appends,
so a search racing an enrolment sees the old or the new catalogue, and every image id it returns stays valid.
Mutations are serialised by ``write_lock`` (and across processes by the index's own file lock).

Where enrolled photos live
--------------------------
An uploaded photo is stored as ``<index_dir>/enrolled/<folder>/<uuid4 hex><ext>``, where ``<folder>`` is the
identity made filesystem-safe (see :func:`safe_folder`) and ``<ext>`` comes from the decoded format, never
from the client's file name. Its meta.csv ``path`` is that file's path relative to the *data root* (the
manifest's ``data_root``, or the index directory when the index has none), as every other gallery image's
path is; it starts with ``..`` when the index lives outside the data root. So a catalogue moved together
with its data keeps working, and thumbnails resolve every row the same way: ``data_root / path``, accepted
only if the resolved file lies inside the data root or the index directory.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time
import unicodedata
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date as _date
from pathlib import Path

import numpy as np
from PIL import Image

from wildtrack.embed import Embedder, load_embedder
from wildtrack.images import ImageError, image_date, load_image, open_image
from wildtrack.index import GalleryIndex, Hit, IndexLockedError
from wildtrack.search import CatalogueSearch, EncounterIdentification, Identification
from wildtrack.serve.uploads import FORMAT_EXTENSIONS, ImageInfo, UploadError, inspect_image

log = logging.getLogger(__name__)

ENROLLED_DIR = "enrolled"
THUMBNAIL_PX = 256
THUMBNAIL_CACHE = 512  # ~10 kB each: a few MB keeps a whole results page and the identity pages hot
MAX_IDENTITY_LENGTH = 100
ENROL_LOCK_TIMEOUT = 10.0  # seconds to wait for another writer (e.g. a CLI `index add`) before a 503


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its bytes and the name the client gave it (used only in error messages)."""

    data: bytes
    name: str = "upload"


@dataclass(frozen=True)
class Enrolment:
    identity: str
    new_identity: bool
    image_ids: list[str]


class Catalogue:
    """The loaded model plus the loaded gallery index: one per server process.

    Searching and deciding is :class:`~wildtrack.search.CatalogueSearch`'s, the same as ``wildtrack search``;
    this adds decoding uploads, enrolment and thumbnails.
    """

    def __init__(self, embedder: Embedder, searcher: CatalogueSearch, max_pixels: int) -> None:
        self.embedder = embedder
        self.searcher = searcher
        self.index = searcher.index
        self.index_dir = searcher.index_dir
        self.data_root = searcher.data_root
        self.max_pixels = max_pixels
        self.write_lock = threading.Lock()
        self._thumbs: OrderedDict[str, bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()

    # ------------------------------------------------------------------------------------- start-up

    @classmethod
    def open(cls, index_dir: str | os.PathLike[str], artifacts: str | os.PathLike[str],
             threshold: float | None = None, max_pixels: int = 60_000_000, rerank: bool = True) -> Catalogue:
        """Load the model, then the index it must match (IndexMismatchError otherwise), then warm up.

        Without a ``threshold`` override, a re-ranking index decides on its fitted match-probability threshold
        and a global one (or any, with ``rerank`` false) on the cosine threshold stored with it.
        """
        embedder = load_embedder(artifacts)
        index = GalleryIndex.load(index_dir, expected_model_fingerprint=embedder.fingerprint,
                                  expected_dim=embedder.dim)
        searcher = CatalogueSearch(index, Path(index_dir), threshold, rerank=rerank)
        w, h = embedder.image_size
        embedder.embed_pixels(np.zeros((1, h, w, 3), np.uint8))  # first call traces the graph: pay it now
        searcher.warm_up()
        return cls(embedder, searcher, max_pixels)

    @property
    def threshold(self) -> float | None:
        """On the match probability when re-ranking, else on the cosine."""
        return self.searcher.threshold

    @property
    def encounter_threshold(self) -> float | None:
        """The same for the most confident of several photos of one encounter."""
        return self.searcher.encounter_threshold

    @property
    def score_kind(self) -> str:
        """What the decision's score and threshold measure."""
        return self.searcher.score_kind

    @property
    def backend(self) -> str:
        return str(getattr(self.embedder, "backend", type(self.embedder).__name__))

    # ------------------------------------------------------------------------------------- queries

    def embed(self, upload: Upload) -> np.ndarray:
        """One photo → a unit vector; UploadError (400/413/415) for anything that is not a usable photo."""
        return self._embed_many([upload])[0]

    def _embed_many(self, uploads: list[Upload]) -> np.ndarray:
        return self.embedder.embed_pixels(np.stack([self._decode(u)[1] for u in uploads]))

    def _decode(self, upload: Upload) -> tuple[ImageInfo, np.ndarray]:
        """Header check first (cheap, precise status), then the full decode, which catches truncated files."""
        info = inspect_image(upload.data, self.max_pixels, upload.name)
        try:
            return info, load_image(upload.data, self.embedder.image_size, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise UploadError(400, f"{upload.name}: cannot decode the image, is the file complete? ({exc})") from exc

    def search(self, query: np.ndarray, k: int, image: bytes) -> list[Hit]:
        """Top-``k`` gallery images, re-ordered by local matching when the index carries a fitted fusion."""
        return self.searcher.search(query, k, image)

    def predict(self, query: np.ndarray, topk: int, image: bytes) -> Identification:
        """Which individual: the catalogue search's verdict on the uploaded photo."""
        return self.searcher.identify(query, image, topk)

    def predict_encounter(self, uploads: list[Upload], topk: int) -> EncounterIdentification:
        """Which individual, from several photos of one encounter identified together."""
        return self.searcher.identify_encounter(self._embed_many(uploads), [u.data for u in uploads], topk)

    # ------------------------------------------------------------------------------------- enrolment

    def enroll(self, identity: str, uploads: list[Upload], day: str | None = None) -> Enrolment:
        """Validate every photo first (all or nothing), store them, then commit them to the index."""
        identity = validate_identity(identity)
        day = validate_date(day)
        if not uploads:
            raise UploadError(400, "no image uploaded")
        decoded = [self._decode(u) for u in uploads]
        vectors = self.embedder.embed_pixels(np.stack([pixels for _, pixels in decoded]))
        with self.write_lock:
            new_identity = identity not in self.index.identities()
            stored: list[tuple[Path, str]] = []
            try:
                for upload, (info, _) in zip(uploads, decoded, strict=True):
                    stored.append(self._store(identity, upload, info.format))
                rows = [{"path": rel, "identity": identity, "date": day or image_date(path)} for path, rel in stored]
                ids = self.index.add(self.index_dir, vectors, rows, lock_timeout=ENROL_LOCK_TIMEOUT)
            except IndexLockedError as exc:
                _remove([p for p, _ in stored])
                raise UploadError(503, str(exc)) from exc
            except BaseException:
                _remove([p for p, _ in stored])
                raise
        log.info("enrolled %d image(s) of %s%s", len(ids), identity, " (new identity)" if new_identity else "")
        return Enrolment(identity, new_identity, ids)

    def _store(self, identity: str, upload: Upload, fmt: str) -> tuple[Path, str]:
        """Write one upload under ``enrolled/`` (see the module docstring); returns (file, meta path)."""
        folder = self.index_dir / ENROLLED_DIR / safe_folder(identity)
        folder.mkdir(parents=True, exist_ok=True)
        ext = FORMAT_EXTENSIONS.get(fmt)
        data = upload.data
        if ext is None:  # e.g. TIFF: keep a format every tool lists as an image
            buf = io.BytesIO()
            open_image(upload.data, max_pixels=self.max_pixels).save(buf, format="PNG")
            data, ext = buf.getvalue(), ".png"
        path = folder / f"{uuid.uuid4().hex}{ext}"
        with open(path, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            rel = Path(os.path.relpath(path, self.data_root)).as_posix()
        except ValueError as exc:  # Windows: index and data root on different drives
            path.unlink(missing_ok=True)
            raise RuntimeError(
                f"cannot enrol: the index dir {self.index_dir} and the data root {self.data_root} are on "
                "different drives, so the photo's path cannot be stored relative to the data root"
            ) from exc
        return path, rel

    # ------------------------------------------------------------------------------------- thumbnails

    def image_file(self, image_id: str) -> Path:
        """The file of a catalogued image, by id only; 404 unless it exists inside the data root or index dir."""
        try:
            row = self.index.row(image_id)
        except KeyError:
            raise UploadError(404, f"no catalogued image with id {image_id!r}") from None
        path = (self.data_root / row.path).resolve()
        if not (path.is_relative_to(self.data_root) or path.is_relative_to(self.index_dir)):
            log.warning("refusing image %s: %s lies outside the data root and index dir", image_id, path)
            raise UploadError(404, f"image {image_id!r} is not available")
        if not path.is_file():
            raise UploadError(404, f"image {image_id!r} is catalogued but its file is missing")
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
            raise UploadError(404, f"image {image_id!r} cannot be read ({exc})") from exc
        img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85, optimize=True)
        data = buf.getvalue()
        with self._thumbs_lock:
            self._thumbs[image_id] = data
            while len(self._thumbs) > THUMBNAIL_CACHE:
                self._thumbs.popitem(last=False)
        return data


# ----------------------------------------------------------------------------------------------- helpers


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_folder(identity: str) -> str:
    """A folder name that cannot escape ``enrolled/`` on any OS: ASCII letters, digits, ``._-`` only."""
    ascii_name = unicodedata.normalize("NFKD", identity).encode("ascii", "ignore").decode()
    name = _UNSAFE.sub("_", ascii_name).strip("._-")[:80]
    return name or "id"


def validate_identity(identity: str | None) -> str:
    name = (identity or "").strip()
    if not name:
        raise UploadError(400, "identity is empty: choose an existing individual or type a new name")
    if len(name) > MAX_IDENTITY_LENGTH:
        raise UploadError(400, f"identity is longer than {MAX_IDENTITY_LENGTH} characters")
    if any(unicodedata.category(c).startswith("C") for c in name) or "/" in name or "\\" in name:
        raise UploadError(400, "identity may not contain slashes or control characters")
    return name


def validate_date(day: str | None) -> str | None:
    if day is None or not day.strip():
        return None
    try:
        return _date.fromisoformat(day.strip()).isoformat()
    except ValueError:
        raise UploadError(400, f"date must be YYYY-MM-DD, got {day!r}") from None


def _remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


class Timer:
    """Milliseconds since creation, for the ``elapsed_ms`` every answer carries."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    @property
    def ms(self) -> float:
        return round((time.perf_counter() - self._t0) * 1000, 2)
