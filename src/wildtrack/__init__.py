"""WildTrack: which sea turtle is this? Train, evaluate, search and serve re-identification models."""

__version__ = "0.1.0"
