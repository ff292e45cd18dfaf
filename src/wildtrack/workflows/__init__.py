"""End-to-end jobs composed from the library's stages (what the CLI's bigger commands call)."""

from __future__ import annotations

from collections.abc import Callable

from wildtrack.progress import Advance, announce_total, next_stage

__all__ = ["Advance", "Log", "announce_total", "next_stage"]

Log = Callable[[str], None]
