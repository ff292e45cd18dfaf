"""Enrolling photos into a catalogue: named by content, staged before ONE index commit, recovered after a crash.

The service's ``POST /enroll`` and ``wildtrack survey apply`` both enrol through :func:`enrol_batches` (one
identity: :func:`enrol_photos`), so a photo lands in the catalogue the same way, with the same checks on the
identity's name and the same crash safety, whichever way it came.

A photo of identity ``I`` is stored as ``<index_dir>/enrolled/<safe_folder(I)>/<sha256(I, bytes)[:32]><ext>``.
The name depends only on the identity and the bytes, so the same photo enrolled twice for one identity maps to
the same catalogue row (its image id is the hash of that path): a client retrying after a dropped connection
gets "already there" instead of a duplicate.

The write order makes a crash at any point recoverable:

1. the photo is written and fsynced under ``enrolled/.staging/<pid>/...`` (invisible to the index);
2. the index commits rows that name the *final* paths;
3. each staged file is renamed into its final place.

Killed before 2, the staged files are orphans; killed between 2 and 3, the index names files still staged.
At start-up, :func:`recover_enrolments` (holding the index's writer lock) moves in every staged file the index
names and deletes the rest, skipping folders of processes still running. It also deletes unreferenced files
left in ``enrolled/`` by older versions, which wrote photos in place before committing. A file counts as named
when a row names the same path *below* an ``enrolled/`` folder (identity folder and content name), wherever that
folder lies: the rows of a copied or moved index still name the original's ``enrolled/`` relative to the data
root, and the copy's files are the same photos, not orphans. It never follows a
symbolic link and deletes only files it could have written (content-hash names, in real folders under the
index), each named in the log: a link planted in ``enrolled/`` cannot turn it against other files.

Several identities enrolled together (a survey's accepted encounters) go into the same single commit: either all
of their photos are in the catalogue afterwards or, killed before the commit, none is."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.config import ENROLLED_DIR
from wildtrack.data import names
from wildtrack.features.store import StoreFeatureCache, open_store
from wildtrack.images import image_date, open_image
from wildtrack.index import GalleryIndex, IndexLockedError, committed_generation, image_id_for, writer_lock
from wildtrack.jobs import Engine, LocalEngine
from wildtrack.jobs.catalogue import extract_shards, store_files
from wildtrack.progress import Advance
from wildtrack.search import CatalogueSearch

log = logging.getLogger(__name__)

STAGING_DIR = ".staging"
RECOVERY_LOCK_TIMEOUT = 10.0
ENROL_LOCK_TIMEOUT = 10.0  # seconds to wait for another writer (e.g. a CLI `index add`) before giving up
DEFAULT_MAX_PIXELS = 60_000_000  # a photo with more pixels is not decoded (a pixel bomb, not a camera's photo)
MAX_IDENTITY_LENGTH = 100
# Where an accepted photo is stored: the original bytes keep their format's usual extension; a format outside
# this map (e.g. TIFF) is re-encoded as PNG, a format every tool lists as an image.
FORMAT_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


class EnrolmentError(ValueError):
    """An enrolment refused before anything was written; the message says what to do instead."""


class InvalidIdentityError(EnrolmentError):
    """The identity is not a usable name (empty, too long, slashes, characters that show nothing)."""


class LookAlikeIdentityError(EnrolmentError):
    """A new identity drawn like a catalogued one (case, look-alike letters of another script)."""

    def __init__(self, message: str, identity: str, catalogued: str) -> None:
        super().__init__(message)
        self.identity = identity
        self.catalogued = catalogued


class CatalogueBusyError(EnrolmentError):
    """Another process held the catalogue's writer lock for longer than the enrolment would wait."""


@dataclass(frozen=True)
class EnrolPhoto:
    """One photo to enrol: its bytes as they will be stored, their decoded format (Pillow's name, e.g. ``JPEG``),
    its embedding (a unit vector of the catalogue's model) and its date (``YYYY-MM-DD``; None: read from EXIF)."""

    data: bytes
    fmt: str
    vector: np.ndarray
    day: str | None = None


