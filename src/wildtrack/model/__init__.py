"""Models: backbone registry, heads, custom layers, artifact files.

Names are imported lazily: reading artifacts (preprocessor, fingerprints) for the ONNX backend must not pull in
TensorFlow, which costs seconds of start-up and about a gigabyte of memory.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ArtifactError": "artifacts", "load_model": "artifacts", "load_preprocessor": "artifacts",
    "model_fingerprint": "artifacts",
    "BACKBONES": "backbones", "Backbone": "backbones", "WeightsUnavailableError": "errors",
    "get_backbone": "backbones",
    "build_model": "builder", "head_for_loss": "builder", "set_backbone_trainable": "builder",
    "NoEmbeddingError": "embedding", "embedding_model": "embedding",
    "CosineClassifier": "layers", "L2Normalize": "layers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wildtrack.model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"wildtrack.model.{_EXPORTS[name]}"), name)
