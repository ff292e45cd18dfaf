"""Photos in object storage (``s3://bucket/prefix``, ``gs://…``) next to photos in folders, read through fsspec.

A photo is either a local :class:`~pathlib.Path` or a URL string (``pathlib`` would fold its ``//``). Everything
that reads a photo's bytes, names its version for a cache or a shard (:func:`stamp`), or places it relative to a
catalogue root goes through here, so callers do not care where the photos live. Decoding stays in
:mod:`wildtrack.images` (it takes bytes).

Credentials and the endpoint come from the usual environment of the protocol's library (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE`` …) or from
:func:`configure` (the CLI's ``--storage-option KEY=VALUE``), whose options every filesystem is opened with. A
cluster job passes those options to its workers, which read the same URLs (credentials from their environment).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.images import ImageError, load_image

__all__ = ["Photo", "StorageError", "configure", "filesystem", "is_url", "join", "list_files", "load_photo",
           "parse_options", "photo_source", "read_bytes", "read_text", "relative", "resolve", "stamp",
           "storage_options"]

Photo = Path | str  # a file, or a URL of an object

_OPTIONS: dict[str, Any] = {}


class StorageError(ValueError):
    """Object storage cannot be used as asked (missing package, unreachable bucket, bad option)."""


def is_url(path: object) -> bool:
    """True for ``scheme://…`` strings other than ``file://`` (those are ordinary files)."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def configure(options: Mapping[str, Any] | None) -> None:
    """Options every object-storage filesystem of this process is opened with (``endpoint_url``, ``anon`` …)."""
    _OPTIONS.clear()
    _OPTIONS.update(options or {})


def storage_options() -> dict[str, Any]:
    """The options :func:`configure` set, to hand to cluster workers."""
    return dict(_OPTIONS)


def parse_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings into fsspec options; a value that parses as JSON (``true``, ``3``) is taken as such."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise StorageError(f"storage option {pair!r} is not KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000)")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for ``url``, opened with the configured options."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:  # pragma: no cover - fsspec comes with Ray and pyarrow
        raise StorageError("reading photos from object storage needs fsspec: pip install fsspec s3fs") from exc
    try:
        return url_to_fs(url, **_OPTIONS)
    except ImportError as exc:
        raise StorageError(f"{url}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise StorageError(f"{url}: storage options {sorted(_OPTIONS)} rejected ({exc})") from exc


def resolve(path: Photo) -> Photo:
    """A photo's canonical name: an absolute path, or the URL without a trailing slash or ``.``/``..`` parts."""
    if is_url(path):
        scheme, rest = str(path).split("://", 1)
        return f"{scheme}://{posixpath.normpath(rest).lstrip('/')}" if rest.strip("/") else f"{scheme}://"
    return Path(path).expanduser().resolve()


def join(root: Photo, rel: str) -> Photo:
    """``root / rel`` for a folder or a URL prefix."""
    if is_url(root):
        return resolve(f"{str(root).rstrip('/')}/{rel}")
    return Path(root) / rel


def relative(path: Photo, root: Photo) -> str:
    """``path`` relative to ``root`` as a POSIX string; a file outside a folder root gets ``..`` parts, a URL
    outside a URL root (or a mix of both) is a ValueError."""
    if is_url(path) or is_url(root):
        p, r = str(resolve(path)), str(resolve(root)).rstrip("/") + "/"
        if not (is_url(path) and is_url(root) and p.startswith(r)):
            raise ValueError(f"{path} is not inside {root}")
        return p[len(r):]
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def read_bytes(path: Photo) -> bytes:
    """A file's or an object's bytes; what cannot be read is an :class:`~wildtrack.images.ImageError` naming it,
    as an unreadable file is."""
    try:
        if is_url(path):
            fs, inner = filesystem(str(path))
            return fs.cat_file(inner)
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot open ({getattr(exc, 'strerror', None) or exc})") from exc


def read_text(path: Photo) -> str:
    """A small text file (a metadata CSV), BOM stripped."""
    return read_bytes(path).decode("utf-8-sig")


def photo_source(path: Photo) -> Path | bytes:
    """What :mod:`wildtrack.images` and the extractors take: a local path as it is, an object as its bytes."""
    return read_bytes(path) if is_url(path) else Path(path)


def load_photo(path: Photo, size: int | tuple[int, int]) -> np.ndarray:
    """:func:`~wildtrack.images.load_image` of a file or an object; errors name the photo, not ``<upload>``."""
    if not is_url(path):
        return load_image(path, size)
    try:
        return load_image(read_bytes(path), size)
    except ImageError as exc:
        raise ImageError(str(exc).replace("<upload>", str(path), 1)) from exc


def stamp(path: Photo) -> str:
    """A photo's version, for cache keys and shard names: ``mtime_ns:size`` of a file, the ETag (or generation,
    else size and last-modified) of an object. OSError when it does not exist."""
    if not is_url(path):
        st = os.stat(path)
        return f"{st.st_mtime_ns}:{st.st_size}"
    fs, inner = filesystem(str(path))
    info = fs.info(inner)
    if info.get("type") == "directory":
        raise IsADirectoryError(f"{path} is a prefix, not an object")
    for key in ("ETag", "etag", "generation", "md5Hash"):
        if info.get(key):
            return f"{key}:{str(info[key]).strip(chr(34))}:{info.get('size')}"
    modified = info.get("LastModified") or info.get("mtime") or info.get("updated") or ""
    return f"size:{info.get('size')}:{modified}"


def list_files(root: str) -> list[str]:
    """Every object under the URL prefix ``root``, as POSIX paths relative to it (sorted); a fresh listing."""
    fs, inner = filesystem(root)
    inner = inner.rstrip("/")
    fs.invalidate_cache()  # objects uploaded since the last listing (``index add``) must be seen
    try:
        found = fs.find(inner)
    except OSError as exc:
        raise StorageError(f"{root}: cannot list ({exc})") from exc
    prefix = inner + "/"
    return sorted(f[len(prefix):] for f in found if f.startswith(prefix) and not f.endswith("/"))
