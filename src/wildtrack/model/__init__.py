"""Models: backbone registry, heads, custom layers, artifact files."""

from wildtrack.model.artifacts import ArtifactError, load_model, load_preprocessor, model_fingerprint
from wildtrack.model.backbones import BACKBONES, Backbone, WeightsUnavailableError, get_backbone
from wildtrack.model.builder import build_model, set_backbone_trainable
from wildtrack.model.embedding import NoEmbeddingError, embedding_model
from wildtrack.model.layers import CosineClassifier, L2Normalize

__all__ = [
    "BACKBONES", "ArtifactError", "Backbone", "CosineClassifier", "L2Normalize", "NoEmbeddingError",
    "WeightsUnavailableError", "build_model", "embedding_model", "get_backbone", "load_model",
    "load_preprocessor", "model_fingerprint", "set_backbone_trainable",
]
