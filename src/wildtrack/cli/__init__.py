"""``wildtrack``: a thin command-line shell over the library. Each command parses, calls one function, reports."""

from __future__ import annotations

import typer

from wildtrack import __version__
from wildtrack.cli import data_cmd, index_check_cmd, model_cmds, search_cmd, survey_apply_cmd, survey_cmd
from wildtrack.cli.common import Group, quiet_libraries

app = typer.Typer(
    cls=Group,
    name="wildtrack",
    help="Which turtle is this? Train, evaluate, search and serve individual re-identification models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")
model_cmds.register(app)
search_cmd.register(app)
index_check_cmd.register(model_cmds.index_app)
survey_apply_cmd.register(survey_cmd.app)
app.add_typer(survey_cmd.app, name="survey")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wildtrack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="",
                                 help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", metavar="",
                                 help="Show TensorFlow's and Keras' own start-up and progress lines (hidden by "
                                      "default). Give it before the command: wildtrack --verbose train ..."),
) -> None:
    """WildTrack command line."""
    if not verbose:
        quiet_libraries()


def main() -> None:
    app()
