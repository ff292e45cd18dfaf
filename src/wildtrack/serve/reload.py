"""Noticing that another process (``wildtrack index add``, a second server) committed a new generation.

Each request stats ``manifest.json`` (microseconds, on the event loop); only when its inode, size or mtime
changed is the manifest read for its generation, and only a new generation triggers a reload.
"""

from __future__ import annotations

import os
from pathlib import Path

from wildtrack.index import MANIFEST as MANIFEST_FILE
from wildtrack.index import committed_generation

__all__ = ["MANIFEST_FILE", "ManifestWatch", "committed_generation"]


class ManifestWatch:
    """``changed()`` is true once per change of the manifest file since the last call."""

    def __init__(self, index_dir: Path) -> None:
        self.path = index_dir / MANIFEST_FILE
        self._seen: tuple[int, int, int] | None = None  # the first request compares generations once

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True

    def forget(self) -> None:
        """Make the next ``changed()`` true again (the reload was postponed)."""
        self._seen = None
