"""Training: losses, batch samplers, augmentation and the fit loop."""

from wildtrack.train.trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
