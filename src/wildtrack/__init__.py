"""WildTrack: which sea turtle is this? Train, evaluate, search and serve re-identification models.

Importing it is cheap (no TensorFlow); whenever Keras gets imported, before or after, WildTrack's layers are
registered with it, so ``keras.models.load_model("model.keras")`` needs no ``custom_objects``.
"""

import importlib

from wildtrack._import_hooks import on_import

__version__ = "0.1.0"

on_import("keras", after=lambda: importlib.import_module("wildtrack.model.layers"))
