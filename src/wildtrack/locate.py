"""Where is the turtle in a full-frame photo? A class-activation map of ImageNet's own turtle classes.

Field photos are 2000 px underwater scenes with the turtle anywhere and at any size; the rest is sand, reef and
light patterns that change from one encounter to the next. ImageNet has five turtle classes (loggerhead among
them), and MobileNetV2 ends in global pooling plus one dense layer, so the class-activation map (Zhou et al.
2016) of those classes is the last feature map dotted with their classifier weights: a turtle detector with no
training and no boxes, from the same offline torchvision weights as the default backbone.

The box is used to spend the local matcher's keypoints on the turtle instead of the scenery
(:class:`wildtrack.features.SiftExtractor` with ``focus="turtle"``). When the classifier puts too little mass
on turtles (a synthetic image, a photo of sand) there is no box and callers keep the whole frame.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import keras

__all__ = ["TURTLE_CLASSES", "TurtleBox", "TurtleLocator"]

TURTLE_CLASSES = (33, 34, 35, 36, 37)  # loggerhead, leatherback, mud turtle, terrapin, box turtle


@dataclass(frozen=True)
class TurtleBox:
    """The turtle's box as fractions of the frame (``0 <= x0 < x1 <= 1``), and the classifier's turtle mass."""

    x0: float
    y0: float
    x1: float
    y1: float
    turtle_prob: float

    def square(self, width: int, height: int, margin: float = 1.3, min_fraction: float = 0.3
               ) -> tuple[int, int, int, int]:
        """Pixel box ``(left, top, right, bottom)`` of a square around the turtle, ``margin`` × its longer side
        (activation maps are coarse and tend to miss the flippers and head tip), at least ``min_fraction`` of
        the frame's shorter side, clipped to the frame."""
        cx, cy = (self.x0 + self.x1) / 2 * width, (self.y0 + self.y1) / 2 * height
        side = max(max((self.x1 - self.x0) * width, (self.y1 - self.y0) * height) * margin,
                   min_fraction * min(width, height))
        left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
        right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
        return left, top, max(right, left + 1), max(bottom, top + 1)


_MODEL_LOCK = threading.Lock()  # one build per size, one prediction at a time: extractor threads share the model


@lru_cache(maxsize=4)
def _build_cam_model(image_size: int) -> tuple[keras.Model, np.ndarray]:
    import keras

    from wildtrack.model.mobilenetv2_torch import FEATURES_LAYER, imagenet_mobilenetv2

    full = imagenet_mobilenetv2(image_size, include_top=True)
    turtle_weights = full.get_layer("logits").kernel.numpy()[:, list(TURTLE_CLASSES)].mean(axis=1)
    return keras.Model(full.input, [full.get_layer(FEATURES_LAYER).output, full.output]), turtle_weights


def _cam_model(image_size: int) -> tuple[keras.Model, np.ndarray]:
    """The network (last feature map and logits) and the mean classifier weight of the turtle classes."""
    with _MODEL_LOCK:
        return _build_cam_model(image_size)


class TurtleLocator:
    """``locate(image)`` → :class:`TurtleBox` or ``None``; ``crop(image)`` → the turtle or the whole frame.

    ``threshold``: map cells at or above this fraction of the map's peak belong to the turtle.
    ``min_turtle_prob``: the softmax mass on :data:`TURTLE_CLASSES` below which there is no turtle to find.
    The network is built on first use and shared by every locator of the same ``image_size`` in the process;
    predictions are serialised (the extractor threads that use it spend most of their time in SIFT, not here).
    """

    def __init__(self, image_size: int = 320, threshold: float = 0.35, min_turtle_prob: float = 0.05):
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.image_size, self.threshold, self.min_turtle_prob = image_size, threshold, min_turtle_prob

    def key(self) -> str:
        return f"turtle-cam-v1[size={self.image_size},threshold={self.threshold},min_prob={self.min_turtle_prob}]"

    def _activation(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """The turtle-class activation map and the softmax mass on the turtle classes; ``predict_on_batch`` runs
        a compiled graph (4× faster than eager)."""
        model, turtle_weights = _cam_model(self.image_size)
        small = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BILINEAR,
                                            reducing_gap=2.0)
        with _MODEL_LOCK:
            features, logits = model.predict_on_batch(np.asarray(small, dtype=np.float32)[None])
        logits = np.asarray(logits)[0]
        probs = np.exp(logits - logits.max())
        turtle_prob = float(probs[list(TURTLE_CLASSES)].sum() / probs.sum())
        return np.maximum(np.asarray(features)[0] @ turtle_weights, 0.0), turtle_prob

    def locate(self, image: Image.Image) -> TurtleBox | None:
        cam, turtle_prob = self._activation(image)
        if turtle_prob < self.min_turtle_prob:
            return None
        if cam.max() <= 0:
            return None
        ys, xs = np.nonzero(cam >= self.threshold * cam.max())
        h, w = cam.shape
        return TurtleBox(xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h, turtle_prob)

    def crop(self, image: Image.Image) -> tuple[Image.Image, tuple[int, int]]:
        """The turtle's square (or the whole image) and its top-left corner in ``image``'s pixels."""
        box = self.locate(image)
        if box is None:
            return image, (0, 0)
        left, top, right, bottom = box.square(*image.size)
        return image.crop((left, top, right, bottom)), (left, top)
