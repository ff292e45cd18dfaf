"""What every command shares: the console, progress bars, and turning library errors into exit codes."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """Print a library log line verbatim (no rich markup: "[head]" is text here, not a style)."""
    console.print(message, markup=False)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[callable]:
    """A rich progress bar; yields ``advance(n)``."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show library errors a user can act on as one red line (exit 2), not a traceback; show warnings plainly."""
    from wildtrack.data import DatasetError, SplitError
    from wildtrack.images import ImageError
    from wildtrack.model import ArtifactError, NoEmbeddingError, WeightsUnavailableError

    def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        err_console.print(f"[yellow]warning:[/] {message}")

    from wildtrack.model.export import ExportError

    known = (DatasetError, SplitError, ImageError, ArtifactError, NoEmbeddingError, WeightsUnavailableError,
             ExportError, FileNotFoundError, ValueError)
    logging.getLogger("absl").setLevel(logging.ERROR)  # Keras' "HDF5 is legacy" notice: we write .h5 on purpose
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        warnings.filterwarnings("ignore", category=UserWarning, module="keras")
        try:
            yield
        except typer.Exit:
            raise
        except known as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", code=130) from None
