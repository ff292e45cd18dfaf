"""``wildtrack search``: photos against the catalogue, one by one or as one encounter.

A photo that cannot be read is reported and skipped, the others are still answered, and the exit code says that
something was skipped (1), so a batch of fifty field photos is not lost to one truncated file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from wildtrack.cli import checks
from wildtrack.cli.choices import INDEX_HELP, Backend
from wildtrack.cli.common import Command, _is_user_error, console, err_console, fail, user_errors
from wildtrack.config import MAX_SEARCH_K

PARTIAL_EXIT = 1  # some photos answered, some unreadable


def search(
    images: list[Path] = typer.Argument(..., help="Photo(s) to identify."),
    index: Path = typer.Option(..., "--index", help=INDEX_HELP),
    artifacts: Path = typer.Option(..., "--artifacts", help="The model the index was built with."),
    topk: int = typer.Option(5, "--topk", "-k", min=1, max=MAX_SEARCH_K,
                             help="Gallery images (and turtles) to list per photo."),
    encounter: bool = typer.Option(
        False, "--encounter", metavar="",
        help="The photos show one turtle during one sighting: identify them together (the most confident "
             "photo's verdict, against the encounter threshold) instead of one by one."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Machine-readable output."),
    backend: Backend = typer.Option("auto", help="auto: the ONNX export when there is one, else Keras."),
    rerank: bool = typer.Option(True, "--rerank/--no-rerank", metavar="",
                                help="Use local re-ranking when the index was built with --rerank local."),
) -> None:
    """Rank the catalogue's identities and images for each photo, or for several photos of one encounter.

    Unreadable photos are reported and skipped; the exit code is then 1.
    """
    with user_errors():
        checks.index_folder(index)
        checks.model_folder(artifacts)
    import numpy as np

    from wildtrack.embed import embed_photo
    from wildtrack.search import open_catalogue
    from wildtrack.workflows.searching import encounter_answer, photo_answer

    with user_errors():
        embedder, searcher = open_catalogue(index, artifacts, backend, rerank=rerank)
    vectors, readable, local, failed = [], [], [], []
    for image in images:
        try:
            vector, pixels = embed_photo(embedder, image)  # decoded once, as the service does
            vectors.append(vector)
            local.append(pixels)
        except Exception as exc:
            if not _is_user_error(exc):
                raise
            failed.append({"image": str(image), "error": str(exc)})
            err_console.print(f"[bold red]skipped[/] {escape(str(exc))}")  # the message names the photo
        else:
            readable.append(image)
    if not readable:
        raise fail(f"none of the {len(images)} photo(s) could be read")
    with user_errors():
        if encounter:
            payload: Any = encounter_answer(searcher, np.stack(vectors), readable, topk, local)
        else:
            payload = [photo_answer(image, searcher.identify(v, pixels, topk), topk)
                       for image, v, pixels in zip(readable, vectors, local, strict=True)]
    if as_json:
        if not encounter:
            payload = payload + failed if failed else payload
            payload = payload[0] if len(images) == 1 else payload
        else:
            payload["skipped"] = failed
        typer.echo(json.dumps(payload, indent=2))
    elif encounter:
        _print_encounter(payload)
    else:
        for photo in payload:
            _print_photo(photo)
    if failed:
        err_console.print(f"[yellow]{len(failed)} of {len(images)} photos could not be read[/] "
                          "(named above); the others are answered")
        raise typer.Exit(PARTIAL_EXIT)


def _print_encounter(answer: dict) -> None:
    console.print(f"encounter of {len(answer['images'])} photos: {_verdict(answer['decision'])}")
    for photo in answer["photos"]:
        console.print(f"  {photo['image']}: {_verdict(photo['decision'])}")
    kind = "P(same)" if answer["reranked"] else "cosine"
    table = Table("identity", f"best {kind}", "closest in photos", "best catalogue image", title="turtles, best first")
    for c in answer["identities"]:
        table.add_row(c["identity"], f"{c['score']:.3f}", str(c["support"]), c["best_image_path"] or "-")
    console.print(table)


def _verdict(d: dict) -> str:
    who = "[bold yellow]new individual[/]" if d["is_unknown"] else f"[bold green]{d['identity']}[/]"
    kind = "P(same)" if d["score_kind"] == "match_probability" else "cosine"
    if d["score"] is None:
        return f"{who} (empty catalogue)"
    return f"{who} ({kind} {d['score']:.3f}" + (f", threshold {d['threshold']:.3f})" if d["threshold"] is not None
                                                  else ")")


def _print_photo(answer: dict) -> None:
    """The turtles, ordered by the score shown first (P(same) after re-ranking, else the cosine), then the
    catalogue photos in search order with their evidence."""
    console.print(f"{answer['image']}: {_verdict(answer['decision'])}")
    local = answer["reranked"]
    kind = "P(same)" if local else "cosine"
    turtles = Table("#", "identity", kind, *(("inliers", "cosine") if local else ()), "photos", "best image",
                    title="turtles, best first")
    for n, c in enumerate(answer["identities"], start=1):
        evidence = (_or_dash(c["inliers"]), _or_dash(c["cosine"], "{:.3f}")) if local else ()
        turtles.add_row(str(n), c["identity"], f"[bold]{c['score']:.3f}[/]", *evidence, str(c["support"]),
                        c.get("best_image_path") or "-")
    console.print(turtles)
    table = Table("rank", "identity", *(("P(same)", "inliers") if local else ()), "cosine", "image", "date",
                  title="catalogue photos, in search order" + (" (re-ranked)" if local else ""))
    for h in answer["hits"]:
        evidence = (_or_dash(h["match_probability"], "{:.3f}"), _or_dash(h["inliers"])) if local else ()
        table.add_row(str(h["rank"]), h["identity"], *evidence, f"{h['score']:.3f}", h["path"], h["date"] or "-")
    console.print(table)


def _or_dash(value: float | None, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(search)
