"""Batched, stateless TensorFlow augmentation for field photos.

Every random draw is keyed on (seed, step), so the same seed gives the same batches on every run and in any
thread order: that is what makes ``history.csv`` reproducible.
"""

from __future__ import annotations

import math

import tensorflow as tf

from wildtrack.config import AugmentConfig


def _uniform(shape, seed, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _random_resized_crop(x: tf.Tensor, seed, size: int, scale: tuple[float, float]) -> tf.Tensor:
    n = tf.shape(x)[0]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    area = _uniform([n], seeds[0], scale[0], scale[1])
    ratio = tf.exp(_uniform([n], seeds[1], math.log(3 / 4), math.log(4 / 3)))
    w = tf.minimum(tf.sqrt(area * ratio), 1.0)
    h = tf.minimum(tf.sqrt(area / ratio), 1.0)
    x0 = _uniform([n], seeds[2], 0.0, 1.0) * (1.0 - w)
    y0 = _uniform([n], seeds[3], 0.0, 1.0) * (1.0 - h)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    return tf.image.crop_and_resize(x, boxes, tf.range(n), (size, size))


def _rotate(x: tf.Tensor, seed, max_degrees: float) -> tf.Tensor:
    n = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1], tf.float32)
    angle = _uniform([n], seed, -max_degrees, max_degrees) * (math.pi / 180.0)
    c, s = tf.cos(angle), tf.sin(angle)
    centre = (size - 1.0) / 2.0
    x_off = centre - (c * centre - s * centre)
    y_off = centre - (s * centre + c * centre)
    zeros = tf.zeros_like(c)
    transforms = tf.stack([c, -s, x_off, s, c, y_off, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT",
    )


def _colour(x: tf.Tensor, seed, strength: float) -> tf.Tensor:
    n = tf.shape(x)[0]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    brightness = _uniform([n, 1, 1, 1], seeds[0], -strength, strength) * 255.0
    contrast = _uniform([n, 1, 1, 1], seeds[1], 1 - strength, 1 + strength)
    saturation = _uniform([n, 1, 1, 1], seeds[2], 1 - strength, 1 + strength)
    cast = _uniform([n, 1, 1, 3], seeds[3], 1 - strength / 2, 1 + strength / 2)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * contrast + mean + brightness
    grey = tf.reduce_mean(x, axis=3, keepdims=True)
    x = (grey + (x - grey) * saturation) * cast
    return tf.clip_by_value(x, 0.0, 255.0)


def _gaussian_kernel(sigma: float, radius: int) -> tf.Tensor:
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-(t**2) / (2 * sigma**2))
    k = k / tf.reduce_sum(k)
    k2 = tf.tensordot(k, k, axes=0)
    return tf.tile(k2[:, :, None, None], [1, 1, 3, 1])


def _blur(x: tf.Tensor, seed, probability: float) -> tf.Tensor:
    n = tf.shape(x)[0]
    blurred = tf.nn.depthwise_conv2d(x, _gaussian_kernel(1.2, 3), strides=[1, 1, 1, 1], padding="SAME")
    chosen = _uniform([n, 1, 1, 1], seed, 0.0, 1.0) < probability
    return tf.where(chosen, blurred, x)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, size: int, cfg: AugmentConfig) -> tf.Tensor:
    """uint8 ``(B, H, W, 3)`` → float32 ``(B, size, size, 3)`` in 0..255, randomised per image."""
    x = tf.cast(images, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 5)
    if cfg.random_resized_crop:
        x = _random_resized_crop(x, seeds[0], size, cfg.crop_scale)
    elif x.shape[1] != size:
        x = tf.image.resize(x, (size, size))
    if cfg.rotation_degrees > 0:
        x = _rotate(x, seeds[1], cfg.rotation_degrees)
    if cfg.horizontal_flip:
        flip = _uniform([tf.shape(x)[0], 1, 1, 1], seeds[2], 0.0, 1.0) < 0.5
        x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    if cfg.color_jitter > 0:
        x = _colour(x, seeds[3], cfg.color_jitter)
    if cfg.blur_probability > 0:
        x = _blur(x, seeds[4], cfg.blur_probability)
    return x
