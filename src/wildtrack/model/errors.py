"""Errors of the model package, apart from the modules that raise them (so none imports another for them)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (typically: offline)."""
