"""`survey apply` and `survey history`: a person's decisions become catalogue rows, sightings and a capture history.

The survey folders here are written as `survey run` writes them (survey.json format 1, decisions.csv), over a
generated field card (real JPEGs with EXIF capture times), against a copy of the re-ranking test catalogue.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wildtrack.survey.decisions import initial_decisions, read_decisions, set_decision, write_decisions
from wildtrack.survey.files import APPLIED_FILE, DECISIONS_FILE, SIGHTINGS_FILE, SurveyError, save_survey

runner = CliRunner()
DAY1, DAY2 = date(2026, 7, 1), date(2026, 7, 2)


# --------------------------------------------------------------------------------------------- building


def copy_catalogue(reranked_index: Path, out: Path) -> Path:
    shutil.copytree(reranked_index, out)
    return out


def build_survey(out: Path, card: Path, index_dir: Path, day: date, proposals: dict[str, tuple[str, str]],
                 seed: int = 1) -> dict:
    """A generated card and the survey folder a run would write for it: encounters as the card's truth has them
    (a duplicate kept in its encounter with status `duplicate`), ``proposals``: encounter -> (identity, verdict)."""
    from wildtrack.data.synth.card import generate_card
    from wildtrack.index import GalleryIndex

    truth = generate_card(card, known=[1, 2, 3], unknown=[9], seed=seed, photos_per_encounter=2, image_size=96,
                          day=day)
    index = GalleryIndex.load(index_dir)
    photos, groups = [], {}
    for p in truth:
        status = {"turtle": "ok", "duplicate": "duplicate", "no_turtle": "no_turtle", "unreadable": "unreadable"}
        label = f"E{int(p.encounter[1:]):03d}" if p.encounter else None
        if label:
            groups.setdefault(label, []).append(p)
        photos.append({"photo": p.file, "sha256": hashlib.sha256((card / p.file).read_bytes()).hexdigest(),
                       "status": status[p.kind], "reason": None, "duplicate_of": None,
                       "taken": p.taken.isoformat() if p.taken else None, "time_source": "exif" if p.taken else None,
                       "encounter": label, "score": None, "thumb": None})
    encounters = []
    for label in sorted(groups):
        members = sorted(groups[label], key=lambda p: (p.taken, p.file))
        identity, verdict = proposals[label]
        encounters.append({
            "encounter": label, "photos": [p.file for p in members], "start": members[0].taken.isoformat(),
            "end": members[-1].taken.isoformat(), "date": day.isoformat(), "window": "T001", "verdict": verdict,
            "new": identity.startswith("new-"), "proposed_identity": identity,
            "score": 0.97 if verdict == "confident" else 0.4, "score_kind": "match_probability", "threshold": 0.5,
            "confident_threshold": 0.9, "candidates": [], "new_group": None})
    survey = {"survey_id": hashlib.sha256(f"{card}{seed}{day}".encode()).hexdigest()[:16],
              "photos_root": str(card.resolve()),
              "catalogue": {"index_dir": str(index_dir.resolve()), "catalogue_id": index.catalogue_id,
                            "generation": index.generation, "model_fingerprint": index.model_fingerprint,
                            "images": len(index), "identities": len(index.identities()), "synthetic": True},
              "settings": {"gap_s": 600, "grouping": "auto", "grouped_by": "time", "topk": 5}, "policy": {},
              "photos": photos, "encounters": encounters,
              "counts": {"photos": len(photos), "encounters": len(encounters)}}
    out.mkdir(parents=True)
    save_survey(out, survey)
    write_decisions(out, initial_decisions(survey))
    return survey


def catalogued(index_dir: Path) -> list:
    from wildtrack.index import GalleryIndex

    return list(GalleryIndex.load(index_dir).rows)


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def apply(survey_dir: Path, index_dir: Path, artifacts: Path):
    from wildtrack.survey.apply import apply_survey

    return apply_survey(survey_dir, index_dir, artifacts)


# ------------------------------------------------------------------------------------------ a field day


@pytest.fixture(scope="module")
def names(reranked_index) -> list[str]:
    from wildtrack.index import GalleryIndex

    return sorted(GalleryIndex.load(reranked_index).identities())


@pytest.fixture(scope="module")
def field_day(reranked_index, tiny_artifacts, tmp_path_factory, names):
    """Day 1: E001 confident (pre-filled accept), E002 accepted by a person, E003 rejected, E004 (a new turtle)
    accepted under its provisional id, E005 (the same new turtle, later) left undecided; applied once."""
    root = tmp_path_factory.mktemp("field-day")
    index = copy_catalogue(reranked_index, root / "index")
    survey_dir = root / "survey"
    survey = build_survey(survey_dir, root / "card", index, DAY1, {
        "E001": (names[1], "confident"), "E002": (names[2], "review"), "E003": (names[3], "review"),
        "E004": ("new-001", "review"), "E005": ("new-001", "review")})
    set_decision(survey_dir, survey, "E002", "accept")
    set_decision(survey_dir, survey, "E003", "reject")
    set_decision(survey_dir, survey, "E004", "accept")
    before = catalogued(index)
    report = apply(survey_dir, index, tiny_artifacts)
    return {"index": index, "survey_dir": survey_dir, "survey": survey, "report": report, "before": before,
            "card": root / "card", "root": root}


def enrolled_rows(day: dict) -> list:
    return catalogued(day["index"])[len(day["before"]):]


def test_apply_enrols_exactly_the_accepted_photos_in_one_commit(field_day, names):
    report, survey = field_day["report"], field_day["survey"]
    photos = {e["encounter"]: e["photos"] for e in survey["encounters"]}
    ok = {p["photo"] for p in survey["photos"] if p["status"] == "ok"}
    rows = enrolled_rows(field_day)
    expected = {(names[1], p) for p in photos["E001"] if p in ok} | {(names[2], p) for p in photos["E002"]} \
        | {("new-001", p) for p in photos["E004"]}
    assert len(photos["E001"]) == 3 and len(rows) == len(expected) == 6  # E001's duplicate is not enrolled
    assert sorted((r.identity, r.date) for r in rows) == sorted((i, DAY1.isoformat()) for i, _ in expected)
    from wildtrack.index import GalleryIndex
    from wildtrack.search import CatalogueSearch

    data_root = CatalogueSearch(GalleryIndex.load(field_day["index"]), field_day["index"], rerank=False).data_root
    for r in rows:  # stored in the catalogue's enrolled/ folder, named by content
        path = (data_root / r.path).resolve()
        assert path.is_file() and path.is_relative_to((field_day["index"] / "enrolled").resolve())
    assert report.generation_after == report.generation_before + 1
    assert {i: len(ids) for i, ids in report.enrolled.items()} == {names[1]: 2, names[2]: 2, "new-001": 2}
    assert report.new_identities == ["new-001"] and report.applied == ["E001", "E002", "E004"]
    assert report.rejected == ["E003"] and report.undecided == ["E005"]
    applied = json.loads((field_day["survey_dir"] / APPLIED_FILE).read_text())
    assert applied["generation"] == report.generation_after and sorted(applied["encounters"]) == ["E001", "E002",
                                                                                                 "E004"]
    assert sorted(i for e in applied["encounters"].values() for i in e["image_ids"]) == sorted(r.image_id
                                                                                             for r in rows)
    lines = report.lines()
    assert lines[0].startswith("enrolled 6 photos of 3 turtles (1 new: new-001) from 3 encounters")
    assert "1 encounter undecided: E005 — decide them in decisions.csv and run apply again" in lines
    assert "1 encounter rejected: E003" in lines


def test_sightings_list_the_applied_encounters_and_how_they_were_decided(field_day, names):
    rows = read_csv(field_day["survey_dir"] / SIGHTINGS_FILE)
    assert list(rows[0]) == ["identity", "encounter", "date", "time", "photos", "photo_files", "decided"]
    got = [(r["identity"], r["encounter"], r["date"], r["photos"], r["decided"]) for r in rows]
    assert got == [(names[1], "E001", "2026-07-01", "2", "automatic"),
                   (names[2], "E002", "2026-07-01", "2", "reviewed"),
                   ("new-001", "E004", "2026-07-01", "2", "reviewed")]
    start = {e["encounter"]: e["start"] for e in field_day["survey"]["encounters"]}
    assert all(r["time"] == start[r["encounter"]][11:19] for r in rows)
    ok = {p["photo"] for p in field_day["survey"]["photos"] if p["status"] == "ok"}
    assert rows[0]["photo_files"].split(";") == [p for p in field_day["survey"]["encounters"][0]["photos"] if p in ok]
    catalogue = read_csv(field_day["index"] / SIGHTINGS_FILE)
    assert list(catalogue[0])[0] == "survey_id"
    assert [(r["survey_id"], r["encounter"]) for r in catalogue] == [
        (field_day["survey"]["survey_id"], e) for e in ("E001", "E002", "E004")]


def test_a_second_apply_adds_nothing_and_says_so(field_day, tiny_artifacts):
    index, survey_dir = field_day["index"], field_day["survey_dir"]
    rows, sightings = catalogued(index), (index / SIGHTINGS_FILE).read_bytes()
    again = apply(survey_dir, index, tiny_artifacts)
    assert catalogued(index) == rows and (index / SIGHTINGS_FILE).read_bytes() == sightings
    assert again.enrolled == {} and again.applied == [] and again.already_applied == ["E001", "E002", "E004"]
    assert again.generation_after == field_day["report"].generation_after
    assert again.lines()[0] == "nothing new to apply: 3 encounters applied before"


def test_a_crash_after_the_commit_is_finished_by_the_next_apply_without_duplicates(field_day, tiny_artifacts):
    """Killed after the catalogue committed but before applied.json: the catalogue holds one more generation and
    the survey no record of it. The next apply recognises its own commit and records it; nothing is doubled."""
    index, survey_dir = field_day["index"], field_day["survey_dir"]
    rows, sightings = catalogued(index), (index / SIGHTINGS_FILE).read_bytes()
    (survey_dir / APPLIED_FILE).unlink()
    (survey_dir / SIGHTINGS_FILE).unlink()
    finished = apply(survey_dir, index, tiny_artifacts)
    assert catalogued(index) == rows and (index / SIGHTINGS_FILE).read_bytes() == sightings
    assert finished.finished_interrupted and finished.enrolled == {}
    assert finished.applied == ["E001", "E002", "E004"] and (survey_dir / SIGHTINGS_FILE).is_file()
    assert "an earlier apply was interrupted after its commit" in finished.lines()[0]
    applied = json.loads((survey_dir / APPLIED_FILE).read_text())
    assert applied["generation"] == field_day["report"].generation_after


# ------------------------------------------------------------------------------------------ refusals


@pytest.fixture()
def fresh(reranked_index, tmp_path, names):
    """A survey not applied yet, with E001 accepted (pre-filled) and E004 renamed, on its own catalogue."""
    index = copy_catalogue(reranked_index, tmp_path / "index")
    survey = build_survey(tmp_path / "survey", tmp_path / "card", index, DAY1, {
        "E001": (names[1], "confident"), "E002": (names[2], "review"), "E003": (names[3], "review"),
        "E004": ("new-001", "review"), "E005": ("new-001", "review")})
    set_decision(tmp_path / "survey", survey, "E004", "rename", "Mira")
    return {"index": index, "survey_dir": tmp_path / "survey", "survey": survey, "card": tmp_path / "card",
            "rows": catalogued(index)}


def refused(fresh, tiny_artifacts, message: str) -> None:
    with pytest.raises(SurveyError, match=message):
        apply(fresh["survey_dir"], fresh["index"], tiny_artifacts)
    assert catalogued(fresh["index"]) == fresh["rows"]
    assert not (fresh["survey_dir"] / APPLIED_FILE).exists() and not (fresh["index"] / SIGHTINGS_FILE).exists()


def test_a_photo_edited_or_removed_since_the_run_is_refused(fresh, tiny_artifacts):
    first = fresh["survey"]["encounters"][0]["photos"][0]
    path = fresh["card"] / first
    path.write_bytes(path.read_bytes() + b"\0")  # re-saved by a photo editor
    refused(fresh, tiny_artifacts, f"{first} \\(E001\\) was changed since the survey ran")
    path.unlink()
    refused(fresh, tiny_artifacts, f"{first} \\(E001\\) is missing")


def test_a_decisions_sheet_whose_photos_were_edited_is_refused(fresh, tiny_artifacts):
    sheet = fresh["survey_dir"] / DECISIONS_FILE
    text = sheet.read_text()
    photos = fresh["survey"]["encounters"][3]["photos"]
    sheet.write_text(text.replace(";".join(photos), photos[0]))
    refused(fresh, tiny_artifacts, "E004's photos differ from the run's")


def test_a_catalogue_changed_by_someone_else_since_the_run_is_refused(fresh, tiny_artifacts, names):
    from wildtrack.index import GalleryIndex

    index = GalleryIndex.load(fresh["index"])  # as `wildtrack index add` does: one more photo, one more generation
    vector = np.ones((1, index.dim), np.float32) / np.sqrt(index.dim)
    index.add(fresh["index"], vector, [{"path": "elsewhere/x.jpg", "identity": names[0]}])
    fresh["rows"] = catalogued(fresh["index"])
    refused(fresh, tiny_artifacts, "the catalogue changed since the survey ran(.|\n)*enter the decisions again in "
                                   "the new run's decisions.csv")


@pytest.mark.parametrize(("name", "message"), [("x/y", "E004: final identity 'x/y': identity may not contain slashes"),
                                                 ("T001", "cannot enrol E004: 'T001' looks like the catalogued")])
def test_a_new_name_the_catalogue_cannot_take_is_refused_naming_its_encounter(fresh, tiny_artifacts, name, message):
    set_decision(fresh["survey_dir"], fresh["survey"], "E004", "rename", name)
    refused(fresh, tiny_artifacts, message)


@pytest.mark.parametrize(("key", "message"), [("catalogue_id", "holds another catalogue"),
                                              ("model_fingerprint", "model is not the one this survey ran with")])
def test_another_catalogue_or_model_is_refused(fresh, tiny_artifacts, key, message):
    survey = json.loads((fresh["survey_dir"] / "survey.json").read_text())
    survey["catalogue"][key] = "0" * 32
    save_survey(fresh["survey_dir"], survey)
    refused(fresh, tiny_artifacts, message)


ORPHAN = "0123456789abcdef0123456789abcdef.jpg"


@pytest.mark.parametrize("wrong", ["another catalogue", "changed since"])
def test_a_refused_apply_leaves_the_catalogue_untouched_even_its_interrupted_enrolments(fresh, tiny_artifacts,
                                                                                       names, wrong):
    """Applying to the wrong --index is refused before the catalogue's recovery runs: that index's orphans stay."""
    from wildtrack.index import GalleryIndex

    orphan = fresh["index"] / "enrolled" / "t9" / ORPHAN
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left by a crash of that catalogue's own enrolment")
    if wrong == "another catalogue":
        survey = json.loads((fresh["survey_dir"] / "survey.json").read_text())
        survey["catalogue"]["catalogue_id"] = "0" * 32
        save_survey(fresh["survey_dir"], survey)
    else:
        index = GalleryIndex.load(fresh["index"])
        index.add(fresh["index"], np.ones((1, index.dim), np.float32) / np.sqrt(index.dim),
                  [{"path": "elsewhere/x.jpg", "identity": names[0]}])
        fresh["rows"] = catalogued(fresh["index"])
    refused(fresh, tiny_artifacts, "another catalogue" if wrong == "another catalogue" else "changed since")
    assert orphan.is_file()


def test_apply_to_a_copied_catalogue_keeps_its_enrolled_photos(field_day, tiny_artifacts):
    """`cp -r index index2`: the copy's rows name the original's enrolled/ folder; apply against the copy (its
    recovery) takes none of the copy's enrolled photos for an orphan."""
    copy = copy_catalogue(field_day["index"], field_day["root"] / "copies" / "index2")
    enrolled = sorted((copy / "enrolled").rglob("*.jpg"))
    assert enrolled and all(r.path.startswith("../") for r in catalogued(copy)[len(field_day["before"]):])
    report = apply(field_day["survey_dir"], copy, tiny_artifacts)
    assert report.recovered == (0, 0)
    assert all(p.is_file() for p in enrolled)


