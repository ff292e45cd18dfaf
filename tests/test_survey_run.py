"""`wildtrack survey run` on a generated field card: grouping, statuses, identification, new-turtle clustering,
the files it writes, reproducibility, `--resume` after a kill, and the refusals.

The card (see :func:`build_card`) holds synthetic turtles of the catalogue photographed again (views the catalogue
does not hold), with EXIF capture times: t000 three times at 09:00, t001 twice at 09:30 (one photo without EXIF,
dated by its file time), t002 and t005 met in the same minute at 10:00, a turtle the catalogue does not hold (t012)
at 11:00 and again at 13:00, an empty-water photo at 11:40, a duplicate of a t000 photo and a file that is not an
image.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wildtrack.images import DATETIME_ORIGINAL, EXIF_IFD
from wildtrack.survey import encounters as grouping
from wildtrack.survey.card import scan_card

DAY = "2026-07-01"
# (file name, synthetic photo, time of day, whether the time is written as EXIF DateTimeOriginal)
SHOTS = [
    ("IMG_0001.jpg", "t000/t000_010.jpg", "09:00:00", True),
    ("IMG_0002.jpg", "t000/t000_011.jpg", "09:00:20", True),
    ("IMG_0003.jpg", "t000/t000_012.jpg", "09:00:45", True),
    ("IMG_0004.jpg", "t001/t001_010.jpg", "09:30:00", True),
    ("IMG_0005.jpg", "t001/t001_012.jpg", "09:30:30", False),
    ("IMG_0006.jpg", "t002/t002_010.jpg", "10:00:05", True),
    ("IMG_0007.jpg", "t005/t005_010.jpg", "10:00:15", True),
    ("IMG_0008.jpg", "t002/t002_011.jpg", "10:00:30", True),
    ("IMG_0009.jpg", "t005/t005_011.jpg", "10:00:40", True),
    ("IMG_0010.jpg", "t012/t012_002.jpg", "11:00:00", True),
    ("IMG_0011.jpg", "t012/t012_005.jpg", "11:00:30", True),
    ("IMG_0013.jpg", "t012/t012_008.jpg", "13:00:00", True),
    ("IMG_0014.jpg", "t012/t012_010.jpg", "13:00:40", True),
]
WATER, DUPLICATE, BROKEN = "IMG_0012.jpg", "IMG_0015.jpg", "IMG_0016.jpg"
EXPECTED = [("t000", ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg"]),
            ("t001", ["IMG_0004.jpg", "IMG_0005.jpg"]),
            ("t002", ["IMG_0006.jpg", "IMG_0008.jpg"]),
            ("t005", ["IMG_0007.jpg", "IMG_0009.jpg"]),
            ("new", ["IMG_0010.jpg", "IMG_0011.jpg"]),
            ("new", ["IMG_0013.jpg", "IMG_0014.jpg"])]


def _exif(when: str) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = when.replace("-", ":").replace("T", " ")
    return exif


def empty_water(size: int = 96) -> Image.Image:
    """Open water: a smooth blue gradient, no edges or blobs for keypoints."""
    y = np.linspace(0, 1, size)[:, None, None]
    rgb = (np.array([20, 90, 140]) * (1 - y) + np.array([10, 50, 100]) * y) * np.ones((1, size, 1))
    return Image.fromarray(rgb.astype(np.uint8))


def build_card(source: Path, card: Path) -> None:
    card.mkdir(parents=True)
    for name, photo, clock, with_exif in SHOTS:
        when = f"{DAY}T{clock}"
        if with_exif:
            Image.open(source / photo).save(card / name, quality=95, exif=_exif(when))
        else:
            shutil.copyfile(source / photo, card / name)
            stamp = datetime.fromisoformat(when).timestamp()
            os.utime(card / name, (stamp, stamp))
    empty_water().save(card / WATER, quality=95, exif=_exif(f"{DAY}T11:40:00"))
    shutil.copyfile(card / "IMG_0002.jpg", card / DUPLICATE)
    (card / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    """Photos of the catalogue's turtles never catalogued (indices 10-13 of a generation with more photos per
    turtle) and of t012, which the 12-turtle catalogue does not hold."""
    from wildtrack.data.synth import generate_synthetic

    base = tmp_path_factory.mktemp("card")
    source = generate_synthetic(base / "more", identities=13, images_per_id=14, image_size=96, encounters_per_id=3,
                                seed=1)
    build_card(source, base / "card")
    return base / "card"


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wildtrack", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kw)


@dataclass
class Run:
    """A finished survey folder, and what the command printed when it finished a killed run."""

    survey_dir: Path
    data: dict
    stdout: str
    embeddings_kept: bool

    @property
    def counts(self) -> dict:
        return self.data["counts"]

    @property
    def review(self) -> Path:
        return self.survey_dir / "review.html"


@pytest.fixture(scope="module")
def survey(card, reranked_index, tiny_artifacts, tmp_path_factory) -> Run:
    """The card surveyed by the command, killed once after its embedding stage and finished with --resume."""
    from wildtrack.survey.files import load_survey

    out = tmp_path_factory.mktemp("survey") / "day1"
    cache = {"WILDTRACK_CACHE_DIR": os.environ.get("WILDTRACK_CACHE_DIR",
                                                   str(tmp_path_factory.getbasetemp() / "cache"))}
    args = ["survey", "run", str(card), "--index", str(reranked_index), "--artifacts", str(tiny_artifacts),
            "--out", str(out), "--pictures", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "wildtrack", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env={**os.environ, **cache})
    embeddings = out / ".work" / "embeddings.npy"
    finished = out / ".work" / "embeddings.json"  # written after the vectors: the stage's checkpoint is complete
    deadline = time.monotonic() + 120
    while not finished.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert finished.exists() and not (out / "survey.json").exists(), "the run should be killed mid-way"
    stamp = embeddings.stat().st_mtime_ns
    done = _cli(*args, "--resume", env=cache)
    assert done.returncode == 0, done.stderr
    return Run(out, load_survey(out), done.stdout, embeddings.stat().st_mtime_ns == stamp)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------- the pieces alone


def test_gap_is_parsed_in_seconds_minutes_and_hours():
    assert [grouping.parse_gap(t) for t in ("30s", "10m", "1h", "90")] == [30, 600, 3600, 90]
    with pytest.raises(ValueError, match="30s, 10m or 1h"):
        grouping.parse_gap("ten minutes")


def test_sub_folders_decide_the_grouping_and_time_windows_cut_at_the_gap():
    assert grouping.choose_grouping(["a/1.jpg", "b/2.jpg"]) == "folders"
    assert grouping.choose_grouping(["1.jpg", "2.jpg", "x/3.jpg"]) == "time"
    taken = {"1.jpg": "2026-07-01T09:00:00", "2.jpg": "2026-07-01T09:09:00", "3.jpg": "2026-07-01T09:20:00"}
    assert grouping.time_windows(list(taken), taken, 600) == [["1.jpg", "2.jpg"], ["3.jpg"]]
    assert grouping.folder_groups(["b/2.jpg", "a/1.jpg", "a/0.jpg"], {}) == [["a/0.jpg", "a/1.jpg"], ["b/2.jpg"]]


def test_a_window_splits_where_the_photos_say_two_turtles_and_keeps_a_lone_photo_otherwise():
    same = np.array([[1, .9, .1, .1, .1], [.9, 1, .1, .1, .1], [.1, .1, 1, .8, .1], [.1, .1, .8, 1, .1],
                     [.1, .1, .1, .1, 1]])
    # photos 0-1 and 2-3 link; 4 has no evidence and nothing against it: it stays with the first largest group,
    # joined by time alone (so that encounter cannot be a confident verdict)
    assert grouping.split_window(same, [None] * 5, 0.5) == ([[0, 1, 4], [2, 3]], {4})
    # the catalogue names 4 as another turtle than 0: it stays alone; a link between two named turtles is refused
    assert grouping.split_by_appearance(same, ["a", None, None, None, "b"], 0.5) == [[0, 1], [2, 3], [4]]
    linked = np.full((2, 2), 0.99)
    assert grouping.split_window(linked, ["a", "b"], 0.5) == ([[0], [1]], set())
    # two photos with no evidence at all: one sighting by time, both joined by time alone
    assert grouping.split_window(np.full((2, 2), np.nan), [None, None], 0.5) == ([[0, 1]], {0, 1})


def test_a_card_straight_from_a_camera_or_in_one_folder_is_grouped_by_time():
    assert grouping.choose_grouping(["DCIM/100CANON/1.jpg", "DCIM/100CANON/2.jpg"]) == "time"
    assert grouping.choose_grouping(["DCIM/100CANON/1.jpg", "DCIM/101CANON/2.jpg"]) == "time"
    assert grouping.choose_grouping(["card/1.jpg", "card/2.jpg"]) == "time"
    assert grouping.choose_grouping(["card/sighting 1/1.jpg", "card/sighting 2/2.jpg"]) == "folders"


def test_a_long_window_matches_each_photo_with_its_nearest_photos_only():
    from wildtrack.survey.pairs import PhotoPairs

    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2]] + 0.01  # two pairs and a stranger
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    same = PhotoPairs(vectors, None, None).within(range(5), nearest=1)
    assert np.allclose(same, same.T, equal_nan=True)
    assert same[0, 1] > 0.99 and same[2, 3] > 0.99 and np.isnan(same[0, 2])


def test_the_scan_lists_every_file_with_its_status_and_time(card, tmp_path):
    photos = {p.photo: p for p in scan_card(card, tmp_path / "thumbs")}
    assert len(photos) == len(SHOTS) + 3
    assert photos[BROKEN].status == "unreadable" and "cannot" in photos[BROKEN].reason
    assert photos[DUPLICATE].status == "duplicate" and photos[DUPLICATE].duplicate_of == "IMG_0002.jpg"
    assert (photos["IMG_0001.jpg"].taken, photos["IMG_0001.jpg"].time_source) == (f"{DAY}T09:00:00", "exif")
    assert (photos["IMG_0005.jpg"].taken, photos["IMG_0005.jpg"].time_source) == (f"{DAY}T09:30:30", "file")
    assert (tmp_path / photos["IMG_0001.jpg"].thumb).is_file()


# ------------------------------------------------------------------------------------- one run of the card


def test_every_photo_is_listed_with_its_status(survey, card):
    rows = {r["photo"]: r for r in _rows(survey.survey_dir / "photos.csv")}
    assert list(_rows(survey.survey_dir / "photos.csv")[0]) == ["photo", "encounter", "proposed_identity", "score",
                                                              "status", "taken", "reason"]
    assert set(rows) == {p.name for p in card.iterdir()}
    assert rows[BROKEN]["status"] == "unreadable" and rows[BROKEN]["encounter"] == ""
    assert rows[DUPLICATE]["status"] == "duplicate" and rows[DUPLICATE]["proposed_identity"] == ""
    assert rows[WATER]["status"] == "no_turtle" and "keypoints" in rows[WATER]["reason"]
    assert survey.counts == {"photos": 16, "ok": 13, "unreadable": 1, "duplicate": 1, "no_turtle": 1,
                             "encounters": 6, "confident": survey.counts["confident"],
                             "review": 6 - survey.counts["confident"], "new_turtles": 1}


def test_encounters_follow_time_and_appearance(survey):
    encounters = survey.data["encounters"]
    assert [e["photos"] for e in encounters] == [photos for _, photos in EXPECTED]
    assert [e["encounter"] for e in encounters] == [f"E00{n}" for n in range(1, 7)]
    same_minute = [e for e in encounters if e["start"].startswith(f"{DAY}T10:00")]
    assert len(same_minute) == 2 and same_minute[0]["window"] == same_minute[1]["window"]
    assert survey.data["settings"]["grouped_by"] == "time"


def test_known_turtles_are_named_with_their_evidence(survey):
    for enc, (turtle, _) in zip(survey.data["encounters"], EXPECTED, strict=True):
        if turtle == "new":
            continue
        assert (enc["new"], enc["proposed_identity"]) == (False, turtle)
        best = enc["candidates"][0]
        assert best["identity"] == turtle and best["inliers"] > 0 and best["survey_photo"] in enc["photos"]
        assert best["catalogue_photo"].startswith(f"{turtle}/")
        assert (survey.survey_dir / best["picture"]).is_file()
        assert Image.open(survey.survey_dir / best["picture"]).format == "JPEG"


def test_the_unknown_turtle_met_twice_gets_one_provisional_id(survey):
    new = [e for e in survey.data["encounters"] if e["new"]]
    assert [e["proposed_identity"] for e in new] == ["new-001", "new-001"]
    assert all(e["verdict"] == "review" for e in new)
    group = new[0]["new_group"]
    assert group["encounters"] == ["E005", "E006"]
    link = group["evidence"][0]
    assert (link["a"], link["b"]) == ("E005", "E006") and link["inliers"] > 0
    assert (survey.survey_dir / link["picture"]).is_file()


def test_decisions_sheet_has_one_row_per_encounter(survey):
    rows = _rows(survey.survey_dir / "decisions.csv")
    assert list(rows[0]) == ["encounter", "photos", "proposed_identity", "score", "verdict", "decision",
                             "final_identity"]
    assert [r["photos"].split(";") for r in rows] == [photos for _, photos in EXPECTED]
    for r in rows:
        prefilled = r["verdict"] == "confident"
        assert (r["decision"], r["final_identity"]) == (("accept", r["proposed_identity"]) if prefilled else ("", ""))
    photos = {r["photo"]: r for r in _rows(survey.survey_dir / "photos.csv")}
    assert photos["IMG_0001.jpg"]["proposed_identity"] == "t000" and float(photos["IMG_0001.jpg"]["score"]) > 0.5
    assert photos["IMG_0010.jpg"]["proposed_identity"] == "new-001"


def test_the_same_card_gives_the_same_files_even_after_a_kill(survey, card, reranked_index, tiny_artifacts,
                                                              tmp_path):
    from wildtrack.survey.run import SurveySettings, run_survey

    again = run_survey(card, reranked_index, tiny_artifacts, tmp_path / "again", SurveySettings(pictures=1))
    for name in ("survey.json", "photos.csv", "decisions.csv"):
        assert (again.survey_dir / name).read_bytes() == (survey.survey_dir / name).read_bytes(), name


# ------------------------------------------------------------------------------------- the command


def test_the_command_refuses_an_existing_survey(survey, card, reranked_index, tiny_artifacts):
    done = _cli("survey", "run", str(card), "--index", str(reranked_index), "--artifacts", str(tiny_artifacts),
                "--out", str(survey.survey_dir))
    assert done.returncode == 2
    assert "--resume" in done.stderr and "another --out" in done.stderr


def test_resume_after_a_kill_does_not_redo_finished_stages(survey):
    assert "reused from the killed run: scanning, embedding" in survey.stdout
    assert survey.embeddings_kept
    assert "decisions.csv" in survey.stdout and "wildtrack survey apply" in survey.stdout

def test_the_run_ends_with_the_review_page(survey):
    assert survey.review == survey.survey_dir / "review.html"
    page = survey.review.read_text(encoding="utf-8")
    assert "E001" in page and "new-001" in page


def test_a_turtle_the_catalogue_lacks_met_beside_a_known_one_is_never_enrolled_without_a_person(
        reranked_index, tiny_artifacts, tmp_path):
    from wildtrack.data.synth.card import generate_card
    from wildtrack.survey.run import SurveySettings, run_survey

    # t003 (catalogued) and t012 (not) photographed within one minute, their photos interleaved
    truth = generate_card(tmp_path / "card", known=[3, 12], photos_per_encounter=3, image_size=96, seed=1,
                          extras=False)
    result = run_survey(tmp_path / "card", reranked_index, tiny_artifacts, tmp_path / "out",
                        SurveySettings(pictures=0))
    stranger = {p.file for p in truth if p.identity == "t012"}
    for e in result.data["encounters"]:
        if stranger & set(e["photos"]):
            assert e["verdict"] == "review", e  # pre-filled accept would enrol t012 as someone else
            if not stranger >= set(e["photos"]):  # mixed with t003's photos: only by time, and it says so
                assert stranger & set(e["joined_by_time"]), e
