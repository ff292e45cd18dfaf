"""Checks of paths and values that a command makes before it imports the model stack.

Loading TensorFlow takes seconds; a typo in ``--data`` should be answered at once, in words that name the
option. These checks import nothing heavy (no TensorFlow, FAISS or OpenCV), so they can run first.
"""

from __future__ import annotations

import os
from pathlib import Path

from wildtrack.model.artifacts import PREPROCESSOR

INDEX_MANIFEST = "manifest.json"  # wildtrack.index.files.MANIFEST, named here so that checking imports no FAISS


class UsageError(ValueError):
    """A command-line value that cannot work; the message names the option."""


def _is_url(value: str | Path) -> bool:
    text = str(value)
    return "://" in text and not text.startswith("file://")


def _existing(path: str | Path, option: str, folder: bool) -> None:
    """``option`` must name a folder (or a file) that exists; object-storage URLs are checked later, by their
    reader."""
    if _is_url(path):
        return
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{option} {p}: no such {'folder' if folder else 'file'}")
    if folder and not p.is_dir():
        raise UsageError(f"{option} {p}: not a folder")
    if not folder and p.is_dir():
        raise UsageError(f"{option} {p}: a folder, not a file")


def existing_folder(path: str | Path, option: str) -> None:
    _existing(path, option, folder=True)


def model_folder(path: str | Path, option: str = "--artifacts") -> None:
    """A folder written by ``wildtrack train`` (every backend reads its ``preprocessor.pkl``)."""
    existing_folder(path, option)
    if not (Path(path) / PREPROCESSOR).is_file():
        raise UsageError(f"{option} {path}: not a model folder (no {PREPROCESSOR}; "
                         "train a model first: wildtrack train)")


def index_folder(path: str | Path, option: str = "--index") -> None:
    """A folder written by ``wildtrack index build``."""
    existing_folder(path, option)
    if not (Path(path) / INDEX_MANIFEST).is_file():
        raise UsageError(f"{option} {path}: not a catalogue index (no {INDEX_MANIFEST}; "
                         "build one first: wildtrack index build)")


def existing_file(path: str | Path, option: str) -> None:
    _existing(path, option, folder=False)


def writable_folder(path: str | Path, option: str) -> None:
    """``option`` names a folder the command may create and write into; it is created now, so that a bad
    place (``/proc/…``, a read-only disk, a file in the way) is reported before any work."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{option} {p}: a file is in the way (a folder is needed)") from None
    except OSError as exc:
        raise UsageError(f"{option} {p}: cannot create this folder ({exc.strerror or exc})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {p}: this folder cannot be written to")


def at_least(value: int | float | None, minimum: int | float, option: str) -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{option} {value}: must be at least {minimum}")
