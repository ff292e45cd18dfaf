"""Enrolled photos on disk: named by content, staged before the index commit, recovered after a crash.

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
left in ``enrolled/`` by older versions, which wrote photos in place before committing. It never follows a
symbolic link and deletes only files it could have written (content-hash names, in real folders under the
index), each named in the log: a link planted in ``enrolled/`` cannot turn it against other files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from wildtrack.config import ENROLLED_DIR
from wildtrack.index import GalleryIndex, IndexLockedError, writer_lock
from wildtrack.serve.reload import committed_generation

log = logging.getLogger(__name__)

STAGING_DIR = ".staging"
RECOVERY_LOCK_TIMEOUT = 10.0


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
    """Finish or undo enrolments interrupted by a crash (see the module docstring); logs what it did."""
    enrolled = index_dir / ENROLLED_DIR
    if not enrolled.is_dir():
        return Recovery(0, 0)
    try:
        with writer_lock(index_dir, RECOVERY_LOCK_TIMEOUT):
            if committed_generation(index_dir)[1] != index.generation:  # committed since it was loaded
                index = GalleryIndex.load(index_dir, verify=False)
            referenced = {r.path for r in index.rows}
            result = _recover(enrolled, data_root, referenced)
    except IndexLockedError:
        log.warning("another process is writing %s: left interrupted enrolments for the next start", index_dir)
        return Recovery(0, 0)
    if result.moved_in or result.removed:
        log.warning("enrolment recovery in %s: %d committed photo(s) moved into place, %d orphan file(s) removed",
                    enrolled, result.moved_in, result.removed)
    return result


def _recover(enrolled: Path, data_root: Path, referenced: set[str]) -> Recovery:
    """Walk ``enrolled/`` without following a symlink anywhere; move in or delete only our own content-named files.

    ``enrolled/`` itself may be a link to a bigger disk: committed photos are still moved into place there, but
    nothing is deleted through a link (it may lead to files this server never wrote).
    """
    moved = removed = 0
    staging = enrolled / STAGING_DIR
    may_delete = not enrolled.is_symlink()
    if not may_delete:
        log.warning("enrolment recovery: %s is a symbolic link, so no file is deleted through it", enrolled)

    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, data_root)).as_posix()

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
                if rel(final) in referenced and not os.path.lexists(final) and not _linked_below(enrolled, final):
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staged, final)
                    moved += 1
                    log.warning("enrolment recovery: moved committed photo %s into place", final)
                else:
                    remove(staged, "staged by an enrolment that never committed")
            _remove_empty_dirs(pid_dir)
    for path in _own_files(enrolled, skip=STAGING_DIR):
        if rel(path) not in referenced:
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
