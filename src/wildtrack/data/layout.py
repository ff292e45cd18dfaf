"""Reading a folder of photos into records, whatever layout the user has.

Two layouts exist in the field:

* ``plain``: ``ROOT/<identity>/<image>``, optionally with ``ROOT/metadata.csv`` (``file_name``, ``identity``,
  ``date``) for encounter dates; without it dates come from EXIF ``DateTimeOriginal``.
* ``seaturtleid2022``: the Kaggle layout, ``ROOT/images/<identity>/<image>`` listed by
  ``ROOT/metadata_splits.csv`` or ``ROOT/metadata.csv`` (``file_name``, ``identity``, ``date``, ``split_closed`` …).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date
from pathlib import Path

from wildtrack.data import storage
from wildtrack.data.records import Dataset, Record
from wildtrack.images import ImageError, image_date, is_image_name, open_image

KAGGLE_METADATA_FILES = ("metadata_splits.csv", "metadata.csv")
PLAIN_METADATA_FILE = "metadata.csv"


class DatasetError(ValueError):
    """The folder cannot be used as a dataset; the message says what it lacks."""


class SkippedFilesWarning(UserWarning):
    """Some files were not usable images and were left out."""


def parse_date(value: str | None) -> date | None:
    """Accept ``YYYY-MM-DD`` or a timestamp starting with it; anything else is unknown."""
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip()[:10].replace(":", "-"))
    except ValueError:
        return None


def _read_csv(path: storage.Photo) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(storage.read_text(path), newline="")))


def detect_layout(root: Path) -> tuple[str, Path | None]:
    """Return (layout name, metadata file or None)."""
    if (root / "images").is_dir():
        for name in KAGGLE_METADATA_FILES:
            meta = root / name
            if meta.is_file():
                header = _read_csv_header(meta)
                if {"file_name", "identity"} <= header:
                    return "seaturtleid2022", meta
    meta = root / PLAIN_METADATA_FILE
    if meta.is_file() and {"file_name", "identity"} <= _read_csv_header(meta):
        return "plain", meta
    return "plain", None


def _read_csv_header(path: storage.Photo) -> set[str]:
    return set(next(csv.reader(io.StringIO(storage.read_text(path), newline="")), []))


def _detect_remote_layout(root: str, files: set[str]) -> tuple[str, str | None]:
    """:func:`detect_layout` of an object-storage prefix whose objects (relative names) are ``files``."""
    if any(f.startswith("images/") for f in files):
        for name in KAGGLE_METADATA_FILES:
            if name in files and {"file_name", "identity"} <= _read_csv_header(storage.join(root, name)):
                return "seaturtleid2022", str(storage.join(root, name))
    if PLAIN_METADATA_FILE in files and {"file_name", "identity"} <= _read_csv_header(
            storage.join(root, PLAIN_METADATA_FILE)):
        return "plain", str(storage.join(root, PLAIN_METADATA_FILE))
    return "plain", None


def _records_from_metadata(root: storage.Photo, meta_file: storage.Photo, skipped: list[tuple[storage.Photo, str]],
                           exists: Callable[[str], bool]) -> list[Record]:
    records = []
    for row in _read_csv(meta_file):
        rel = row.get("file_name", "").strip()
        identity = row.get("identity", "").strip()
        path = storage.join(root, rel)
        if not rel or not identity:
            continue
        if not is_image_name(rel):
            skipped.append((path, "not an image file type"))
            continue
        if not exists(rel):
            skipped.append((path, "listed in metadata but missing on disk"))
            continue
        extra = {k: (v or "") for k, v in row.items() if k not in ("file_name", "identity") and k}
        when = parse_date(row.get("date")) or parse_date(row.get("timestamp"))
        records.append(Record(path=path, identity=identity, relpath=rel, date=when, meta=extra))
    return records


def _records_from_folders(root: Path, skipped: list[tuple[Path, str]], exif_dates: bool) -> list[Record]:
    records = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.name != PLAIN_METADATA_FILE:
                skipped.append((entry, "not inside an identity folder"))
            continue
        for file in sorted(entry.iterdir()):
            if file.name.startswith(".") or file.is_dir():
                continue
            if not is_image_name(file):
                skipped.append((file, "not an image file type"))
                continue
            rel = file.relative_to(root).as_posix()
            when = parse_date(image_date(file)) if exif_dates else None
            records.append(Record(path=file, identity=entry.name, relpath=rel, date=when))
    return records


def _records_from_prefix(root: str, files: list[str], skipped: list[tuple[storage.Photo, str]]) -> list[Record]:
    """The plain layout of an object-storage prefix: ``<identity>/<image>`` objects (deeper ones are ignored, as
    sub-folders of an identity folder are)."""
    records = []
    for rel in files:
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts):
            continue
        if len(parts) == 1:
            if rel != PLAIN_METADATA_FILE:
                skipped.append((storage.join(root, rel), "not inside an identity folder"))
        elif len(parts) == 2:
            if is_image_name(rel):
                records.append(Record(path=storage.join(root, rel), identity=parts[0], relpath=rel))
            else:
                skipped.append((storage.join(root, rel), "not an image file type"))
    return records


def _unreadable(record: Record) -> str | None:
    try:
        open_image(storage.photo_source(record.path), size=(32, 32))
    except ImageError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def _remote_check(record: Record, verify: bool, exif_dates: bool) -> tuple[Record, str | None]:
    """One read of an object: whether it decodes, and (when the record has none) its EXIF date."""
    try:
        data = storage.read_bytes(record.path)
        if verify:
            open_image(data, size=(32, 32))
    except ImageError as exc:
        return record, str(exc).split(": ", 1)[-1]
    if exif_dates and record.date is None:
        when = parse_date(image_date(io.BytesIO(data)))  # type: ignore[arg-type]  # PIL opens file objects
        record = replace(record, date=when) if when else record
    return record, None


def verify_records(records: list[Record], workers: int | None = None
                   ) -> tuple[list[Record], list[tuple[storage.Photo, str]]]:
    """Decode every image at a tiny draft size; split into usable records and (path, reason) failures."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        reasons = list(pool.map(_unreadable, records))
    good = [r for r, why in zip(records, reasons, strict=True) if why is None]
    bad = [(r.path, why) for r, why in zip(records, reasons, strict=True) if why is not None]
    return good, bad


