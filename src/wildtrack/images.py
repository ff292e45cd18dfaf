"""Decoding photos into model-ready RGB arrays, never decoding more pixels than needed.

Field photos are 2000×1333 JPEGs; a model wants 224 px. Pillow's ``draft`` lets libjpeg scale by 1/2, 1/4 or
1/8 during DCT decoding, which is ~4× faster than a full decode followed by a resize.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
DEFAULT_MAX_PIXELS = 100_000_000
LOCAL_DECODE_SIDE = 2000  # longest side local matching reads (2.5 × its 800 px turtle crop): see prepare_photo
Photo = str | Path | bytes | Image.Image  # a file, its bytes, or the photo already decoded (prepare_photo)


class ImageError(ValueError):
    """A file or upload that is not a decodable image (or is too large to decode safely)."""


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Normalise a size to (width, height)."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode (L, P, RGBA, I;16, CMYK, …) to 8-bit RGB; alpha is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) or 1.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0)
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(
    source: Photo,
    size: int | tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    grey: bool = False,
) -> Image.Image:
    """Open a file or bytes as an upright RGB (or, with ``grey``, L) PIL image.

    JPEGs are draft-decoded to the smallest DCT scale that still covers ``size`` (a square the frame will be
    squashed into) or, with ``max_side``, the aspect-correct size whose longer side is ``max_side``; the caller
    resizes the rest of the way. ``img.info["original_max_side"]`` keeps the longer side of the file's full
    resolution. Raises :class:`ImageError` for anything undecodable. A photo already decoded (a PIL image, from
    :func:`prepare_photo`) is not decoded again: it comes back converted, as its lossless encoding would.
    """
    if isinstance(source, Image.Image):
        img = source.convert("L") if grey else _to_rgb(source.copy())
        img.info["original_max_side"] = max(source.size)
        return img
    name = "<upload>" if isinstance(source, bytes) else str(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ImageError(f"{name}: cannot open ({exc.strerror or exc})") from exc
    try:
        with fp:
            if isinstance(source, bytes) and len(source) == 0:
                raise ImageError(f"{name}: empty file (0 bytes)")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fp)
                if img.width * img.height > max_pixels:
                    raise ImageError(
                        f"{name}: {img.width}×{img.height} pixels exceeds the limit of {max_pixels:,}"
                    )
                original_max_side = max(img.size)
                target = _as_size(size)
                mode = "L" if grey else "RGB"
                if target is not None and img.format == "JPEG":
                    # EXIF rotation may swap axes: ask for a draft that covers both orientations.
                    side = max(target)
                    img.draft(mode, (side, side))
                elif max_side is not None and img.format == "JPEG" and original_max_side > max_side:
                    shrink = max_side / original_max_side
                    img.draft(mode, (max(1, int(img.width * shrink)), max(1, int(img.height * shrink))))
                img = ImageOps.exif_transpose(img)
                if not (grey and img.mode == "L"):
                    img = _to_rgb(img)
                    if grey:
                        img = img.convert("L")
                img.load()
                img.info["original_max_side"] = original_max_side
                return img
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable image (its content is not a JPEG, PNG, WebP or BMP picture)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: not a readable image (too many pixels to decode safely)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: not a readable image (damaged or incomplete: {exc})") from exc


def load_image(
    source: str | Path | bytes,
    size: int | tuple[int, int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode and resize to ``size`` (width, height), returning an ``(H, W, 3)`` uint8 array.

    The whole frame is resized (no crop), so nothing of a turtle near the border is lost.
    """
    target = _as_size(size)
    assert target is not None
    img = open_image(source, size=target, max_pixels=max_pixels)
    if img.size != target:
        img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class PreparedPhoto:
    """One photo decoded for every stage: the model's ``pixels``, and what local matching reads (``local``: the
    source itself, or the photo decoded once and reduced to at most :data:`LOCAL_DECODE_SIDE`)."""

    pixels: np.ndarray
    local: Photo


def prepare_photo(source: str | Path | bytes, size: int | tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS,
                  longest_side: int | None = None) -> PreparedPhoto:
    """The one way the CLI, the service and searches prepare a photo (``longest_side``: its size when the caller
    already read the header).

    A photo up to :data:`LOCAL_DECODE_SIDE` is decoded for the model as every batch decodes it
    (:func:`load_image`, JPEG draft), and local matching reads the source at its own size. A larger one is decoded
    once, reduced to that side (JPEGs DCT-scaled while decoding, other formats box-reduced: a 7700 px PNG is
    180 MB of pixels), and both stages take their pixels from it; the full frame is released.
    """
    if longest_side is None:
        longest_side = _longest_side(source)
    if longest_side <= LOCAL_DECODE_SIDE:
        return PreparedPhoto(load_image(source, size, max_pixels=max_pixels), source)
    img = _reduced(open_image(source, max_pixels=max_pixels, max_side=LOCAL_DECODE_SIDE), LOCAL_DECODE_SIDE)
    target = _as_size(size)
    assert target is not None
    return PreparedPhoto(np.asarray(img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)), img)


