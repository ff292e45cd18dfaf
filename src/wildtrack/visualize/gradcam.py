"""Grad-CAM for an embedding model: which part of the photo made it match its gallery neighbour?

Classification Grad-CAM differentiates a class logit; a re-ID model has no classes at retrieval time, so
the score here is the dot product between the photo's embedding and a target embedding (typically its
top gallery match). Hot regions are the pixels that pulled the two photos together — facial scutes if the
model learned the turtle, sand or a ruler if it learned the beach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from wildtrack.images import open_image

__all__ = ["find_last_conv_layer", "gradcam_heatmap", "is_flat", "save_gradcam_overlay", "save_gradcam_pair"]


def _output_shape(layer: Any) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _is_conv_like(layer: Any) -> bool:
    import keras

    return "Conv" in type(layer).__name__ or isinstance(layer, keras.Model)


def find_last_conv_layer(model: Any) -> str | None:
    """Name of the last layer with a 4-D (batch, h, w, c) output that comes after a convolution.

    Walking back from the output, this is the final spatial feature map (often the activation after the
    last conv). Preprocessing layers (Rescaling, …) on the input are 4-D too but precede every conv, so
    they are never chosen. A nested backbone model counts as a conv. None when the model has no conv.
    """
    layers = list(model.layers)
    conv_positions = [i for i, layer in enumerate(layers) if _is_conv_like(layer)]
    if not conv_positions:
        return None
    first_conv = conv_positions[0]
    for i in range(len(layers) - 1, first_conv - 1, -1):
        shape = _output_shape(layers[i])
        if shape is not None and len(shape) == 4 and type(layers[i]).__name__ != "InputLayer":
            return layers[i].name
    return None


def _grad_model(model: Any, layer_name: str) -> Any:
    """keras.Model(inputs → [feature map, embedding]); handles a nested backbone, whose ``.output`` is its
    own inner tensor rather than the one in the outer graph."""
    import keras

    layer = model.get_layer(layer_name)
    candidates = [layer.output] + [n.output_tensors[0] for n in getattr(layer, "_inbound_nodes", [])]
    last_error: Exception | None = None
    for tensor in candidates:
        try:
            return keras.Model(model.inputs, [tensor, model.outputs[0]])
        except ValueError as exc:  # "not connected to inputs": try the next call site
            last_error = exc
    raise ValueError(f"layer {layer_name!r} is not connected to the model input: {last_error}")


def gradcam_heatmap(
    embedding_model: Any,
    image: np.ndarray,
    target: np.ndarray,
    layer_name: str | None = None,
    normalise: bool = True,
) -> np.ndarray:
    """Grad-CAM map (h, w) of ``embedding(image) · target`` at the conv feature map, in [0, 1] (its own peak
    is 1) or, with ``normalise=False``, in the score's own units, so that two maps can share one scale.

    ``image`` is (H, W, 3) uint8; the model takes raw 0..255 floats and does its own preprocessing. The
    image is resized to a fixed model input size if it differs. An all-zero map means no region had a
    positive influence on the score.
    """
    import tensorflow as tf

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    name = layer_name or find_last_conv_layer(embedding_model)
    if name is None:
        raise ValueError("the model has no convolutional feature map to explain; pass layer_name")
    in_h, in_w = tuple(embedding_model.inputs[0].shape)[1:3]
    if in_h and in_w and image.shape[:2] != (in_h, in_w):
        resized = Image.fromarray(image.astype(np.uint8)).resize((in_w, in_h), Image.Resampling.BILINEAR)
        image = np.asarray(resized)
    grad_model = _grad_model(embedding_model, name)
    x = tf.convert_to_tensor(image[None].astype(np.float32))
    t = tf.reshape(tf.convert_to_tensor(np.asarray(target, dtype=np.float32)), (1, -1))

    with tf.GradientTape() as tape:
        features, embedding = grad_model(x, training=False)
        if embedding.shape[-1] != t.shape[-1]:
            raise ValueError(f"target has {t.shape[-1]} dims, the embedding {embedding.shape[-1]}")
        score = tf.reduce_sum(tf.cast(embedding, tf.float32) * t)
    grads = tape.gradient(score, features)
    if grads is None:
        raise ValueError(f"the embedding does not depend on layer {name!r}")
    weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)  # (1, 1, 1, C)
    cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1))[0].numpy()
    if not normalise:
        return cam.astype(np.float32)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)


def save_gradcam_overlay(
    image_path_or_array: str | Path | np.ndarray,
    heatmap: np.ndarray,
    out_path: str | Path,
    title: str = "",
    alpha: float = 0.4,
    max_side: int = 640,
) -> Path:
    """Save the photo and the photo-with-heatmap side by side, so the eye can compare the two."""
    if isinstance(image_path_or_array, np.ndarray):
        photo = Image.fromarray(np.asarray(image_path_or_array, dtype=np.uint8))
    else:
        photo = open_image(image_path_or_array, size=(max_side, max_side))
    photo.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    rgb = np.asarray(photo.convert("RGB"))
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heat.shape}")
    heat = np.asarray(Image.fromarray(heat).resize(photo.size, Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    coloured = colormaps["jet"](heat)[..., :3]
    blended = ((1 - alpha) * rgb / 255.0 + alpha * coloured).clip(0, 1)

    aspect = rgb.shape[0] / rgb.shape[1]
    fig = Figure(figsize=(10, 5 * aspect + 0.7), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, img, label in zip(axes, (rgb, blended), ("photo", "Grad-CAM (red = drives the match)"),
                              strict=True):
        ax.imshow(img)
        ax.set_title(label, fontsize=11)
        ax.set_axis_off()
    return _save(fig, out_path, title)


def _blend(photo: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    heat = np.asarray(Image.fromarray(np.asarray(heatmap, np.float32)).resize(
        (photo.shape[1], photo.shape[0]), Image.Resampling.BILINEAR)).clip(0.0, 1.0)
    return ((1 - alpha) * photo / 255.0 + alpha * colormaps["jet"](heat)[..., :3]).clip(0, 1)


FLAT_RANGE = 0.05  # a map spanning less than this share of the pair's scale shows nothing worth colouring
EXPLAINS = ("Grad-CAM of the appearance similarity (the cosine of the two embeddings), on one colour scale for both "
            "photos. It does not explain the keypoint check nor WildTrack's final verdict.")


def is_flat(heatmap: np.ndarray, scale: float) -> bool:
    """True when a map is (nearly) uniform on the pair's ``scale``: drawn, it would be one flat colour."""
    heat = np.asarray(heatmap, np.float32)
    return scale <= 0 or float(heat.max() - heat.min()) < FLAT_RANGE * scale


