"""A survey upload (one zip of the card, or its photos) written out as a folder of photos, checked before any
byte is extracted.

A zip is a promise about its contents that the upload's size does not bound: a few kilobytes can declare
gigabytes (a zip bomb), and a member named ``../../index/meta.csv`` or ``/etc/cron.d/x`` would be written
outside the folder by a naive extraction. So the central directory is read first and the whole upload refused
(413 or 400, naming the problem) when it holds too many files, declares too many bytes, or names a path that is
absolute, climbs out (``..``), is a link or is encrypted; only then are the photos copied out, each one stopped
at its declared size. Members that are not photos (notes, ``.DS_Store``, macOS ``__MACOSX`` forks) are left in the
zip and listed, never silently dropped. Sub-folders are kept (a card organised by sighting is grouped by them),
except the folder(s) that hold everything (``card/`` when the card's folder itself was zipped).
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from wildtrack.images import is_image_name
from wildtrack.serve.uploads import UploadError

__all__ = ["CardLimits", "Unpacked", "is_zip", "save_photos", "unpack_zip"]

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first bytes (an empty zip starts with its end record)
CHUNK = 1 << 20
MAX_NAME = 255  # bytes in one path component on common file systems
EXTRA_ENTRIES = 4  # a zip may hold this many entries per allowed photo (folders, notes) before it is refused


@dataclass(frozen=True)
class CardLimits:
    max_files: int
    max_unpacked_bytes: int


@dataclass
class Unpacked:
    """What was written under the photos folder (relative posix paths), and what was left out and why."""

    photos: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    bytes: int = 0


def is_zip(name: str, head: bytes) -> bool:
    return name.lower().endswith(".zip") or head[:4] in ZIP_MAGIC


def unpack_zip(fileobj: BinaryIO, dest: Path, limits: CardLimits) -> Unpacked:
    """Extract the photos of the zip ``fileobj`` into the new folder ``dest``; UploadError (nothing written) when
    the zip cannot be trusted or exceeds ``limits``."""
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadError(400, f"the upload is not a readable zip file ({exc}); zip the card's folder again, or send "
                          "the photos themselves") from exc
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        if len(entries) > EXTRA_ENTRIES * limits.max_files:
            raise UploadError(413, f"the zip holds {len(entries):,} files; a survey takes at most "
                              f"{limits.max_files:,} photos")
        out = Unpacked()
        planned: dict[str, zipfile.ZipInfo] = {}
        for info in entries:
            rel = _member_path(info)
            if rel is None or not is_image_name(rel.name):
                out.ignored.append(info.filename)
                continue
            key = rel.as_posix()
            if key.lower() in {k.lower() for k in planned}:
                raise UploadError(400, f"the zip holds {key!r} twice (or two names differing only in letter case); "
                                  "rename one and zip the card again")
            planned[key] = info
        if len(planned) > limits.max_files:
            raise UploadError(413, f"the zip holds {len(planned):,} photos; a survey takes at most "
                              f"{limits.max_files:,}: split the card into several surveys")
        declared = sum(info.file_size for info in planned.values())
        if declared > limits.max_unpacked_bytes:
            raise UploadError(413, f"the zip's photos unpack to {declared:,} bytes, more than this server's limit of "
                              f"{limits.max_unpacked_bytes:,} (a zip bomb, or a card to split into several surveys)")
        if not planned:
            raise UploadError(400, _no_photos(out.ignored))
        wrapper = _wrapper(list(planned))
        dest.mkdir(parents=True, exist_ok=False)
        for key, info in sorted(planned.items()):
            key = key[len(wrapper):]
            target = dest.joinpath(*PurePosixPath(key).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(target, "xb") as dst:
                    out.bytes += _copy(src, dst, info.file_size, key)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError) as exc:
                raise UploadError(400, f"{key} cannot be extracted from the zip ({exc}); is the zip complete?") from exc
            out.photos.append(key)
    return out


def save_photos(files: Iterable[tuple[str, BinaryIO]], dest: Path, limits: CardLimits) -> Unpacked:
    """Write uploaded photos (client name, content) into the new folder ``dest`` under their base names (a name
    seen twice gets ``-2``, ``-3``…); other files are listed in ``ignored``."""
    files = list(files)
    out = Unpacked()
    chosen: list[tuple[str, BinaryIO]] = []
    taken: set[str] = set()
    for name, fileobj in files:
        base = _base_name(name)
        if base is None or not is_image_name(base):
            out.ignored.append(name)
            continue
        stem, suffix = base.rsplit(".", 1)
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{stem}-{n}.{suffix}"
        taken.add(candidate.lower())
        chosen.append((candidate, fileobj))
    if len(chosen) > limits.max_files:
        raise UploadError(413, f"{len(chosen):,} photos sent; a survey takes at most {limits.max_files:,}: split the "
                          "card into several surveys")
    if not chosen:
        raise UploadError(400, _no_photos(out.ignored))
    dest.mkdir(parents=True, exist_ok=False)
    for name, fileobj in chosen:
        fileobj.seek(0)
        with open(dest / name, "xb") as dst:
            shutil.copyfileobj(fileobj, dst, CHUNK)
            out.bytes += dst.tell()
        out.photos.append(name)
    return out


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's path inside the folder; None for a member to leave out (hidden files, macOS forks).
    UploadError for one that could only be written outside it, or not as a plain file."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise UploadError(400, f"{name!r} in the zip is encrypted: zip the card without a password")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadError(400, f"{name!r} in the zip is a symbolic link: refused (zip the photos themselves)")
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    parts = path.parts
    if (posix.startswith("/") or not parts or any(p in ("..", ".") for p in posix.split("/"))
            or ":" in parts[0] or "\x00" in posix):
        raise UploadError(400, f"{name!r} in the zip points outside the card's folder: refused (zip the folder "
                          "from inside it)")
    if any(len(p.encode()) > MAX_NAME for p in parts):
        raise UploadError(400, f"{name!r} in the zip has a name longer than {MAX_NAME} bytes")
    if parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return None
    return path


def _wrapper(keys: list[str]) -> str:
    """The one folder every photo lies in (``card/`` when the card's folder was zipped), with its slash, or "".

    It is how the zip was made, not how the card is organised: kept, it would make the whole card one sub-folder,
    and a card organised by sub-folders is grouped by them."""
    first = {PurePosixPath(k).parts[0] if len(PurePosixPath(k).parts) > 1 else "" for k in keys}
    if len(first) != 1 or "" in first:
        return ""
    top = first.pop()
    return top + "/" + _wrapper([k[len(top) + 1:] for k in keys]) if top else ""


def _base_name(name: str) -> str | None:
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base.startswith(".") or "\x00" in base or len(base.encode()) > MAX_NAME or "." not in base:
        return None
    return base


def _copy(src: BinaryIO, dst: BinaryIO, limit: int, key: str) -> int:
    """Copy at most the member's declared size (zipfile stops there too; this does not rely on it)."""
    written = 0
    while chunk := src.read(CHUNK):
        written += len(chunk)
        if written > limit:
            raise UploadError(400, f"{key} unpacks to more bytes than the zip declares: refused")
        dst.write(chunk)
    return written


def _no_photos(ignored: list[str]) -> str:
    seen = f" (it holds {', '.join(ignored[:3])}{'…' if len(ignored) > 3 else ''})" if ignored else ""
    return ("the upload holds no photos" + seen + ": send a zip of the card, or the photos themselves (JPEG, PNG, "
            "WebP, BMP)")
