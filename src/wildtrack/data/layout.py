"""Reading a folder of photos into records, whatever layout the user has.

Two layouts exist in the field:

* ``plain``: ``ROOT/<identity>/<image>``, optionally with ``ROOT/metadata.csv`` (``file_name``, ``identity``,
  ``date``) for encounter dates; without it dates come from EXIF ``DateTimeOriginal``.
* ``seaturtleid2022``: the Kaggle layout, ``ROOT/images/<identity>/<image>`` listed by
  ``ROOT/metadata_splits.csv`` or ``ROOT/metadata.csv`` (``file_name``, ``identity``, ``date``, ``split_closed`` …).
"""

from __future__ import annotations

import csv
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

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


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


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


def _read_csv_header(path: Path) -> set[str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return set(next(csv.reader(fh), []))


def _records_from_metadata(root: Path, meta_file: Path, skipped: list[tuple[Path, str]]) -> list[Record]:
    records = []
    for row in _read_csv(meta_file):
        rel = row.get("file_name", "").strip()
        identity = row.get("identity", "").strip()
        path = root / rel
        if not rel or not identity:
            continue
        if not is_image_name(rel):
            skipped.append((path, "not an image file type"))
            continue
        if not path.is_file():
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


def _unreadable(record: Record) -> str | None:
    try:
        open_image(record.path, size=(32, 32))
    except ImageError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def verify_records(records: list[Record], workers: int | None = None) -> tuple[list[Record], list[tuple[Path, str]]]:
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
    usable image is a :class:`DatasetError`.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    layout, meta_file = detect_layout(root)
    skipped: list[tuple[Path, str]] = []
    if meta_file is not None:
        records = _records_from_metadata(root, meta_file, skipped)
    else:
        records = _records_from_folders(root, skipped, exif_dates=exif_dates)
    if verify and records:
        records, bad = verify_records(records)
        skipped.extend(bad)
    if skipped:
        listing = "\n".join(f"  {p}: {why}" for p, why in skipped)
        warnings.warn(f"skipped {len(skipped)} unusable file(s):\n{listing}", SkippedFilesWarning, stacklevel=2)
    if not records:
        hint = (
            "expected ROOT/<identity>/<image> (plain) or ROOT/images/<identity>/<image> with metadata.csv"
        )
        raise DatasetError(f"{root}: no usable images found ({hint})")
    return Dataset(root=root, layout=layout, records=records, skipped=skipped)
