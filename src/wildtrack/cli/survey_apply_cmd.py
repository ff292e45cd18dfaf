"""``wildtrack survey review``, ``apply`` and ``history``: the end of a field day's loop.

``review`` renders ``review.html`` again after a person edited ``decisions.csv``; ``apply`` enrols what a person
accepted in ``decisions.csv`` and writes the sightings; ``history`` turns the catalogue's sightings into a capture
history for capture-recapture packages. Registered on the ``survey`` group by :func:`register`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from wildtrack.cli import checks
from wildtrack.cli.choices import ARTIFACTS_HELP, BACKEND_HELP, INDEX_HELP, Backend, HistoryFormat, SurveyOccasion
from wildtrack.cli.common import Command, console, fail, progress_bar, user_errors

REFUSED_EXIT = 1  # the survey folder, the photos or the catalogue do not allow the apply; the message says why


def review(
    survey: Path = typer.Argument(..., help="Survey folder written by `wildtrack survey run` (--out)."),
) -> None:
    """Render SURVEY/review.html again from survey.json and decisions.csv, after decisions.csv was edited.

    Prints the page's path and how many encounters are still undecided. Exit code 1, with the sheet's problems,
    when decisions.csv would be refused by apply: the page is still written, showing the run's own proposals under
    a banner that says what is wrong.
    """
    with user_errors():
        checks.existing_folder(survey, "SURVEY")
    from wildtrack.survey.decisions import read_decisions
    from wildtrack.survey.files import SurveyError, load_survey
    from wildtrack.survey.review import write_review

    with user_errors():
        try:
            page = write_review(survey)
            console.print(escape(f"wrote {page}"))
            rows = read_decisions(survey, load_survey(survey))
        except SurveyError as exc:
            raise fail(str(exc), code=REFUSED_EXIT) from None
    undecided = [r.encounter for r in rows if not r.decided]
    console.print(escape(f"{len(undecided)} encounter{'' if len(undecided) == 1 else 's'} undecided"
                         + (f": {', '.join(undecided)}" if undecided else "")))


def apply(
    survey: Path = typer.Argument(..., help="Survey folder written by `wildtrack survey run` (--out)."),
    index: Path = typer.Option(..., "--index", help=INDEX_HELP + " The catalogue the survey identified against."),
    artifacts: Path = typer.Option(..., "--artifacts", help=ARTIFACTS_HELP + " The model the index was built with."),
    backend: Backend = typer.Option("auto", help=BACKEND_HELP),
) -> None:
    """Enrol the accepted and renamed encounters of decisions.csv into the catalogue, in one commit.

    Undecided encounters are listed and left out: decide them and run apply again (what was applied is not
    enrolled twice). Writes SURVEY/sightings.csv and adds the sightings to the catalogue's sightings.csv.
    Exit code 1 when the decisions no longer match the photos or the catalogue.
    """
    with user_errors():
        checks.existing_folder(survey, "SURVEY")
        checks.index_folder(index)
        checks.model_folder(artifacts)
    from wildtrack.survey.apply import apply_survey
    from wildtrack.survey.files import SurveyError

    with user_errors():
        try:
            with progress_bar("embedding the accepted photos", None, lazy=True) as advance:
                report = apply_survey(survey, index, artifacts, backend=backend, progress=advance)
        except SurveyError as exc:
            raise fail(str(exc), code=REFUSED_EXIT) from None
    for line in report.lines():
        console.print(escape(line))


def history(
    index: Path = typer.Option(..., "--index", help=INDEX_HELP + " Its sightings.csv is read (survey apply)."),
    out: Path = typer.Option(..., "--out", help="CSV file to write the capture history to."),
    occasion: SurveyOccasion = typer.Option("day", "--occasion",
                                      help="day: one column per survey day; survey: one column per applied survey."),
    fmt: HistoryFormat = typer.Option(
        "wide", "--format",
        help="wide: id then one 0/1 column per occasion (Rcapture, pymc examples); rmark: ch (the 0/1 string) and "
             "id, RMark's input."),
    include_catalogue: bool = typer.Option(
        False, "--include-catalogue", metavar="",
        help="Also count the catalogue's own dated photos as captures on their day (only with --occasion day)."),
) -> None:
    """Write a capture history (one row per turtle, one 0/1 column per occasion) from the catalogue's sightings.

    The format is described in docs/survey.md ("Capture history"). Exit code 1 when there is nothing to write.
    """
    with user_errors():
        checks.index_folder(index)
        if out.is_dir():
            raise checks.UsageError(f"--out {out}: a folder; give the CSV file to write, e.g. {out / 'history.csv'}")
    from wildtrack.survey.files import SurveyError
    from wildtrack.survey.history import capture_history, write_history

    with user_errors():
        try:
            individuals, occasions, matrix = capture_history(index, occasion, include_catalogue=include_catalogue)
            path = write_history(out, individuals, occasions, matrix, fmt)
        except SurveyError as exc:
            raise fail(str(exc), code=REFUSED_EXIT) from None
    turtles, columns = len(individuals), len(occasions)
    console.print(escape(f"wrote the capture history of {turtles} turtle{'' if turtles == 1 else 's'} over "
                         f"{columns} occasion{'' if columns == 1 else 's'} ({occasion}, {fmt} format) to {path}"))


def register(group: typer.Typer) -> None:
    """Add ``review``, ``apply`` and ``history`` to the ``survey`` command group."""
    group.command("review", cls=Command)(review)
    group.command("apply", cls=Command)(apply)
    group.command("history", cls=Command)(history)