@dataclass(frozen=True)
class EnrolResult:
    """What one identity's enrolment did: the photos added (image ids) and those the catalogue already had."""

    identity: str  # as stored: NFKC, or the catalogued identity it normalises to
    new_identity: bool  # the catalogue had no photo of it before this commit (and now has)
    image_ids: list[str]
    already_enrolled: list[str] = field(default_factory=list)
    photo_ids: list[str] = field(default_factory=list)  # each given photo's image id, in the order given


@dataclass(frozen=True)
class PlannedPhoto:
    """Where one upload will live: its staging file, final file and meta.csv path (relative to the data root)."""

    staged: Path
    final: Path
    rel: str


@dataclass(frozen=True)
class Recovery:
    moved_in: int
    removed: int


def content_name(identity: str, data: bytes) -> str:
    """The stored file's stem: the same photo for the same identity always gets the same name."""
    return hashlib.sha256(identity.encode("utf-8") + b"\0" + data).hexdigest()[:32]


def plan_photo(index_dir: Path, data_root: Path, folder: str, stem: str, ext: str) -> PlannedPhoto:
    final = index_dir / ENROLLED_DIR / folder / f"{stem}{ext}"
    staged = index_dir / ENROLLED_DIR / STAGING_DIR / str(os.getpid()) / folder / f"{stem}{ext}"
    try:
        rel = Path(os.path.relpath(final, data_root)).as_posix()
    except ValueError as exc:  # Windows: index and data root on different drives
        raise RuntimeError(
            f"cannot enrol: the index dir {index_dir} and the data root {data_root} are on different drives, so "
            "the photo's path cannot be stored relative to the data root"
        ) from exc
    return PlannedPhoto(staged, final, rel)


def stage(photo: PlannedPhoto, data: bytes) -> None:
    photo.staged.parent.mkdir(parents=True, exist_ok=True)
    with open(photo.staged, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def publish(photos: list[PlannedPhoto]) -> None:
    """Step 3: rename the committed photos into place."""
    for p in photos:
        p.final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p.staged, p.final)


def discard(photos: list[PlannedPhoto]) -> None:
    for p in photos:
        p.staged.unlink(missing_ok=True)


def recover_enrolments(index_dir: Path, data_root: Path, index: GalleryIndex) -> Recovery:
    """Finish or undo enrolments interrupted by a crash (see the module docstring); logs what it did.

    ``data_root`` is not used to decide: rows are matched by their path below ``enrolled/`` (:func:`enrolled_key`),
    which holds for a copied or moved index too; the parameter stays for the callers' sake."""
    enrolled = index_dir / ENROLLED_DIR
    if not enrolled.is_dir():
        return Recovery(0, 0)
    try:
        with writer_lock(index_dir, RECOVERY_LOCK_TIMEOUT):
            if committed_generation(index_dir)[1] != index.generation:  # committed since it was loaded
                index = GalleryIndex.load(index_dir, verify=False)
            referenced = {key for key in (enrolled_key(r.path) for r in index.rows) if key is not None}
            result = _recover(enrolled, referenced)
    except IndexLockedError:
        log.warning("another process is writing %s: left interrupted enrolments for the next start", index_dir)
        return Recovery(0, 0)
    if result.moved_in or result.removed:
        log.warning("enrolment recovery in %s: %d committed photo(s) moved into place, %d orphan file(s) removed",
                    enrolled, result.moved_in, result.removed)
    return result


def enrolled_key(path: str) -> str | None:
    """What a row's path names below its last ``enrolled/`` component (``t001/<32 hex>.jpg``); None when the path
    is not under an ``enrolled/`` folder (a photo of the data set)."""
    parts = Path(path).as_posix().split("/")
    below = max((i for i, part in enumerate(parts) if part == ENROLLED_DIR), default=None)
    if below is None or below == len(parts) - 1:
        return None
    return "/".join(parts[below + 1:])


