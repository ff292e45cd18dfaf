"""End-to-end jobs composed from the library's stages (what the CLI's bigger commands call)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]
Advance = Callable[[int], None]


def announce_total(advance: Advance | None, total: int) -> None:
    """Tell a progress display how much work is coming, when it can listen (the CLI's bar can)."""
    set_total = getattr(advance, "set_total", None)
    if set_total is not None:
        set_total(total)
