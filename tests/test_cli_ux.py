"""The command line as a new user meets it: choices shown and checked by typer, quiet start-up, a batch search that
survives one bad photo, serve --no-rerank, the demo's hint, and model.keras loading the documented way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _serve_helpers import free_port
from typer.testing import CliRunner

from wildtrack.cli import app

runner = CliRunner()
CLI = [sys.executable, "-m", "wildtrack.cli"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "COLUMNS": "200"}
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)


@pytest.mark.parametrize("command, option, choices", [
    (["train"], "--loss", "softmax|arcface|triplet|arcface+triplet"),
    (["train"], "--split", "auto|per-identity|time-aware|official"),
    (["train"], "--backbone", "mobilenetv2|"),
    (["evaluate"], "--rerank", "local|none"),
    (["evaluate"], "--backend", "auto|keras|onnx"),
    (["export"], "--format", "onnx"),
])
def test_choices_are_listed_in_help(command, option, choices):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    line = next(row for row in result.output.splitlines() if f" {option} " in row)
    assert choices in line, line


@pytest.mark.parametrize("args", [
    ["train", "--data", ".", "--out", "x", "--loss", "arcfase"],
    ["evaluate", "--data", ".", "--artifacts", "x", "--split", "random"],
    ["train", "--data", ".", "--out", "x", "--backbone", "resnet"],
    ["index", "build", "--data", ".", "--artifacts", "x", "--out", "y", "--rerank", "yes"],
    ["export", "--artifacts", "x", "--format", "tflite"],
])
def test_a_bad_choice_is_typers_usage_error(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Invalid value for" in result.output and "is not one of" in result.output
    assert "Traceback" not in result.output and "pydantic" not in result.output


def test_backbone_choices_are_the_registry():
    from wildtrack.cli.choices import BACKBONE_NAMES
    from wildtrack.model.backbones import BACKBONES

    assert set(BACKBONE_NAMES) == set(BACKBONES)


def test_flags_have_no_value_placeholder_and_every_option_has_help():
    for command in (["train"], ["evaluate"], ["index", "build"], ["index", "add"], ["search"], ["serve"],
                    ["export"], ["demo"], ["survey", "run"], ["survey", "apply"], ["survey", "history"], []):
        text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"}).output
        rows = [r for r in text.splitlines() if r.startswith("│") and " --" in r and "--help" not in r]
        assert rows, command
        for row in rows:
            assert "<bool>" not in row, row
            assert row.rstrip("│ ").split("  ")[-1].strip(), f"no help text: {row}"


def test_evaluate_split_defaults_to_auto():
    import inspect

    from wildtrack.cli.model_cmds import evaluate, train

    for command in (evaluate, train):
        assert inspect.signature(command).parameters["split"].default.default == "auto"


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(synth_data, tiny_artifacts, reranked_index):
    search = ["search", str(synth_data / "t000" / "t000_001.jpg"), "--index", str(reranked_index), "--artifacts",
              str(tiny_artifacts), "--backend", "keras", "--no-rerank", "--json"]  # loads TensorFlow
    quiet = subprocess.run([*CLI, *search], capture_output=True, text=True, env=ENV)
    loud = subprocess.run([*CLI, "--verbose", *search], capture_output=True, text=True, env=ENV)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr
    assert "oneDNN" in loud.stderr or "absl" in loud.stderr, loud.stderr  # what quiet mode hides is real


def test_search_answers_good_photos_and_reports_the_bad_one(synth_data, tiny_artifacts, reranked_index, tmp_path):
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a photo")
    good = [str(synth_data / "t001" / "t001_002.jpg"), str(synth_data / "t004" / "t004_005.jpg")]
    args = ["search", good[0], str(bad), good[1], "--index", str(reranked_index), "--artifacts",
            str(tiny_artifacts), "--topk", "2"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    answers = json.loads(result.stdout)
    assert [a["image"] for a in answers[:2]] == good and all("decision" in a for a in answers[:2])
    assert answers[2]["image"] == str(bad) and answers[2]["error"]
    table = runner.invoke(app, args)
    assert table.exit_code == 1 and "truncated.jpg" in table.output
    assert "1 of 3 photos could not be read" in table.output
    assert "t001_002.jpg" in table.output and "t004_005.jpg" in table.output
    together = runner.invoke(app, [*args, "--encounter", "--json"])
    assert together.exit_code == 1 and json.loads(together.stdout)["images"] == good


def test_serve_no_rerank_answers_by_cosine(synth_data, tiny_artifacts, reranked_index, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*CLI, "serve", "--index", str(reranked_index), "--artifacts", str(tiny_artifacts),
                             "--port", str(port), "--no-rerank"], env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        # "serving on" is said once the server answers, after the loading line, never before a failure
        said = (tmp_path / "serve.log").read_text()
        assert said.index("loading the model and the catalogue") < said.index(f"serving on http://127.0.0.1:{port}/")
        photo = synth_data / "t002" / "t002_003.jpg"
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": (photo.name, photo.read_bytes())},
                            timeout=60).json()
        assert answer["score_kind"] == "cosine", answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_demo_hint_is_a_command_that_runs(tmp_path):
    from wildtrack.cli.model_cmds import serve_hint

    hint = serve_hint(tmp_path / "index", tmp_path / "artifacts")
    assert hint.startswith(sys.executable) and " -m wildtrack.cli serve " in hint
    assert f"--index {tmp_path / 'index'}" in hint
    help_run = subprocess.run([*hint.split(" serve ")[0].split(), "serve", "--help"], capture_output=True,
                              text=True, env=ENV)
    assert help_run.returncode == 0 and "--no-rerank" in help_run.stdout


def test_the_demo_hint_for_its_card_is_a_survey_command_that_runs(tmp_path):
    from wildtrack.cli.model_cmds import survey_hint

    hint = survey_hint(tmp_path / "card", tmp_path / "index", tmp_path / "artifacts")
    assert f"survey run {tmp_path / 'card'} --index {tmp_path / 'index'}" in hint
    assert hint.endswith(f"--out {tmp_path / 'survey'}")
    help_run = subprocess.run([*hint.split(" survey run ")[0].split(), "survey", "run", "--help"],
                              capture_output=True, text=True, env=ENV)
    assert help_run.returncode == 0 and "--gap" in help_run.stdout


def test_model_keras_loads_without_custom_objects_after_importing_wildtrack(tiny_artifacts):
    for prelude in ("import wildtrack, sys; assert 'tensorflow' not in sys.modules, 'import is not lazy'; "
                    "import keras", "import keras, wildtrack"):
        code = f"{prelude}; m = keras.models.load_model({str(tiny_artifacts / 'model.keras')!r}); print(m.name)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
        assert out.returncode == 0, out.stderr[-2000:]