def _recover(enrolled: Path, referenced: set[str]) -> Recovery:
    """Walk ``enrolled/`` without following a symlink anywhere; move in or delete only our own content-named files.

    ``referenced``: the rows' paths below ``enrolled/`` (:func:`enrolled_key`), so the index may have been copied
    or moved away from the folder its rows were written in.

    ``enrolled/`` itself may be a link to a bigger disk: committed photos are still moved into place there, but
    nothing is deleted through a link (it may lead to files this server never wrote).
    """
    moved = removed = 0
    staging = enrolled / STAGING_DIR
    may_delete = not enrolled.is_symlink()
    if not may_delete:
        log.warning("enrolment recovery: %s is a symbolic link, so no file is deleted through it", enrolled)

    def key(path: Path) -> str:
        return path.relative_to(enrolled).as_posix()

    def remove(path: Path, why: str) -> None:
        nonlocal removed
        if not may_delete:
            log.warning("enrolment recovery: left %s (%s)", path, why)
            return
        path.unlink()
        removed += 1
        log.warning("enrolment recovery: removed %s (%s)", path, why)

    if staging.is_symlink():
        log.warning("enrolment recovery: %s is a symbolic link, not ours: left alone", staging)
    elif staging.is_dir():
        for pid_dir in sorted(staging.iterdir()):
            if pid_dir.is_symlink() or not pid_dir.is_dir():
                log.warning("enrolment recovery: %s is not a folder this server made: left alone", pid_dir)
                continue
            if _running_elsewhere(pid_dir.name):
                continue
            for staged in _own_files(pid_dir):
                final = enrolled / staged.relative_to(pid_dir)
                if key(final) in referenced and not os.path.lexists(final) and not _linked_below(enrolled, final):
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staged, final)
                    moved += 1
                    log.warning("enrolment recovery: moved committed photo %s into place", final)
                else:
                    remove(staged, "staged by an enrolment that never committed")
            _remove_empty_dirs(pid_dir)
    for path in _own_files(enrolled, skip=STAGING_DIR):
        if key(path) not in referenced:
            remove(path, "a photo no catalogue row names")
    return Recovery(moved, removed)


_OWN_NAME = re.compile(r"[0-9a-f]{32}\.(?:jpg|png|webp|bmp)")


def _own_files(top: Path, skip: str | None = None) -> list[Path]:
    """Regular files under ``top`` named as :func:`content_name` names them, in real folders (links not followed)."""
    found = []
    for folder, dirs, files in os.walk(top, followlinks=False):
        if skip is not None and Path(folder) == top:
            dirs[:] = [d for d in dirs if d != skip]
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            path = Path(folder) / name
            if _OWN_NAME.fullmatch(name) and not path.is_symlink() and path.is_file():
                found.append(path)
    return sorted(found)


def _linked_below(top: Path, path: Path) -> bool:
    """True when a folder between ``top`` and ``path`` is a symbolic link."""
    p = path.parent
    while p != top and top in p.parents:
        if p.is_symlink():
            return True
        p = p.parent
    return False


def _remove_empty_dirs(top: Path) -> None:
    for folder, _dirs, _files in sorted(os.walk(top, followlinks=False), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):  # not empty: something that is not ours stays, and so does its folder
            os.rmdir(folder)


def _running_elsewhere(name: str) -> bool:
    """True when the folder belongs to another live process (its enrolment may be in flight)."""
    try:
        pid = int(name)
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def canonical_identity(name: str, catalogued: dict[str, int]) -> str:
    """NFKC form of ``name``, or the catalogued identity it normalises to (``ｔ００１`` is ``t001``)."""
    name = unicodedata.normalize("NFKC", name).strip()
    if name in catalogued:
        return name
    for existing in catalogued:
        if unicodedata.normalize("NFKC", existing).strip() == name:
            return existing
    return name


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_folder(identity: str) -> str:
    """A folder name that cannot escape ``enrolled/`` on any OS: ASCII letters, digits, ``._-`` only."""
    ascii_name = unicodedata.normalize("NFKD", identity).encode("ascii", "ignore").decode()
    name = _UNSAFE.sub("_", ascii_name).strip("._-")[:80]
    return name or "id"


