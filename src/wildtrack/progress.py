"""How long jobs report progress without knowing who listens: a plain ``advance(n)`` callable.

A display (the CLI's rich bar) may give it two optional attributes: ``set_total(n)``, to announce the size of
the job once it is known, and ``stage(description)``, which returns a new ``advance`` for the job's next
stage (another bar). Library code calls them through the helpers below, so any callable, or None, will do.
"""

from __future__ import annotations

from collections.abc import Callable

Advance = Callable[[int], None]


def announce_total(advance: Advance | None, total: int) -> None:
    """Tell a progress display how much work is coming, when it can listen (the CLI's bar can)."""
    set_total = getattr(advance, "set_total", None)
    if set_total is not None:
        set_total(total)


def next_stage(advance: Advance | None, description: str) -> Advance | None:
    """A progress callback for the job's next stage: a new bar when the display has stages, else None (a plain
    callback's counts belong to the stage it was made for)."""
    stage = getattr(advance, "stage", None)
    return stage(description) if stage is not None else None
