"""The index directory's file formats: names, the bytes of each data file and the manifest, and durable writes.

Readers here parse from an already opened (and verified) file object; which file to open is the store's
business (:mod:`wildtrack.index.store`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from wildtrack import __version__
from wildtrack.index.types import IndexCorruptError, MetaRow

FORMAT_VERSION = 1
EMBEDDINGS, META, FAISS_FILE, MANIFEST = "embeddings.npy", "meta.csv", "index.faiss", "manifest.json"
DATA_FILES = (EMBEDDINGS, META, FAISS_FILE)
PREV = ".prev"
LOCK_FILE = ".lock"
META_COLUMNS = ("image_id", "path", "identity", "date")
TMP_MARK = ".tmp-"  # temp files are ".<name>.tmp-<pid>-<random>"


class HashingWriter:
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


def write_faiss(index: Any, out: HashingWriter) -> None:
    writer = faiss.PyCallbackIOWriter(out.write)
    faiss.write_index(index, writer)
    del writer


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): such a cell is written
# with a leading ' (which spreadsheets show as text) and read back without it. A value that already starts with
# quotes before one of them gets one more, so every value round-trips.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def csv_cell(value: str) -> str:
    """``value`` as a CSV cell no spreadsheet runs as a formula."""
    return f"'{value}" if _FORMULA.match(value) else value


def csv_value(cell: str) -> str:
    """The value :func:`csv_cell` wrote."""
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell) else cell


def meta_bytes(rows: list[MetaRow]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(META_COLUMNS)
    w.writerows((r.image_id, csv_cell(r.path), csv_cell(r.identity), r.date or "") for r in rows)
    return buf.getvalue().encode("utf-8")


def manifest_bytes(
    info: Mapping[str, Any], dim: int, rows: list[MetaRow], files: Mapping[str, Any], extras: Mapping[str, Any],
    shards: Mapping[str, Any] | None = None,
) -> bytes:
    doc = {
        "format_version": FORMAT_VERSION,
        "catalogue_id": info["catalogue_id"],
        "generation": info["generation"],
        "model_fingerprint": info["model_fingerprint"],
        "dim": dim,
        "count": len(rows),
        "num_identities": len({r.identity for r in rows}),
        "index": info["index"],
        "data_root": info["data_root"],
        "decision_threshold": info.get("decision_threshold"),
        "created": info["created"],
        "updated": info["updated"],
        "files": dict(files),
        "extras": dict(extras),
        "shards": dict(shards or {}),
        "writer": {"wildtrack": __version__, "faiss": faiss.__version__},
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def read_embeddings(f: IO[bytes], m: Mapping[str, Any]) -> np.ndarray:
    emb = np.load(f, allow_pickle=False)
    if emb.dtype != np.float32 or emb.shape != (m["count"], m["dim"]):
        raise IndexCorruptError(f"{EMBEDDINGS} is {emb.dtype}{emb.shape}, manifest says ({m['count']}, {m['dim']})")
    return emb


def read_meta(f: IO[bytes], m: Mapping[str, Any]) -> list[MetaRow]:
    reader = csv.reader(io.StringIO(f.read().decode("utf-8"), newline=""))
    header = tuple(next(reader, ()))
    if header != META_COLUMNS:
        raise IndexCorruptError(f"{META} header is {header}, expected {META_COLUMNS}")
    try:
        rows = [MetaRow(i, csv_value(p), csv_value(ident), day or None) for i, p, ident, day in reader]
    except ValueError as e:
        raise IndexCorruptError(f"{META} has a malformed row: {e}") from e
    if len(rows) != m["count"]:
        raise IndexCorruptError(f"{META} has {len(rows)} rows, manifest says {m['count']}")
    return rows


def read_faiss(f: IO[bytes], m: Mapping[str, Any]) -> Any:
    reader = faiss.PyCallbackIOReader(f.read)
    index = faiss.read_index(reader)
    del reader
    if index.ntotal != m["count"] or index.d != m["dim"]:
        raise IndexCorruptError(f"{FAISS_FILE} holds {index.ntotal}x{index.d}, manifest says {m['count']}x{m['dim']}")
    return index


def sha256_of(f: IO[bytes]) -> str:
    return hashlib.file_digest(f, "sha256").hexdigest()


def tmp_name(d: Path, name: str) -> Path:
    """A temp path next to ``name`` that no other writer (or earlier crash) can be using."""
    return d / f".{name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"


def link_or_copy(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a copy of ``src``: a hard link when the filesystem allows (free), else a copy."""
    tmp = tmp_name(dst.parent, dst.name)
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


def fsync_dir(d: Path) -> None:
    """Make renames durable; directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
