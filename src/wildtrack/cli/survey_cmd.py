"""``wildtrack survey …``: a field day's card of photos → encounters named against the catalogue → decisions."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from wildtrack.cli import checks
from wildtrack.cli.choices import ARTIFACTS_HELP, BACKEND_HELP, INDEX_HELP, Backend, SurveyGrouping
from wildtrack.cli.common import Command, Group, console, progress_bar, say, user_errors
from wildtrack.cli.model_cmds import ENGINE_HELP, RAY_ADDRESS_HELP, engine_for

app = typer.Typer(cls=Group, help="A field day end to end: group a card into encounters, name them, review, enrol.",
                  no_args_is_help=True)

GAP_HELP = ("Photos further apart in time than this start a new encounter, when the card is not sorted into "
            "sub-folders: 30s, 10m, 1h; a bare number means seconds.")
GROUPING_HELP = ("auto: one encounter per sub-folder when the photos lie in sub-folders, else by capture time "
                 "(EXIF DateTimeOriginal, else file time) cut at --gap and split by appearance; folders | time: "
                 "force one.")


@app.command("run", cls=Command)
def run(
    photos: Path = typer.Argument(..., help="The card: a folder of photos (searched recursively)."),
    index: Path = typer.Option(..., "--index", help=INDEX_HELP),
    artifacts: Path = typer.Option(..., "--artifacts", help=ARTIFACTS_HELP + " The one the index was built with."),
    out: Path = typer.Option(..., "--out", help="The survey folder to write (new or empty, unless --resume)."),
    gap: str = typer.Option("10m", "--gap", help=GAP_HELP),
    grouping: SurveyGrouping = typer.Option("auto", "--grouping", help=GROUPING_HELP),
    topk: int = typer.Option(5, "--topk", min=1, help="Candidates listed per encounter."),
    pictures: int = typer.Option(3, "--pictures", min=0, help="Match pictures drawn per encounter: the best pair of "
                                 "each of its first N candidates (about half a second each)."),
    resume: bool = typer.Option(False, "--resume", metavar="",
                                help="Continue a killed run in --out: finished stages and shards are reused."),
    backend: Backend = typer.Option("auto", "--backend", help=BACKEND_HELP),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Group the card into encounters, identify each against the catalogue, cluster the new turtles, and write
    survey.json, photos.csv, decisions.csv and the review page into --out."""
    from wildtrack.survey.encounters import parse_gap
    from wildtrack.survey.files import SurveyError

    with user_errors():
        checks.existing_folder(photos, "PHOTOS")
        checks.index_folder(index)
        checks.model_folder(artifacts)
        gap_s = parse_gap(gap)
        if out.is_dir() and any(out.iterdir()) and not resume:
            raise SurveyError(f"--out {out} already holds files (an earlier survey?): continue that run with "
                              "--resume, or give another --out")
    from wildtrack.survey.run import SurveySettings, run_survey

    with user_errors():
        settings = SurveySettings(gap_s=gap_s, grouping=grouping, topk=topk, pictures=pictures)
        with progress_bar("scanning", None) as advance:
            result = run_survey(photos, index, artifacts, out, settings, backend=backend,
                                engine=engine_for(engine, ray_address), resume=resume, progress=advance, say=say)
    c = result.counts
    settings_used = result.data["settings"]
    console.print("grouped by sub-folder" if settings_used["grouped_by"] == "folders" else
                  f"grouped by capture time (a new encounter after {gap} without a photo) and appearance")
    if result.resumed:
        console.print(f"reused from the killed run: {', '.join(result.resumed)}")
    console.print(f"{c['photos']} photo{_s(c['photos'])}: {c['ok']} used, {c['no_turtle']} without a turtle, "
                  f"{c['unreadable']} unreadable, {c['duplicate']} duplicate{_s(c['duplicate'])}")
    console.print(f"{c['encounters']} encounter{_s(c['encounters'])}: {c['confident']} confident, {c['review']} to "
                  f"review; {c['new_turtles']} new turtle{_s(c['new_turtles'])}")
    where = result.survey_dir
    console.print(f"wrote {escape(str(where))}: survey.json, photos.csv, decisions.csv"
                  + (", review.html" if result.review else ""))
    console.print("next: decide each encounter in decisions.csv (accept / reject / rename + final_identity), "
                      "then:", markup=False)
    console.print(f"  wildtrack survey apply {where} --index {index} --artifacts {artifacts}", markup=False)


def _s(n: int) -> str:
    """The plural ending of a count's noun: "1 encounter", "2 encounters", "0 encounters"."""
    return "" if n == 1 else "s"