def test_the_recovery_line_says_what_recovery_did():
    from wildtrack.survey.apply import ApplyReport

    def first_line(recovered):
        return ApplyReport("s", {}, [], [], [], {}, [], [], 1, 1, recovered=recovered).lines()[0]

    assert first_line((0, 2)) == "catalogue recovery first: removed 2 orphan files (photos no catalogue row names)"
    assert first_line((1, 0)) == "catalogue recovery first: moved 1 photo of an interrupted enrolment into place"
    assert first_line((0, 0)) == "nothing new to apply"


def test_apply_renders_the_review_page_again(fresh, tiny_artifacts):
    from wildtrack.survey.files import REVIEW_FILE

    page = fresh["survey_dir"] / REVIEW_FILE
    assert not page.exists()  # this survey folder was written without one
    apply(fresh["survey_dir"], fresh["index"], tiny_artifacts)
    text = page.read_text()
    assert "<b>rename</b>: its photos will be enrolled as <b>Mira</b>" in text


KILLED_APPLY = """
import os, sys
from wildtrack.index import set_commit_pause

def die(point):
    if point == sys.argv[4]:
        os._exit(9)  # no cleanup of any kind: as a kill -9 or a power cut

set_commit_pause(die)
from wildtrack.survey.apply import apply_survey
apply_survey(sys.argv[1], sys.argv[2], sys.argv[3])
"""