def _longest_side(source: str | Path | bytes) -> int:
    """The longer side from the header alone (0 when unreadable: :func:`load_image` then says why)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return max(img.size)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return 0


def _reduced(img: Image.Image, side: int) -> Image.Image:
    """At most ``side`` per side: integer box reduction first (fast, little memory), then resize."""
    factor = max(img.size) // side
    if factor >= 2:
        img = img.reduce(factor)
    if max(img.size) > side:
        ratio = side / max(img.size)
        img = img.resize((max(1, math.floor(img.width * ratio)), max(1, math.floor(img.height * ratio))),
                         Image.Resampling.BILINEAR)
    return img


EXIF_IFD = 0x8769  # where EXIF keeps the camera's own tags
DATETIME_ORIGINAL = 0x9003  # when the shutter fired, "YYYY:MM:DD HH:MM:SS"
DATETIME = 0x0132  # when the file was last written


def exif_capture_time(img: Image.Image, fallback: bool = False) -> str | None:
    """The photo's EXIF ``DateTimeOriginal`` as written (``fallback``: else ``DateTime``); None when absent."""
    exif = img.getexif()
    value = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL) or (exif.get(DATETIME) if fallback else None)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


def image_date(path: str | Path) -> str | None:
    """EXIF ``DateTimeOriginal`` (or ``DateTime``) as ``YYYY-MM-DD``, or None when absent."""
    try:
        with Image.open(path) as img:
            value = exif_capture_time(img, fallback=True)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    if not value or len(value) < 10:
        return None
    return value[:10].replace(":", "-")


@dataclass
class DecodedBatch:
    """Images ``indices`` (positions in the input list) decoded into ``pixels``; ``failed`` were not."""

    indices: list[int]
    pixels: np.ndarray
    failed: list[tuple[int, str]]


def iter_decoded_batches(
    paths: Sequence[str | Path],
    size: int | tuple[int, int],
    batch_size: int = 32,
    workers: int | None = None,
    prefetch_batches: int = 2,
    load: Callable[[Any, tuple[int, int]], np.ndarray] | None = None,
) -> Iterator[DecodedBatch]:
    """Decode images in parallel threads, in input order, with at most ``prefetch_batches`` batches in flight.

    Memory stays flat however long ``paths`` is, and a consumer (the model) runs while the next batches are
    decoded. A file that fails is reported in its batch's ``failed`` list; the rest carry on. ``load`` (default
    :func:`load_image`) reads one source, e.g. from object storage (:func:`wildtrack.data.storage.load_photo`).
    """
    target = _as_size(size)
    assert target is not None
    workers = workers or max(1, os.cpu_count() or 1)
    window = max(batch_size, batch_size * prefetch_batches)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[tuple[int, Future[np.ndarray]]] = deque()
        next_index = 0

        def fill() -> None:
            nonlocal next_index
            while next_index < len(paths) and len(pending) < window:
                pending.append((next_index, pool.submit(load or load_image, paths[next_index], target)))
                next_index += 1

        fill()
        while pending:
            indices, arrays, failed = [], [], []
            while pending and len(indices) + len(failed) < batch_size:
                i, future = pending.popleft()
                try:
                    arrays.append(future.result())
                    indices.append(i)
                except ImageError as exc:
                    failed.append((i, str(exc)))
                fill()
            pixels = np.stack(arrays) if arrays else np.zeros((0, target[1], target[0], 3), np.uint8)
            yield DecodedBatch(indices, pixels, failed)


def load_images(
    paths: Sequence[str | Path], size: int | tuple[int, int], workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Decode a whole list into one ``(N, H, W, 3)`` uint8 array; any unreadable file is an ImageError."""
    out: list[np.ndarray] = []
    for batch in iter_decoded_batches(paths, size, batch_size=64, workers=workers):
        if batch.failed:
            raise ImageError("; ".join(msg for _, msg in batch.failed))
        out.append(batch.pixels)
        if progress:
            progress(len(batch.indices))
    return np.concatenate(out) if out else np.zeros((0, *reversed(_as_size(size) or (0, 0)), 3), np.uint8)
