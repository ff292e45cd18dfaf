"""``build_model``: backbone → pooling → Dense → BatchNorm → ``l2norm`` → classifier head."""

from __future__ import annotations

import keras

from wildtrack.model.backbones import get_backbone
from wildtrack.model.layers import CosineClassifier, L2Normalize

HEAD_LAYERS = ("gap", "embedding", "embedding_bn", "l2norm", "logit_scale", "classifier")
SOFTMAX_SCALE = 16.0


def head_for_loss(loss: str) -> str:
    """The classifier head a loss trains: cosine centres for ArcFace-style margins, a softmax Dense otherwise
    (a triplet-only model keeps a softmax head that its loss never reads)."""
    return "softmax" if loss in ("softmax", "triplet") else "cosine"


def build_model(
    backbone: str,
    num_classes: int,
    embed_dim: int = 256,
    image_size: int | None = None,
    pretrained: bool = True,
    head: str = "softmax",
    sub_centers: int = 1,
) -> keras.Model:
    """A classifier whose penultimate output is a unit-length embedding (layer ``l2norm``).

    ``head="softmax"`` ends in a softmax Dense (the original design); ``head="cosine"`` ends in cosine
    similarities to learned identity centres, which ArcFace-style losses turn into margins.
    """
    if num_classes < 2:
        raise ValueError(f"need at least 2 identities to train a classifier, got {num_classes}")
    spec = get_backbone(backbone)
    size = image_size or spec.default_size
    base = spec.build(size, pretrained)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base.output)
    x = keras.layers.Dense(embed_dim, use_bias=False, name="embedding")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="embedding_bn")(x)  # few steps per epoch
    embedding = L2Normalize(name="l2norm")(x)
    if head == "softmax":
        # On unit vectors every logit is capped at |w|, which starts small: a fixed scale (as in NormFace) lets
        # the softmax become confident and learn at a normal pace.
        scaled = keras.layers.Rescaling(SOFTMAX_SCALE, name="logit_scale")(embedding)
        out = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(scaled)
    elif head == "cosine":
        out = CosineClassifier(num_classes, sub_centers=sub_centers, name="classifier")(embedding)
    else:
        raise ValueError(f"unknown head {head!r}; use 'softmax' or 'cosine'")
    return keras.Model(base.input, out, name=f"wildtrack_{backbone.replace('-', '_')}")


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if layer.name not in HEAD_LAYERS and layer.weights]


def set_backbone_trainable(
    model: keras.Model, trainable: bool, freeze_batchnorm: bool = True, fraction: float = 1.0
) -> None:
    """Freeze or unfreeze the backbone. A pretrained backbone's BatchNorm stays frozen (ImageNet statistics)
    when fine-tuning, since small re-ID batches give poor batch statistics; one trained from scratch needs
    its BatchNorm to learn (``freeze_batchnorm=False``). ``fraction`` unfreezes only the last part of the
    backbone: on a few hundred photos, adapting early layers mostly learns each encounter's scenery."""
    layers = backbone_layers(model)
    first = int(round(len(layers) * (1.0 - fraction))) if trainable else len(layers)
    for i, layer in enumerate(layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable and i >= first and not (is_bn and freeze_batchnorm)