def test_an_apply_killed_right_after_its_commit_is_finished_by_the_next(fresh, tiny_artifacts):
    """A real kill just after the index commit: the catalogue holds the photos' rows while the photos are still
    staged and the survey has no record of the commit. The next apply moves the photos into place, recognises
    its own commit and records it: each photo enrolled once. (A kill before the commit leaves the catalogue as it
    was: the enrolment core's own tests cover that.)"""
    from wildtrack.index import GalleryIndex

    survey_dir, index = fresh["survey_dir"], fresh["index"]
    generation = GalleryIndex.load(index).generation
    died = subprocess.run([sys.executable, "-c", KILLED_APPLY, str(survey_dir), str(index), str(tiny_artifacts),
                           "committed"], capture_output=True, text=True, timeout=120)
    assert died.returncode == 9, died.stderr
    assert GalleryIndex.load(index).generation == generation + 1
    assert not (survey_dir / APPLIED_FILE).exists()
    report = apply(survey_dir, index, tiny_artifacts)
    rows = catalogued(index)[len(fresh["rows"]):]
    assert sorted(r.identity for r in rows) == sorted([fresh["survey"]["encounters"][0]["proposed_identity"]] * 2
                                                      + ["Mira"] * 2)
    assert GalleryIndex.load(index).generation == generation + 1
    assert report.finished_interrupted and report.recovered == (4, 0) and report.enrolled == {}
    data_root = index.parent  # the card and the catalogue copy live side by side; enrolled photos in the index
    assert all(any((data_root / "index" / "enrolled").rglob(Path(r.path).name)) for r in rows)
    assert not list((index / "enrolled" / ".staging").rglob("*.jpg"))
    assert sorted(json.loads((survey_dir / APPLIED_FILE).read_text())["encounters"]) == ["E001", "E004"]


