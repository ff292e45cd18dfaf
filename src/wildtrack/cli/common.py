"""What every command shares: the console, progress bars, and turning library errors into exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperCommand, TyperGroup


class _HelpWithoutType:
    """``--help`` listed without a ``<bool>`` type (typer gives its own help flag one; ours have none)."""

    def get_help_option(self, ctx):  # type: ignore[no-untyped-def]
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class Command(_HelpWithoutType, TyperCommand):
    """Every ``wildtrack`` command: ``app.command(cls=Command)``."""


class Group(_HelpWithoutType, TyperGroup):
    """Every ``wildtrack`` command group: ``typer.Typer(cls=Group)``."""


console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def quiet_libraries() -> None:
    """Hide TensorFlow's start-up lines (oneDNN, absl, CUDA probing) and its C++ warnings, unless ``--verbose``.

    Must run before TensorFlow is imported: its logging reads TF_CPP_MIN_LOG_LEVEL once, and the lines printed
    while its libraries load come before any setting is read, so that import runs with stderr pointed away.
    """
    from wildtrack._import_hooks import on_import, silenced_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    on_import("tensorflow", around=silenced_stderr)
    logging.getLogger("absl").setLevel(logging.ERROR)


def say(message: str) -> None:
    """Print a library log line verbatim (no rich markup: "[head]" is text here, not a style)."""
    console.print(message, markup=False)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, lazy: bool = False) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields ``advance(n)``, whose ``set_total(n)`` lets a job announce its size once it
    knows it (after reading the dataset) and whose ``stage(description)`` adds the bar of the job's next stage
    (see :mod:`wildtrack.progress`). ``lazy``: the bar appears on the job's first report (a job that may have
    nothing to do, or that may refuse first, draws none)."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=False) as bar:

        def task_advance(task_description: str, task_total: int | None, lazy: bool) -> Callable[..., None]:
            """A bar's advance; a stage's bar appears on its first report, so a stage that fails before doing
            any work (e.g. a catalogue that cannot be fitted) leaves no empty bar behind."""
            tasks: list[TaskID] = [] if lazy else [bar.add_task(task_description, total=task_total)]

            def task() -> TaskID:
                if not tasks:
                    tasks.append(bar.add_task(task_description, total=task_total))
                return tasks[0]

            def advance(n: int = 1) -> None:
                bar.advance(task(), n)

            advance.set_total = lambda n: bar.update(task(), total=n)  # type: ignore[attr-defined]
            advance.stage = lambda d: task_advance(d, None, lazy=True)  # type: ignore[attr-defined]
            return advance

        yield task_advance(description, total, lazy=lazy)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def plain_config_error(exc: Exception, options: dict[str, str] | None = None) -> str:
    """A pydantic ValidationError in words that name the command-line option (``--epochs 0: must be at least
    1``), without pydantic's dump and link. ``options`` maps a config field to its option where the two differ."""
    words = {"greater_than_equal": "must be at least {ge}", "greater_than": "must be more than {gt}",
             "less_than_equal": "must be at most {le}", "less_than": "must be less than {lt}"}
    lines = []
    for error in exc.errors():  # type: ignore[attr-defined]
        field = ".".join(str(part) for part in error.get("loc", ()))
        template = words.get(error.get("type", ""))
        reason = template.format(**error.get("ctx", {})) if template else str(error.get("msg", ""))
        reason = reason.removeprefix("Value error, ").removeprefix("Input ")
        if not field:
            lines.append(reason)
            continue
        option = (options or {}).get(field) or "--" + field.split(".")[-1].replace("_", "-")
        given = error.get("input")
        lines.append(f"{option} {given}: {reason}" if isinstance(given, int | float | str) else f"{option}: {reason}")
    return "; ".join(lines)


USER_ERRORS = {"DatasetError", "SplitError", "ImageError", "ArtifactError", "NoEmbeddingError",
               "WeightsUnavailableError", "WeightImportError", "ExportError", "GalleryIndexError", "ValidationError"}


def _is_user_error(exc: BaseException) -> bool:
    """Errors a user can act on (bad input, missing files, incompatible artifacts), matched by class name so
    that showing them never imports TensorFlow."""
    return isinstance(exc, FileNotFoundError | ValueError) or any(c.__name__ in USER_ERRORS for c in type(exc).__mro__)


@contextlib.contextmanager
def user_errors(options: dict[str, str] | None = None) -> Iterator[None]:
    """Show library errors a user can act on as one red line (exit 2), not a traceback; show warnings plainly.
    ``options``: config fields whose command-line option has another name (see :func:`plain_config_error`)."""

    def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}")

    logging.getLogger("absl").setLevel(logging.ERROR)  # Keras' "HDF5 is legacy" notice: we write .h5 on purpose
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        warnings.filterwarnings("ignore", category=UserWarning, module="keras")
        try:
            yield
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            raise fail("interrupted", code=130) from None
        except Exception as exc:
            if type(exc).__name__ == "ValidationError" and hasattr(exc, "errors"):
                raise fail(plain_config_error(exc, options)) from None
            if _is_user_error(exc):
                raise fail(str(exc)) from None
            raise
