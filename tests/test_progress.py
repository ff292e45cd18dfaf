"""Progress reporting works with any callable, and with a display that has totals and stages."""

from __future__ import annotations

from wildtrack.progress import announce_total, next_stage


def test_a_plain_callable_or_none_needs_no_totals_or_stages():
    counts: list[int] = []
    announce_total(counts.append, 10)
    announce_total(None, 10)
    assert next_stage(counts.append, "later") is None and next_stage(None, "later") is None
    assert counts == []


def test_a_display_with_stages_gets_one_bar_per_stage():
    bars: dict[str, list[int]] = {}

    def bar(description: str):
        bars[description] = []

        def advance(n: int = 1) -> None:
            bars[description].append(n)

        advance.set_total = lambda n: bars[description].append(-n)
        advance.stage = bar
        return advance

    first = bar("embedding")
    announce_total(first, 3)
    second = next_stage(first, "matching")
    second(2)
    assert bars == {"embedding": [-3], "matching": [2]}
