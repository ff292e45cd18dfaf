"""Serialisable custom layers: no ``Lambda`` anywhere, so both ``.keras`` and legacy ``.h5`` files load."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="wildtrack")
class L2Normalize(keras.layers.Layer):
    """Scale each vector to unit length, so a dot product is a cosine similarity."""

    def __init__(self, axis: int = -1, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = epsilon

    def call(self, inputs):
        norm = ops.sqrt(ops.maximum(ops.sum(ops.square(inputs), axis=self.axis, keepdims=True), self.epsilon))
        return inputs / norm

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="wildtrack")
class CosineClassifier(keras.layers.Layer):
    """Cosine similarity to one learned (unit) centre per identity, or the best of ``sub_centers`` centres.

    The margin of ArcFace is applied in the loss, so the saved model stays a plain function of the image.
    """

    def __init__(self, num_classes: int, sub_centers: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.sub_centers = sub_centers

    def build(self, input_shape):
        self.centers = self.add_weight(
            name="centers",
            shape=(int(input_shape[-1]), self.num_classes * self.sub_centers),
            initializer="glorot_uniform",
        )

    def call(self, inputs):
        x = inputs / ops.sqrt(ops.maximum(ops.sum(ops.square(inputs), axis=-1, keepdims=True), 1e-12))
        w = self.centers / ops.sqrt(ops.maximum(ops.sum(ops.square(self.centers), axis=0, keepdims=True), 1e-12))
        cos = ops.matmul(x, w)
        if self.sub_centers > 1:
            cos = ops.max(ops.reshape(cos, (-1, self.num_classes, self.sub_centers)), axis=-1)
        return cos

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "sub_centers": self.sub_centers}


CUSTOM_OBJECTS = {"L2Normalize": L2Normalize, "CosineClassifier": CosineClassifier}