def save_gradcam_pair(query: np.ndarray, query_heat: np.ndarray, match: np.ndarray, match_heat: np.ndarray,
                      out_path: str | Path, query_label: str, match_label: str, title: str = "",
                      alpha: float = 0.4) -> Path:
    """The query photo beside its top match, each above its heat map; both maps on one scale (the pair's
    peak), with a colour bar, so the two sides compare. A flat map is said in words, not drawn as one colour.
    Labels name the photos (turtle, file) so a reader can find them."""
    scale = float(max(np.max(query_heat), np.max(match_heat), 0.0))
    fig = Figure(figsize=(9.6, 10.6), dpi=100)
    axes = fig.subplots(2, 2)
    fig.subplots_adjust(left=0.03, right=0.97, top=0.9, bottom=0.13, wspace=0.06, hspace=0.12)
    columns = ((np.asarray(query, np.uint8), query_heat, query_label), (np.asarray(match, np.uint8), match_heat,
                                                                        match_label))
    for col, (photo, heat, label) in enumerate(columns):
        axes[0, col].imshow(photo)
        axes[0, col].set_title(label, fontsize=11)
        if is_flat(heat, scale):
            axes[1, col].imshow(photo, alpha=0.35)
            axes[1, col].text(0.5, 0.5, "flat map:\nno region of this photo\nstood out", ha="center", va="center",
                              fontsize=12, transform=axes[1, col].transAxes,
                              bbox={"facecolor": "white", "edgecolor": "#999999"})
            axes[1, col].set_title("no Grad-CAM to show", fontsize=10)
        else:
            axes[1, col].imshow(_blend(photo, np.asarray(heat, np.float32) / scale, alpha))
            axes[1, col].set_title("red: what pulled the two together", fontsize=10)
        for row in (0, 1):
            axes[row, col].set_axis_off()
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colormaps["jet"]), ax=list(axes[1]),
                       orientation="horizontal", fraction=0.04, pad=0.03, ticks=[0.0, 1.0])
    bar.ax.set_xticklabels(["no pull", "strongest pull in the pair"])
    fig.text(0.5, 0.01, EXPLAINS, ha="center", va="bottom", fontsize=9, color="#444444", wrap=True)
    return _save(fig, out_path, title, tight=False)


def _save(fig: Figure, out_path: str | Path, title: str, tight: bool = True) -> Path:
    """Title, layout and a white-background PNG at ``out_path`` (its folder created)."""
    if title:
        fig.suptitle(title, fontsize=13)
    if tight:
        fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100, format="png", facecolor="white")
    return out_path