# ------------------------------------------------------------------------------------ the command line


def wildtrack(*args: object):
    """The command line as a person types it (arguments as text)."""
    from wildtrack.cli import app

    return runner.invoke(app, [str(a) for a in args])


def test_the_apply_command_prints_what_it_did_and_exits_1_when_refused(field_day, tiny_artifacts):
    survey_dir, index, survey = field_day["survey_dir"], field_day["index"], field_day["survey"]

    def apply_command(folder: Path = survey_dir):
        return wildtrack("survey", "apply", folder, "--index", index, "--artifacts", tiny_artifacts)

    set_decision(survey_dir, survey, "E005", "rename", "Mira")  # the new turtle's second encounter, named
    result = apply_command()
    assert result.exit_code == 0, result.output
    assert "enrolled 2 photos of 1 turtle (1 new: Mira) from 1 encounter" in result.output
    assert [r.identity for r in catalogued(index)[-2:]] == ["Mira", "Mira"]
    assert [r["encounter"] for r in read_csv(index / SIGHTINGS_FILE)] == ["E001", "E002", "E004", "E005"]
    again = apply_command()
    assert again.exit_code == 0 and "nothing new to apply: 4 encounters applied before" in again.output
    assert "embedding" not in again.output  # no photo to embed: no progress bar
    set_decision(survey_dir, survey, "E003", "accept")  # decided later, but its photo was edited meanwhile
    photo = field_day["card"] / survey["encounters"][2]["photos"][0]
    kept = photo.read_bytes()
    photo.write_bytes(kept[:-10])
    try:
        refused_run = apply_command()
    finally:
        photo.write_bytes(kept)
        set_decision(survey_dir, survey, "E003", "reject")
    assert refused_run.exit_code == 1 and "was changed since the survey ran" in refused_run.output
    missing = apply_command(survey_dir / "nope")
    assert missing.exit_code == 2 and "no such folder" in missing.output


