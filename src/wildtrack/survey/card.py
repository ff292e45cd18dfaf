"""What is on the card: every image file under PHOTOS, its bytes' sha256, whether it decodes, and when it was taken.

Nothing is dropped silently: a file that cannot be decoded is listed ``unreadable`` with the reason, and a file
whose bytes repeat an earlier one (in sorted path order) is listed ``duplicate`` of it, so a person can see
what the run did with every file the camera wrote. The capture time is the photo's EXIF ``DateTimeOriginal``
(tag 36867, in the Exif IFD 0x8769), which a camera writes once; where a photo has none (a phone export, a
screenshot) the file's modification time stands in, and ``time_source`` says which. Both are local, naive
times: the grouping compares them with each other only.

The one decode a photo gets here (reduced, JPEG draft) also writes its thumbnail for the review page.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from wildtrack.atomic import atomic_write_bytes
from wildtrack.images import ImageError, exif_capture_time, is_image_name, open_image
from wildtrack.progress import Advance, announce_total

__all__ = ["DUPLICATE", "NO_TURTLE", "OK", "STATUSES", "THUMB_SIDE", "UNREADABLE", "CardPhoto", "capture_time",
           "card_files", "scan_card"]

OK, UNREADABLE, DUPLICATE, NO_TURTLE = "ok", "unreadable", "duplicate", "no_turtle"
STATUSES = (OK, UNREADABLE, DUPLICATE, NO_TURTLE)
THUMB_SIDE = 320


@dataclass
class CardPhoto:
    """One file found under PHOTOS. ``photo`` is its path relative to PHOTOS (POSIX); ``taken`` ISO seconds."""

    photo: str
    sha256: str
    status: str = OK
    reason: str | None = None
    duplicate_of: str | None = None
    taken: str | None = None
    time_source: str | None = None
    thumb: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CardPhoto:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def card_files(root: Path) -> list[str]:
    """Image files under ``root`` (by extension, recursively, hidden folders such as a survey's ``.work``
    skipped), as sorted POSIX paths relative to it."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if is_image_name(name) and not name.startswith("."):
                found.append(Path(folder, name).relative_to(root).as_posix())
    return sorted(found)


def capture_time(img: Image.Image | None, path: Path) -> tuple[str, str]:
    """(ISO time, ``exif`` | ``file``): EXIF DateTimeOriginal when the photo has a valid one, else its mtime."""
    if img is not None:
        try:
            value = exif_capture_time(img)
            if value is not None:
                return datetime.strptime(value.strip().strip("\0")[:19], "%Y:%m:%d %H:%M:%S").isoformat(), "exif"
        except (ValueError, TypeError, KeyError, OSError, SyntaxError):
            pass  # a broken EXIF block: the file time is the next best thing
    return datetime.fromtimestamp(int(path.stat().st_mtime)).isoformat(), "file"


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _thumb_bytes(img: Image.Image) -> bytes:
    small = img.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.convert("RGB").save(buf, format="JPEG", quality=82)
    return buf.getvalue()


def _examine(path: Path) -> tuple[Image.Image | None, Image.Image | None, str | None]:
    """(the file opened for its metadata, its decoded reduced pixels, why it cannot be decoded)."""
    try:
        meta = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, None, f"cannot be opened as an image ({type(exc).__name__}: {exc})"
    try:
        pixels = open_image(path, max_side=THUMB_SIDE)
    except (ImageError, OSError, SyntaxError, ValueError) as exc:
        meta.close()
        return None, None, f"cannot be decoded ({exc})"
    return meta, pixels, None


def scan_card(root: str | Path, thumbs_dir: Path | None = None, progress: Advance | None = None) -> list[CardPhoto]:
    """Every image file under ``root``, in sorted path order, with its status, time and thumbnail (written to
    ``thumbs_dir`` as ``<sha256[:16]>.jpg`` when given)."""
    root = Path(root)
    names = card_files(root)
    announce_total(progress, len(names))
    if thumbs_dir is not None:
        thumbs_dir.mkdir(parents=True, exist_ok=True)
    first_of: dict[str, CardPhoto] = {}
    out: list[CardPhoto] = []
    for name in names:
        path = root / name
        digest = _digest(path)
        photo = CardPhoto(name, digest)
        if digest in first_of:
            first = first_of[digest]
            photo.status, photo.duplicate_of, photo.reason = DUPLICATE, first.photo, f"the same bytes as {first.photo}"
            photo.taken, photo.time_source, photo.thumb = first.taken, first.time_source, first.thumb
        else:
            first_of[digest] = photo
            meta, pixels, why = _examine(path)
            if why is not None:
                photo.status, photo.reason = UNREADABLE, why
            photo.taken, photo.time_source = capture_time(meta, path)
            if meta is not None:
                meta.close()
            if pixels is not None and thumbs_dir is not None:
                thumb = f"{thumbs_dir.name}/{digest[:16]}.jpg"
                atomic_write_bytes(thumbs_dir.parent / thumb, _thumb_bytes(pixels))
                photo.thumb = thumb
        out.append(photo)
        if progress:
            progress(1)
    return out