def load_dataset(root: str | Path, verify: bool = True, exif_dates: bool = True) -> Dataset:
    """Read a dataset folder in either layout.

    Unusable files are skipped with one :class:`SkippedFilesWarning` naming each of them; a folder with no
    usable image is a :class:`DatasetError`. ``root`` may be an object-storage URL (``s3://bucket/prefix``).
    """
    if storage.is_url(root):
        return _load_remote(str(root), verify, exif_dates)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    layout, meta_file = detect_layout(root)
    skipped: list[tuple[storage.Photo, str]] = []
    if meta_file is not None:
        records = _records_from_metadata(root, meta_file, skipped, lambda rel: (root / rel).is_file())
    else:
        records = _records_from_folders(root, skipped, exif_dates=exif_dates)
    if verify and records:
        records, bad = verify_records(records)
        skipped.extend(bad)
    return _finish(root, layout, records, skipped)


def _load_remote(url: str, verify: bool, exif_dates: bool) -> Dataset:
    root = str(storage.resolve(url))
    try:
        listing = storage.list_files(root)
    except storage.StorageError as exc:
        raise DatasetError(str(exc)) from exc
    if not listing:
        raise DatasetError(f"{root}: no objects under this prefix (or the bucket cannot be read)")
    files = set(listing)
    layout, meta_file = _detect_remote_layout(root, files)
    skipped: list[tuple[storage.Photo, str]] = []
    if meta_file is not None:
        records = _records_from_metadata(root, meta_file, skipped, files.__contains__)
        exif_dates = False  # the metadata gives the dates, as for a folder
    else:
        records = _records_from_prefix(root, listing, skipped)
    if (verify or exif_dates) and records:
        with ThreadPoolExecutor(min(16, 4 * (os.cpu_count() or 1))) as pool:  # network-bound: more threads
            checked = list(pool.map(lambda r: _remote_check(r, verify, exif_dates), records))
        records = [r for r, why in checked if why is None]
        skipped.extend((r.path, why) for r, why in checked if why is not None)
    return _finish(root, layout, records, skipped)


def _finish(root: storage.Photo, layout: str, records: list[Record], skipped: list[tuple[storage.Photo, str]]
            ) -> Dataset:
    if skipped:
        listing = "\n".join(f"  {p}: {why}" for p, why in skipped)
        warnings.warn(f"skipped {len(skipped)} unusable file(s):\n{listing}", SkippedFilesWarning, stacklevel=3)
    if not records:
        hint = (
            "expected ROOT/<identity>/<image> (plain) or ROOT/images/<identity>/<image> with metadata.csv"
        )
        raise DatasetError(f"{root}: no usable images found ({hint})")
    return Dataset(root=root, layout=layout, records=records, skipped=skipped)
