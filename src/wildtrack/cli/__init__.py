"""``wildtrack``: a thin command-line shell over the library. Each command parses, calls one function, reports."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the user's way

import typer  # noqa: E402

from wildtrack import __version__  # noqa: E402
from wildtrack.cli import data_cmd, model_cmds  # noqa: E402

app = typer.Typer(
    name="wildtrack",
    help="Which turtle is this? Train, evaluate, search and serve individual re-identification models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")
model_cmds.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wildtrack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """WildTrack command line."""


def main() -> None:
    app()
