"""Decoding a photo for local features: grey, bounded size, the whole frame, the located turtle's square, or the
salient subject's box."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from wildtrack.features.saliency import SaliencyLocator
from wildtrack.features.types import Source
from wildtrack.images import DEFAULT_MAX_PIXELS, open_image
from wildtrack.locate import TurtleLocator

TURTLE_DECODE_FACTOR = 2.5  # decode side ÷ max_side when focusing on the turtle (2000 px photos: full size)
SALIENCY_DECODE_FACTOR = 4.0  # the same for the saliency box, which is tighter (2000 px photos: full size)


def shrink(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    ratio = max_side / max(w, h)
    return img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.Resampling.BILINEAR,
                      reducing_gap=2.0)


def decode_grey(source: Source, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float]:
    """Upright grey image whose longer side is at most ``max_side``, and the factor back to the original size.

    Decoding asks for the aspect-correct draft (a square target would force a full decode of a 3:2 photo), and
    grey drafting skips the colour conversion.
    """
    img = open_image(source, max_pixels=max_pixels, max_side=max_side, grey=True)
    original = img.info.get("original_max_side", max(img.size))
    img = shrink(img, max_side)
    return np.asarray(img, dtype=np.uint8), original / max(img.size)


def decode_turtle_grey(source: Source, max_side: int, locator: TurtleLocator,
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float, tuple[float, float]]:
    """The turtle's square (or the whole photo when no turtle is found) as grey, longer side at most
    ``max_side``; the factor and offset back to the original's pixels.

    The photo is decoded at ``TURTLE_DECODE_FACTOR × max_side`` so that a turtle filling half the frame still
    reaches ``max_side`` px of its own.
    """
    img = open_image(source, max_pixels=max_pixels, max_side=TURTLE_DECODE_FACTOR * max_side)
    to_original = img.info.get("original_max_side", max(img.size)) / max(img.size)
    crop, (left, top) = locator.crop(img)
    side = max(crop.size)
    crop = shrink(crop.convert("L"), max_side)
    return np.asarray(crop, dtype=np.uint8), to_original * side / max(crop.size), (left * to_original,
                                                                                    top * to_original)



@lru_cache(maxsize=1)
def turtle_locator() -> TurtleLocator:
    """One locator per process: its network is built once and shared by every extractor thread."""
    return TurtleLocator()


def decode_salient_grey(source: Source, max_side: int, locator: SaliencyLocator,
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float, tuple[float, float]]:
    """The salient subject's box (:class:`~wildtrack.features.saliency.SaliencyLocator`) as grey, longer side
    at most ``max_side``; the factor and offset back to the original's pixels.

    The photo is decoded once at up to ``SALIENCY_DECODE_FACTOR × max_side`` (full resolution for the dataset's
    2000 px photos), so the box is cut from full-resolution pixels; the map is computed on a small copy.
    """
    img = open_image(source, max_pixels=max_pixels, max_side=round(SALIENCY_DECODE_FACTOR * max_side))
    to_original = img.info.get("original_max_side", max(img.size)) / max(img.size)
    crop, (left, top) = locator.crop(img)
    side = max(crop.size)
    crop = shrink(crop.convert("L"), max_side)
    return np.asarray(crop, dtype=np.uint8), to_original * side / max(crop.size), (left * to_original,
                                                                                    top * to_original)


@lru_cache(maxsize=1)
def saliency_locator() -> SaliencyLocator:
    """One saliency locator per process (its onnxruntime session is shared by every extractor thread)."""
    return SaliencyLocator()
