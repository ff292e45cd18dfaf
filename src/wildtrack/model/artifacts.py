"""Artifacts users keep for years: the model files, ``preprocessor.pkl`` and ``model_config.yaml``.

``preprocessor.pkl`` holds plain Python data only and is read back with an unpickler that refuses every
class, so a crafted file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import yaml

from wildtrack.atomic import atomic_write_bytes

PREPROCESSOR_FORMAT = 1
MODEL_KERAS = "model.keras"
MODEL_H5 = "model.h5"
MODEL_WEIGHTS_H5 = "model.weights.h5"
PREPROCESSOR = "preprocessor.pkl"
MODEL_CONFIG = "model_config.yaml"


class ArtifactError(ValueError):
    """Artifacts are missing, unsafe or of an unknown format."""


class _PlainDataUnpickler(pickle.Unpickler):
    """Rebuilds only builtins (dict, list, str, numbers, tuples, sets): any class reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise ArtifactError(
            f"refusing to load {module}.{name} from a preprocessor file: only plain data is allowed "
            "(this file was not written by WildTrack, or was tampered with)"
        )


def save_preprocessor(data: dict[str, Any], path: Path) -> None:
    payload = {"format_version": PREPROCESSOR_FORMAT, **data}
    atomic_write_bytes(path, pickle.dumps(payload, protocol=4))
    load_preprocessor(path)  # never leave a file we cannot read back


def load_preprocessor(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (train a model first: wildtrack train)")
    try:
        data = _PlainDataUnpickler(io.BytesIO(path.read_bytes())).load()
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the same "bad file" to a user
        raise ArtifactError(f"{path}: not a readable preprocessor file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format_version") != PREPROCESSOR_FORMAT:
        raise ArtifactError(f"{path}: unknown preprocessor format {data.get('format_version')!r}")
    return data


def save_model_config(config: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode())


def load_model_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def save_model_files(model: Any, out: Path, h5_supported: bool = True) -> list[Path]:
    """Write ``model.keras`` and ``model.h5`` (or ``model.weights.h5`` where legacy h5 cannot round-trip).

    Each file is written under a temporary name and renamed, so an interrupted save keeps the previous one.
    """
    written = []
    targets = [(MODEL_KERAS, ".keras")]
    targets.append((MODEL_H5, ".h5") if h5_supported else (MODEL_WEIGHTS_H5, ".weights.h5"))
    for name, suffix in targets:
        final = out / name
        tmp = out / f"tmp_{os.getpid()}{suffix}"
        if suffix == ".weights.h5":
            model.save_weights(tmp)
        else:
            model.save(tmp)
        os.replace(tmp, final)
        written.append(final)
    return written


def load_model(artifacts: str | Path, compile: bool = False) -> Any:
    """Load ``model.keras``, falling back to ``model.h5``; WildTrack's layers need no custom_objects."""
    import keras

    from wildtrack.model.layers import CUSTOM_OBJECTS

    artifacts = Path(artifacts)
    candidates = [artifacts] if artifacts.is_file() else [artifacts / MODEL_KERAS, artifacts / MODEL_H5]
    errors = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=compile)
        except Exception as exc:  # noqa: BLE001 - try the next format, report all failures together
            errors.append(f"{path.name}: {type(exc).__name__}: {exc}")
    if errors:
        raise ArtifactError(f"could not load a model from {artifacts}:\n  " + "\n  ".join(errors))
    raise ArtifactError(f"{artifacts}: no {MODEL_KERAS} or {MODEL_H5} found (train one with: wildtrack train)")


def file_fingerprint(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]


def model_fingerprint(artifacts: str | Path) -> str:
    """A stable id of the trained weights: the hash of ``model.keras`` (or ``model.h5``)."""
    artifacts = Path(artifacts)
    for name in (MODEL_KERAS, MODEL_H5):
        if (artifacts / name).is_file():
            return file_fingerprint(artifacts / name)
    if artifacts.is_file():
        return file_fingerprint(artifacts)
    raise ArtifactError(f"{artifacts}: no model file to fingerprint")
