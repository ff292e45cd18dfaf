"""The command line: help everywhere, and the data commands on real files."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from wildtrack.cli import app

runner = CliRunner()
COMMANDS = [[], ["data"], ["data", "inspect"], ["data", "synth"], ["train"], ["evaluate"], ["demo"], ["index"],
            ["index", "build"], ["index", "add"], ["search"], ["serve"], ["survey"], ["survey", "run"],
            ["survey", "review"], ["survey", "apply"], ["survey", "history"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "wildtrack.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "wildtrack" in out.stdout


def test_synth_then_inspect(tmp_path):
    t0 = time.perf_counter()
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "s"), "--identities", "20", "--images-per-id", "8"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s").glob("*/*.jpg"))) == 160
    assert time.perf_counter() - t0 < 60  # generous: the target (< 10 s) is measured by the benchmark, not here
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "20 identities, 160 images" in result.output and "layout: plain" in result.output


def test_inspect_names_unreadable_files(tmp_path):
    runner.invoke(app, ["data", "synth", str(tmp_path / "s"), "--identities", "3", "--images-per-id", "2"])
    bad = tmp_path / "s" / "t000" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    # plain layout with metadata.csv lists files explicitly: a stray file is only found by a folder scan
    (tmp_path / "s" / "metadata.csv").unlink()
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "broken.jpg" in result.output


def test_a_bad_folder_is_one_clear_error_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no such folder" in result.output and "Traceback" not in result.output


@pytest.mark.realdata
def test_inspect_real_sample(real_data):
    result = runner.invoke(app, ["data", "inspect", str(real_data), "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "22 identities, 388 images" in result.output and "seaturtleid2022" in result.output
    assert "2010-07-02" in result.output


def test_index_build_then_search_json(synth_data, tiny_artifacts, tmp_path):
    import json

    index = tmp_path / "index"
    result = runner.invoke(app, ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts),
                                 "--out", str(index), "--threshold", "0.5"])
    assert result.exit_code == 0, result.output
    assert {"index.faiss", "meta.csv", "embeddings.npy", "manifest.json"} <= {p.name for p in index.iterdir()}
    photo = synth_data / "t003" / "t003_004.jpg"
    result = runner.invoke(app, ["search", str(photo), "--index", str(index), "--artifacts", str(tiny_artifacts),
                                 "--json", "--topk", "3"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["hits"][0]["path"] == "t003/t003_004.jpg" and answer["hits"][0]["score"] > 0.999
    # Re-ranking is the default, so the threshold given to `index build` applies to the match probability.
    assert answer["decision"] == {"identity": "t003", "score": answer["decision"]["score"], "is_unknown": False,
                                  "threshold": 0.5, "score_kind": "match_probability"}
    assert len(answer["hits"]) == 3
    from wildtrack.matching.pipeline import load_pipeline

    assert load_pipeline(index).encounter_threshold == 0.5  # the given threshold decides encounters too


def test_search_refuses_an_index_of_another_model(synth_data, tiny_artifacts, tmp_path):
    import shutil

    index = tmp_path / "index"
    runner.invoke(app, ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts),
                        "--out", str(index)])
    other = tmp_path / "other"
    shutil.copytree(tiny_artifacts, other)
    (other / "model.keras").write_bytes((other / "model.keras").read_bytes() + b"\0")  # a different fingerprint
    result = runner.invoke(app, ["search", str(synth_data / "t000" / "t000_000.jpg"), "--index", str(index),
                                 "--artifacts", str(other)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "built with model" in result.output and "rebuild the index" in result.output


def test_index_add_picks_up_a_new_identity_without_rebuilding(synth_data, tiny_artifacts, tmp_path):
    import shutil

    from wildtrack.index import GalleryIndex

    data = tmp_path / "catalogue"
    shutil.copytree(synth_data, data)
    (data / "metadata.csv").unlink()  # a plain folder of photos, as a field team keeps it
    held_out = tmp_path / "t011"
    shutil.move(data / "t011", held_out)
    index = tmp_path / "index"
    assert runner.invoke(app, ["index", "build", "--data", str(data), "--artifacts", str(tiny_artifacts),
                               "--out", str(index)]).exit_code == 0
    before = GalleryIndex.load(index)
    shutil.move(held_out, data / "t011")
    result = runner.invoke(app, ["index", "add", "--index", str(index), "--artifacts", str(tiny_artifacts)])
    assert result.exit_code == 0, result.output
    after = GalleryIndex.load(index)
    assert len(after) == len(before) + 10 and after.identities()["t011"] == 10
    assert after.generation == before.generation + 1
    again = runner.invoke(app, ["index", "add", "--index", str(index), "--artifacts", str(tiny_artifacts)])
    assert "added 0 images" in again.output


def test_index_build_local_dims_0_matches_full_rootsift(synth_data, tiny_artifacts, tmp_path):
    import json

    index = tmp_path / "index"
    result = runner.invoke(app, ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts),
                                 "--out", str(index), "--rerank-k", "5", "--local-dims", "0"])
    assert result.exit_code == 0, result.output
    assert "full 128-d RootSIFT" in result.output
    assert json.loads((index / "fusion.json").read_text())["projection"] is None


def test_search_refuses_a_topk_beyond_what_one_search_returns(synth_data, tiny_artifacts, tmp_path):
    result = runner.invoke(app, ["search", str(synth_data / "t004" / "t004_007.jpg"), "--index", str(tmp_path),
                                 "--artifacts", str(tiny_artifacts), "--topk", "251"])
    assert result.exit_code == 2 and "less than or equal to 250" in result.output


def test_index_with_local_reranking_reorders_search_by_inliers(synth_data, tiny_artifacts, tmp_path):
    import json

    index = tmp_path / "index"
    result = runner.invoke(app, ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts),
                                 "--out", str(index), "--matching", "fast", "--rerank-k", "10"])
    assert result.exit_code == 0, result.output
    assert "fitting local re-ranking" in result.output  # its own progress bar, after the embedding's
    assert "reading features for the matching projection" in result.output  # ... and the projection's sample
    assert "RootSIFT in 64 dims" in result.output
    assert json.loads((index / "fusion.json").read_text())["k"] == 10
    photo = synth_data / "t005" / "t005_009.jpg"
    args = ["search", str(photo), "--index", str(index), "--artifacts", str(tiny_artifacts), "--json", "--topk", "10"]
    answer = json.loads(runner.invoke(app, args).output)
    assert answer["reranked"] and answer["decision"]["identity"] == "t005"
    hits = answer["hits"]
    assert hits[0]["path"] == "t005/t005_009.jpg" and hits[0]["inliers"] > 0
    assert [h["rank"] for h in hits] == list(range(1, 11))
    plain = json.loads(runner.invoke(app, [*args, "--no-rerank"]).output)
    assert not plain["reranked"]
    assert {h["image_id"] for h in plain["hits"]} == {h["image_id"] for h in hits}  # same shortlist, re-ordered


def test_search_identifies_several_photos_one_by_one_or_as_one_encounter(synth_data, tiny_artifacts, reranked_index):
    import json

    photos = [str(synth_data / "t005" / f"t005_00{n}.jpg") for n in (7, 8, 9)]
    base = ["search", *photos, "--index", str(reranked_index), "--artifacts", str(tiny_artifacts), "--topk", "3"]
    each = json.loads(runner.invoke(app, [*base, "--json"]).output)
    assert [a["image"] for a in each] == photos and all(a["reranked"] for a in each)
    together = runner.invoke(app, [*base, "--json", "--encounter"])
    assert together.exit_code == 0, together.output
    encounter = json.loads(together.output)
    assert encounter["decision"]["identity"] == "t005" and encounter["images"] == photos
    assert encounter["decision"]["score"] == max(a["decision"]["score"] for a in each)  # the most confident photo
    from wildtrack.matching.pipeline import load_pipeline

    assert encounter["decision"]["threshold"] == load_pipeline(reranked_index).encounter_threshold
    assert [p["decision"] for p in encounter["photos"]] == [a["decision"] for a in each]
    table = runner.invoke(app, [*base, "--encounter"])
    assert table.exit_code == 0 and "encounter of 3 photos" in table.output and "closest in photos" in table.output


def test_survey_run_of_one_photo_counts_in_the_singular(reranked_index, tiny_artifacts, tmp_path):
    """The summary reads as English: "1 photo", "1 encounter"; --gap's help says what a bare number means."""
    from wildtrack.data.synth.card import generate_card

    generate_card(tmp_path / "card", known=[1], seed=1, photos_per_encounter=1, image_size=96, extras=False)
    result = runner.invoke(app, ["survey", "run", str(tmp_path / "card"), "--index", str(reranked_index),
                                 "--artifacts", str(tiny_artifacts), "--out", str(tmp_path / "survey")])
    assert result.exit_code == 0, result.output
    assert "1 photo: 1 used," in result.output and "1 encounter: " in result.output
    help_text = " ".join(runner.invoke(app, ["survey", "run", "--help"]).output.replace("│", " ").split())
    assert "a bare number means seconds" in help_text
