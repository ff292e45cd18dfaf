"""Losses for re-identification: softmax with label smoothing, ArcFace margins, triplet with mining.

All are plain functions of ``(y_true, y_pred)`` with integer identity labels, so Keras ``fit`` drives them.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _labels(y_true: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.reshape(y_true, [-1]), tf.int32)


def softmax_loss(num_classes: int, label_smoothing: float = 0.1):
    """Cross-entropy on softmax probabilities with smoothed one-hot targets."""

    def loss(y_true, y_pred):
        onehot = tf.one_hot(_labels(y_true), num_classes)
        return tf.keras.losses.categorical_crossentropy(onehot, y_pred, label_smoothing=label_smoothing)

    return loss


def arcface_logits(cosine: tf.Tensor, labels: tf.Tensor, margin: float, scale: float) -> tf.Tensor:
    """Add the angular margin ``m`` to each sample's own class: ``s·cos(θ_y + m)``, other classes ``s·cos θ``.

    Where ``θ + m`` would pass π the curve is continued linearly (as in insightface), keeping it monotonic.
    """
    cosine = tf.clip_by_value(cosine, -1.0 + 1e-7, 1.0 - 1e-7)
    sine = tf.sqrt(1.0 - tf.square(cosine))
    with_margin = cosine * math.cos(margin) - sine * math.sin(margin)
    threshold = math.cos(math.pi - margin)
    with_margin = tf.where(cosine > threshold, with_margin, cosine - math.sin(math.pi - margin) * margin)
    onehot = tf.one_hot(labels, tf.shape(cosine)[-1], dtype=cosine.dtype)
    return scale * (onehot * with_margin + (1.0 - onehot) * cosine)


def arcface_loss(num_classes: int, margin: float = 0.3, scale: float = 30.0, label_smoothing: float = 0.0):
    """ArcFace (additive angular margin) on the cosine outputs of a ``CosineClassifier`` head."""

    def loss(y_true, y_pred):
        labels = _labels(y_true)
        logits = arcface_logits(y_pred, labels, margin, scale)
        onehot = tf.one_hot(labels, num_classes)
        return tf.keras.losses.categorical_crossentropy(
            onehot, logits, from_logits=True, label_smoothing=label_smoothing
        )

    return loss


def pairwise_distances(embeddings: tf.Tensor) -> tf.Tensor:
    """Euclidean distances between unit vectors: ``sqrt(2 - 2 cos)``."""
    cos = tf.matmul(embeddings, embeddings, transpose_b=True)
    return tf.sqrt(tf.maximum(2.0 - 2.0 * cos, 1e-12))


def _masks(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


def batch_hard_triplet(labels: tf.Tensor, embeddings: tf.Tensor, margin: float) -> tf.Tensor:
    """Per anchor: its farthest positive against its nearest negative (Hermans et al., 2017)."""
    d = pairwise_distances(embeddings)
    pos, neg = _masks(labels)
    hardest_pos = tf.reduce_max(tf.where(pos, d, 0.0), axis=1)
    hardest_neg = tf.reduce_min(tf.where(neg, d, 1e9), axis=1)
    valid = tf.logical_and(tf.reduce_any(pos, axis=1), tf.reduce_any(neg, axis=1))
    losses = tf.nn.relu(hardest_pos - hardest_neg + margin)
    return tf.reduce_sum(tf.where(valid, losses, 0.0)) / tf.maximum(tf.reduce_sum(tf.cast(valid, tf.float32)), 1.0)


def semi_hard_triplet(labels: tf.Tensor, embeddings: tf.Tensor, margin: float) -> tf.Tensor:
    """Per positive pair (a, p): the nearest negative still farther than p (FaceNet's semi-hard rule);
    when no negative is farther, the farthest negative is used."""
    d = pairwise_distances(embeddings)
    pos, neg = _masks(labels)
    d_ap = d[:, :, None]  # [a, p, 1]
    d_an = d[:, None, :]  # [a, 1, n]
    neg3 = neg[:, None, :]
    semi = tf.logical_and(neg3, d_an > d_ap)
    nearest_semi = tf.reduce_min(tf.where(semi, d_an, 1e9), axis=2)
    farthest_neg = tf.reduce_max(tf.where(neg3, d_an, -1e9), axis=2)
    chosen = tf.where(tf.reduce_any(semi, axis=2), nearest_semi, farthest_neg)
    valid = tf.logical_and(pos, tf.reduce_any(neg, axis=1)[:, None])
    losses = tf.nn.relu(d - chosen + margin)
    return tf.reduce_sum(tf.where(valid, losses, 0.0)) / tf.maximum(tf.reduce_sum(tf.cast(valid, tf.float32)), 1.0)


def triplet_loss(margin: float = 0.3, mining: str = "batch-hard"):
    """Triplet loss on ``l2norm`` embeddings of a P×K batch."""
    miners = {"batch-hard": batch_hard_triplet, "semi-hard": semi_hard_triplet}
    if mining not in miners:
        raise ValueError(f"unknown triplet mining {mining!r}; choose {', '.join(miners)}")
    mine = miners[mining]

    def loss(y_true, y_pred):
        value = mine(_labels(y_true), y_pred, margin)
        return tf.fill(tf.shape(y_pred)[:1], value)  # Keras averages per-sample losses

    return loss