# ------------------------------------------------------------------------------------- capture history


@pytest.fixture(scope="module")
def two_days(field_day, tiny_artifacts, names):
    """A second survey, the next day, on the same catalogue: E001 (names[1]) again and E004 accepted as Mira."""
    root = field_day["root"]
    survey_dir = root / "survey-2"
    survey = build_survey(survey_dir, root / "card-2", field_day["index"], DAY2, {
        "E001": (names[1], "confident"), "E002": (names[5], "review"), "E003": (names[6], "review"),
        "E004": ("Mira", "review"), "E005": ("Mira", "review")}, seed=2)
    set_decision(survey_dir, survey, "E004", "accept")
    from wildtrack.embed import load_embedder
    from wildtrack.survey.apply import apply_survey

    apply_survey(survey_dir, field_day["index"], load_embedder(tiny_artifacts))  # a model already loaded (the service)
    return field_day["index"], field_day["survey"]["survey_id"], survey["survey_id"]


def test_the_capture_history_has_one_row_per_turtle_and_one_column_per_day(two_days, names, tmp_path):
    index, first, second = two_days
    sightings = read_csv(index / SIGHTINGS_FILE)
    assert {r["survey_id"] for r in sightings} == {first, second}
    result = wildtrack("survey", "history", "--index", index, "--out", tmp_path / "wide.csv")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "wide.csv")
    assert list(rows[0]) == ["id", "2026-07-01", "2026-07-02"]
    seen = {r["id"]: (r["2026-07-01"], r["2026-07-02"]) for r in rows}
    mira = ("1", "1") if any(r["identity"] == "Mira" and r["date"] == "2026-07-01" for r in sightings) else ("0", "1")
    assert seen == {names[1]: ("1", "1"), names[2]: ("1", "0"), "new-001": ("1", "0"), "Mira": mira}
    assert "wrote the capture history of 4 turtles over 2 occasions" in result.output


