"""What a new user meets in the first hour of the command line: a mistyped path or a bad value is answered at
once, in words that name the option, before the model stack (TensorFlow) is imported, before any progress bar
and before "serving on" is claimed; help text shows every bracket it was written with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wildtrack.cli import app

runner = CliRunner()
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "COLUMNS": "200"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter with ``-X importtime``, so stderr lists every module it imported."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "wildtrack.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=120)


def imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def said(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


def test_importtime_lists_tensorflow_when_the_model_stack_loads():
    """The detector the tests below rely on does see TensorFlow when it is imported."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import wildtrack.embed, tensorflow"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert "tensorflow" in imported(out.stderr)


@pytest.mark.parametrize("args, expected", [
    (["evaluate", "--data", "{missing}", "--artifacts", "{artifacts}"], "--data {missing}: no such folder"),
    (["evaluate", "--data", "{data}", "--artifacts", "{missing}"], "--artifacts {missing}: no such folder"),
    (["evaluate", "--data", "{data}", "--artifacts", "{data}"], "--artifacts {data}: not a model folder"),
    (["index", "build", "--data", "{missing}", "--artifacts", "{artifacts}", "--out", "{tmp}/index"],
     "--data {missing}: no such folder"),
    (["index", "build", "--data", "{data}", "--artifacts", "{missing}", "--out", "{tmp}/index"],
     "--artifacts {missing}: no such folder"),
    (["index", "add", "--index", "{missing}", "--artifacts", "{artifacts}"], "--index {missing}: no such folder"),
    (["index", "add", "--index", "{data}", "--artifacts", "{artifacts}"], "--index {data}: not a catalogue index"),
    (["search", "{data}/t000/t000_000.jpg", "--index", "{missing}", "--artifacts", "{artifacts}"],
     "--index {missing}: no such folder"),
    (["serve", "--index", "{missing}", "--artifacts", "{artifacts}"], "--index {missing}: no such folder"),
    (["train", "--data", "{missing}", "--out", "{tmp}/model"], "--data {missing}: no such folder"),
    (["train", "--data", "{data}", "--out", "{tmp}/model", "--epochs", "0"], "--epochs 0: must be at least 1"),
    (["train", "--data", "{data}", "--out", "{tmp}/model", "--lr", "0"], "--lr 0.0: must be more than 0"),
    (["export", "--artifacts", "{missing}"], "--artifacts {missing}: no such folder"),
    (["demo", "--out", "/proc/nope"], "--out /proc/nope: cannot create this folder"),
    (["data", "inspect", "{missing}"], "{missing}: no such folder"),
])
def test_a_bad_path_or_value_is_answered_before_tensorflow_loads(args, expected, synth_data, tmp_path):
    names = {"missing": str(tmp_path / "nope"), "data": str(synth_data), "tmp": str(tmp_path),
             "artifacts": str(tmp_path)}  # an existing folder; the check on the first bad path answers first
    result = run_cli(*(a.format(**names) for a in args))
    message = said(result.stderr)
    assert result.returncode == 2, message
    assert expected.format(**names) in message, message
    assert "tensorflow" not in imported(result.stderr), "TensorFlow was imported before the error"
    assert "embedding" not in message and "serving on" not in message, message  # no bar, no false claim
    assert "Traceback" not in message and "pydantic" not in message and "Errno" not in message, message


def test_config_errors_are_plain_words_naming_the_option(synth_data, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(synth_data), "--out", str(tmp_path / "m"),
                                 "--batch-size", "1"])
    assert result.exit_code == 2
    assert "--batch-size 1: must be at least 2" in result.output, result.output
    assert "validation error" not in result.output and "errors.pydantic.dev" not in result.output


def test_synth_refuses_zero_identities_before_drawing_a_bar(tmp_path):
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "s"), "--identities", "0"])
    assert result.exit_code == 2
    assert "--identities" in result.output and "generating" not in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_serve_refuses_an_open_host_without_a_token_before_loading_or_serving(tiny_artifacts, reranked_index):
    result = run_cli("serve", "--index", str(reranked_index), "--artifacts", str(tiny_artifacts),
                     "--host", "0.0.0.0")
    message = said(result.stderr)
    assert result.returncode == 2, message
    assert "refusing to listen on 0.0.0.0 without an API token" in message, message
    assert "serving on" not in message and "Traceback" not in message, message
    assert "tensorflow" not in imported(result.stderr)


def test_a_non_image_photo_is_named_once_in_plain_words(tmp_path):
    from wildtrack.images import ImageError, open_image

    photo = tmp_path / "notaphoto.jpg"
    photo.write_text("a note, not a photo")
    with pytest.raises(ImageError) as caught:
        open_image(photo)
    message = str(caught.value)
    assert message.count("notaphoto.jpg") == 1, message
    assert "not a readable image" in message
    assert "Error" not in message and "<_io" not in message, message  # no Python class names or reprs


@pytest.mark.parametrize("command, shown", [
    (["evaluate"], "wildtrack[learned]"),
    (["evaluate"], "wildtrack[scale]"),
    (["evaluate"], "[default: from --matching]"),
    (["index", "build"], "[default: from --matching]"),
])
def test_help_keeps_square_brackets(command, shown):
    text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"}).output
    assert shown in text, text


@pytest.mark.parametrize("command", [[], ["data"], ["data", "synth"], ["index"], ["index", "build"], ["train"],
                                     ["evaluate"], ["search"], ["serve"], ["demo"], ["export"]])
def test_help_flag_has_no_type_placeholder(command):
    text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    row = next(r for r in text.splitlines() if "--help" in r)
    assert "<bool>" not in row, row
