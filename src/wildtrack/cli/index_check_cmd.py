"""``wildtrack index check``: what is damaged in a catalogue on disk, and (``--repair``) fixing it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from wildtrack.cli.common import console, err_console, progress_bar, user_errors


def check(
    index: Path = typer.Option(..., "--index", help="The index directory to check."),
    repair: bool = typer.Option(False, "--repair", metavar="",
                                help="Fix what was found: re-extract missing or damaged local features from the "
                                "photos, drop rows whose photo is gone or unreadable (logged; one new generation)."),
) -> None:
    """Verify every feature file's sha256, every photo's readability, and that rows, features and files agree.

    Exit code 0: nothing wrong (or repaired); 1: problems found (run again with --repair to fix them)."""
    from wildtrack.workflows.index_check import check_index

    with user_errors(), progress_bar("checking photos", None) as advance:
        report = check_index(index, repair=repair, progress=advance)
    console.print(f"{report.index_dir}: {report.rows} rows, {report.photos_checked} photos and "
                  f"{report.shards_checked} feature files checked")
    for problem in report.problems:
        err_console.print(f"[yellow]problem[/] {escape(problem.what)}")
        if not repair:
            err_console.print(f"   --repair would: {escape(problem.repair)}")
    for line in report.repaired:
        console.print(f"[green]repaired[/] {escape(line)}")
    if report.ok:
        console.print("no problems found")
    elif not repair:
        raise typer.Exit(1)


def register(index_app: typer.Typer) -> None:
    index_app.command("check")(check)