def validate_identity(identity: str | None) -> str:
    """The identity as stored: NFKC-normalised (full-width ``ｔ００１`` is ``t001``); InvalidIdentityError when
    unusable."""
    name = unicodedata.normalize("NFKC", identity or "").strip()
    if not name:
        raise InvalidIdentityError("identity is empty: choose an existing individual or type a new name")
    if len(name) > MAX_IDENTITY_LENGTH:
        raise InvalidIdentityError(f"identity is longer than {MAX_IDENTITY_LENGTH} characters")
    if "/" in name or "\\" in name:
        raise InvalidIdentityError("identity may not contain slashes")
    invisible = names.invisible_characters(name)
    if invisible:
        raise InvalidIdentityError(f"identity contains characters that show nothing ({', '.join(invisible[:3])}): "
                                   "two names would look the same; type it again with letters, digits and plain "
                                   "spaces")
    if not name.strip("."):
        raise InvalidIdentityError(f"identity {name!r} is not a name: use letters or digits")
    return name


def enrol_photos(searcher: CatalogueSearch, identity: str, photos: Sequence[EnrolPhoto], *,
                 lock_timeout: float = ENROL_LOCK_TIMEOUT, max_pixels: int = DEFAULT_MAX_PIXELS,
                 engine: Engine | None = None, progress: Advance | None = None) -> EnrolResult:
    """Enrol ``photos`` under one ``identity``: :func:`enrol_batches` with one batch."""
    return enrol_batches(searcher, {identity: photos}, lock_timeout=lock_timeout, max_pixels=max_pixels,
                         engine=engine, progress=progress)[identity]


def enrol_batches(searcher: CatalogueSearch, batches: Mapping[str, Sequence[EnrolPhoto]], *,
                  lock_timeout: float = ENROL_LOCK_TIMEOUT, max_pixels: int = DEFAULT_MAX_PIXELS,
                  engine: Engine | None = None, progress: Advance | None = None,
                  before_commit: Callable[[list[str]], None] | None = None) -> dict[str, EnrolResult]:
    """Enrol each identity's photos into ``searcher``'s catalogue in ONE index commit; results by the given names.

    Every name is checked before anything is written (all or nothing): :func:`validate_identity`, then the name
    is taken as the catalogued identity it normalises to (:func:`canonical_identity`), and a new name drawn like
    a catalogued one, or like another new name of this call, is refused (:class:`LookAlikeIdentityError`). A photo
    this identity already has (same bytes) is not added again but listed in ``already_enrolled``, so enrolling
    the same photos twice adds nothing. The photos are staged, their local features extracted (a re-ranking
    catalogue grows its feature store in the same commit), the index commits, the photos move into place and the
    searcher reads the grown store. Another writer holding the catalogue longer than ``lock_timeout`` seconds:
    :class:`CatalogueBusyError`, nothing written. The caller serialises enrolments through one searcher (the
    service holds its write lock). ``engine`` runs the feature extraction (default: here, :class:`LocalEngine`);
    ``progress`` counts its photos. ``before_commit`` is called with the image ids about to be added, before
    anything is written (``survey apply`` records them, to recognise its own commit after a crash); not called
    when there is nothing to add.
    """
    index = searcher.index
    catalogued = index.identities()
    stored: dict[str, str] = {}
    for given, photos in batches.items():
        identity = canonical_identity(validate_identity(given), catalogued)
        if not photos:
            raise EnrolmentError(f"no photo to enrol under {identity!r}")
        similar = names.drawn_alike(identity, catalogued) if identity not in catalogued else None
        if similar is None and identity not in catalogued:  # two new names of this call that look the same
            similar = names.drawn_alike(identity, {s: 0 for s in stored.values() if s not in catalogued})
        if similar is not None:
            what = ("the catalogued individual" if similar in catalogued
                    else "the new individual enrolled with it,")
            raise LookAlikeIdentityError(
                f"{identity!r} looks like {what} {similar!r} (they differ only in letter case or in look-alike "
                "letters of another script): enrol under that name, or choose a clearly different one",
                identity, similar)
        stored[given] = identity
    planned: dict[str, tuple[PlannedPhoto, bytes, EnrolPhoto, str]] = {}  # image id -> photo, bytes, row, identity
    owners: dict[str, list[str]] = {given: [] for given in batches}  # given name -> its photos' image ids
    for given, photos in batches.items():
        identity = stored[given]
        for photo in photos:
            plan, data = _plan(searcher, identity, photo, max_pixels)
            image_id = image_id_for(plan.rel)
            owners[given].append(image_id)
            if image_id not in index and image_id not in planned:
                planned[image_id] = (plan, data, photo, identity)
    if planned and before_commit is not None:
        before_commit(list(planned))
    added = set(_commit(searcher, list(planned.values()), lock_timeout, engine, progress)) if planned else set()
    results = {}
    for given, photo_ids in owners.items():
        ids = list(dict.fromkeys(photo_ids))
        new = [i for i in ids if i in added]
        results[given] = EnrolResult(stored[given], stored[given] not in catalogued and bool(new), new,
                                     [i for i in ids if i not in added], photo_ids)
    return results