def test_the_rmark_history_is_one_string_of_0_and_1_per_turtle_and_surveys_can_be_the_occasions(two_days, names,
                                                                                               tmp_path):
    from wildtrack.survey.history import capture_history, write_history

    index, first, second = two_days
    individuals, occasions, matrix = capture_history(index, "survey")
    assert occasions == [first, second] and matrix.shape == (4, 2) and matrix.dtype == np.uint8
    write_history(tmp_path / "rmark.csv", individuals, occasions, matrix, "rmark")
    lines = (tmp_path / "rmark.csv").read_text().splitlines()
    assert lines[0] == "ch,id" and f"11,{names[1]}" in lines and f"10,{names[2]}" in lines
    assert all(len(line.split(",")[0]) == 2 for line in lines[1:])
    catalogue_too = capture_history(index, "day", include_catalogue=True)  # the catalogue's own dated photos
    assert catalogue_too[1][-2:] == ["2026-07-01", "2026-07-02"] and len(catalogue_too[1]) > 2
    assert set(catalogue_too[0]) >= set(individuals) and catalogue_too[2].shape == (len(catalogue_too[0]),
                                                                                     len(catalogue_too[1]))


def test_no_sightings_yet_is_refused_with_what_to_do(reranked_index, tmp_path):
    result = wildtrack("survey", "history", "--index", reranked_index, "--out", tmp_path / "h")
    assert result.exit_code == 1 and "apply a survey to it first" in result.output
    assert not (tmp_path / "h").exists()
    into_a_folder = wildtrack("survey", "history", "--index", reranked_index, "--out", tmp_path)
    assert into_a_folder.exit_code == 2 and "a folder; give the CSV file" in into_a_folder.output


