"""Cutting a trained classifier down to the embedding a gallery search needs."""

from __future__ import annotations

import keras

from wildtrack.model.layers import L2Normalize


class NoEmbeddingError(ValueError):
    """The model has neither an ``l2norm`` layer nor a softmax head to take an embedding from."""


def _single_input(model: keras.Model):
    """A one-input model's input tensor itself (not a one-item list), so calls take a plain array."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _softmax_input(model: keras.Model):
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if isinstance(last, keras.layers.Dense) and activation is keras.activations.softmax:
        return last.input
    if isinstance(last, keras.layers.Softmax | keras.layers.Activation) and len(model.layers) > 1:
        return model.layers[-2].input if isinstance(model.layers[-2], keras.layers.Dense) else last.input
    return None


def embedding_model(model: keras.Model) -> keras.Model:
    """The ``l2norm`` output if present; else the tensor feeding the softmax, L2-normalised; a model whose
    output is already a 2-D vector (a bare embedding model) is normalised as it is."""
    try:
        return keras.Model(_single_input(model), model.get_layer("l2norm").output, name="embedder")
    except ValueError:
        pass
    feeding = _softmax_input(model)
    if feeding is not None:
        return keras.Model(_single_input(model), L2Normalize(name="l2norm")(feeding), name="embedder")
    if len(model.outputs) == 1 and len(model.outputs[0].shape) == 2:
        return keras.Model(_single_input(model), L2Normalize(name="l2norm")(model.outputs[0]), name="embedder")
    raise NoEmbeddingError(
        f"model {model.name!r} has no 'l2norm' layer, no softmax classifier and no 2-D output to embed with"
    )