def _plan(searcher: CatalogueSearch, identity: str, photo: EnrolPhoto, max_pixels: int) -> tuple[PlannedPhoto, bytes]:
    """Where a photo goes and the bytes stored (original, or PNG for formats outside FORMAT_EXTENSIONS)."""
    ext = FORMAT_EXTENSIONS.get(photo.fmt)
    data = photo.data
    if ext is None:  # e.g. TIFF: keep a format every tool lists as an image
        buf = io.BytesIO()
        open_image(photo.data, max_pixels=max_pixels).save(buf, format="PNG")
        data, ext = buf.getvalue(), ".png"
    stem = content_name(identity, photo.data)
    return plan_photo(searcher.index_dir, searcher.data_root, safe_folder(identity), stem, ext), data


def _commit(searcher: CatalogueSearch, photos: list[tuple[PlannedPhoto, bytes, EnrolPhoto, str]],
            lock_timeout: float, engine: Engine | None, progress: Advance | None) -> list[str]:
    """Stage, commit (one generation), publish, refresh the searcher's feature store; returns the ids added."""
    staged = [plan for plan, _, _, _ in photos]
    index = searcher.index
    try:
        for plan, data, _, _ in photos:
            stage(plan, data)
        rows = [{"path": plan.rel, "identity": identity, "date": photo.day or image_date(plan.staged)}
                for plan, _, photo, identity in photos]
        vectors = np.stack([photo.vector for _, _, photo, _ in photos])
        # skip_existing: a second server (or a retry racing the first try) committed the same photo first
        ids = index.add(searcher.index_dir, vectors, rows, lock_timeout=lock_timeout, skip_existing=True,
                        shards=_grown_store(searcher, staged, engine, progress))
    except IndexLockedError as exc:
        discard(staged)
        log.warning("enrolment refused: %s", exc)
        raise CatalogueBusyError("another process is writing the catalogue (an enrolment or `wildtrack index "
                                 "add`)") from exc
    except BaseException:
        discard(staged)
        raise
    publish(staged)
    cache = searcher.pipeline.features if searcher.pipeline is not None else None
    if isinstance(cache, StoreFeatureCache):  # the store this commit grew: its photos are read from it
        cache.use_store(open_store(searcher.index_dir, index.shards))
    return ids


def _grown_store(searcher: CatalogueSearch, staged: list[PlannedPhoto], engine: Engine | None,
                 progress: Advance | None) -> Callable[[dict[str, dict[str, Any]]], dict[str, dict[str, Any]]] | None:
    """The staged photos' local features as feature-store shards, extracted now (as ``wildtrack index build``
    extracts them), and the function the index commit calls under its lock to list them beside the store it
    has on disk; None for a catalogue that does not re-rank."""
    pipeline = searcher.pipeline
    if pipeline is None:
        return None
    extractor = pipeline.extractor
    new = extract_shards(engine or LocalEngine(), extractor, [(image_id_for(p.rel), p.staged) for p in staged],
                         searcher.index_dir, progress)
    return lambda committed: store_files(searcher.index_dir, extractor, new, committed)