# ------------------------------------------------------------------------------- after a real `survey run`


def test_run_then_apply_enrols_the_accepted_encounters_of_a_real_run(reranked_index, tiny_artifacts,
                                                                    tmp_path):
    """`survey run` on a generated card, a person's decisions, `survey apply`: the catalogue gains exactly the
    ok photos of the accepted and renamed encounters, under their final identities, once."""
    from wildtrack.data.synth.card import generate_card
    from wildtrack.survey.run import run_survey

    index = copy_catalogue(reranked_index, tmp_path / "index")
    generate_card(tmp_path / "card", known=[1, 2, 3], unknown=[9], seed=1, photos_per_encounter=2, image_size=96)
    survey = run_survey(tmp_path / "card", index, tiny_artifacts, tmp_path / "survey").data
    survey_dir, before = tmp_path / "survey", catalogued(index)
    rows = read_decisions(survey_dir, survey)
    assert len(rows) >= 3
    renamed, undecided = rows[0].encounter, rows[-1].encounter
    for r in rows[:-1]:
        if r.encounter == renamed:
            set_decision(survey_dir, survey, r.encounter, "rename", "Mira")
        elif not r.decided:
            set_decision(survey_dir, survey, r.encounter, "accept" if r.proposed_identity else "reject")
    decided = {r.encounter: r for r in read_decisions(survey_dir, survey) if r.enrols}
    status = {p["photo"]: p["status"] for p in survey["photos"]}
    expected = sorted((decided[e["encounter"]].final_identity, e["date"] or None) for e in survey["encounters"]
                      if e["encounter"] in decided for p in e["photos"] if status[p] == "ok")
    report = apply(survey_dir, index, tiny_artifacts)
    added = catalogued(index)[len(before):]
    assert sorted((r.identity, r.date) for r in added) == expected and expected
    assert undecided in report.undecided and undecided not in report.applied
    assert sorted(report.applied) == sorted(decided)
    sightings = read_csv(survey_dir / SIGHTINGS_FILE)
    assert sorted(r["encounter"] for r in sightings) == sorted(decided)
    assert next(r["identity"] for r in sightings if r["encounter"] == renamed) == "Mira"
    again = apply(survey_dir, index, tiny_artifacts)
    assert catalogued(index)[len(before):] == added and again.applied == [] and again.enrolled == {}
