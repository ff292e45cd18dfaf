"""Identity names a person can tell apart: no invisible characters, no look-alike of a catalogued individual.

A catalogue lists individuals by name, and people pick them from a list: ``t001`` followed by a combining grapheme
joiner, or spelled with a Cyrillic ``т``, would be a second turtle that nobody can tell from the first. Two rules:

* characters that show nothing (Unicode format characters, fillers such as U+3164 and U+2800, spaces other than
  the plain one, a combining mark with nothing to combine with) are refused;
* a new name whose *skeleton* equals a catalogued one's is refused, naming it. The skeleton follows Unicode TR39's
  idea (NFKC, case folded, each letter replaced by the Latin letter it is drawn like); the table below holds the
  Cyrillic and Greek letters that are drawn like Latin ones, the mix-ups a keyboard layout produces.
"""

from __future__ import annotations

import unicodedata

# Code points that render as nothing (or as blank space) although their category is a letter or a symbol.
_INVISIBLE = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0, 0x180E, 0x2028, 0x2029]
    + list(range(0x180B, 0x1810))  # Mongolian variation selectors
    + list(range(0xFE00, 0xFE10))  # variation selectors
    + list(range(0xE0100, 0xE01F0))  # variation selectors supplement
)

# Lower-case Cyrillic and Greek letters drawn like a Latin letter (after NFKC and case folding).
_LATIN_LOOK_ALIKES = {
    "а": "a", "в": "b", "г": "r", "е": "e", "ё": "e", "з": "3", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m",
    "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ь": "b", "ц": "u",
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
}


def invisible_characters(name: str) -> list[str]:
    """The characters of ``name`` that show nothing, as ``U+XXXX NAME`` (empty when it is fine)."""
    bad = []
    for n, c in enumerate(name):
        cat = unicodedata.category(c)
        if (ord(c) in _INVISIBLE or cat.startswith("C") or cat in ("Zl", "Zp") or (cat == "Zs" and c != " ")
                or (n == 0 and cat.startswith("M"))):
            bad.append(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}")
    return bad


def skeleton(name: str) -> str:
    """What ``name`` looks like: two names with one skeleton are read as the same name."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(_LATIN_LOOK_ALIKES.get(c, c) for c in unicodedata.normalize("NFKC", folded)
                   if ord(c) not in _INVISIBLE).strip()


def drawn_alike(name: str, catalogued: dict[str, int]) -> str | None:
    """A catalogued identity other than ``name`` that is drawn like it (case, script look-alikes), or None."""
    key = skeleton(name)
    for existing in catalogued:
        if existing != name and skeleton(existing) == key:
            return existing
    return None
