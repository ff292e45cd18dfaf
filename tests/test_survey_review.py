"""review.html as a person opens it after a field day: rendered from a survey folder written in the spec's format
(survey.json, decisions.csv, thumbs/, pictures/) and read in a real headless Chromium.

The folder holds four encounters (one confident, one to review, two of one new turtle), an unreadable file, a
duplicate and a photo with no turtle; a file name and a person's renamed identity carry markup. Set
``WILDTRACK_SCREENSHOT_DIR`` to keep the screenshot.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from test_web_page import TIMEOUT_MS

from wildtrack.decide.policy import DecisionPolicy
from wildtrack.survey.decisions import RENAME, initial_decisions, set_decision, write_decisions
from wildtrack.survey.files import DECISIONS_FILE, REVIEW_FILE, SurveyError, load_survey, save_survey
from wildtrack.survey.review import card_order, render_review, write_review

SCRIPT_PHOTO = "card/<script>window.pwned=1</script>.jpg"
EVIL_NAME = "<img src=x onerror='window.pwned=2'>"
EXPECTED_ORDER = ["E002", "E004", "E003", "E001"]  # review by distance to 0.58: .04, .13, .28; then confident


def _jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), label: str = "") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).text((4, 4), label, fill=(255, 255, 255))
    image.save(path, "JPEG", quality=80)
    return path.read_bytes()


def _photo(photos: Path, survey: Path, name: str, colour, encounter, taken, score=None, status="ok",
           duplicate_of=None, data: bytes | None = None) -> dict:
    """One photo of the card as the run records it: the file under PHOTOS and its thumbnail in thumbs/."""
    path = photos / name
    if status == "unreadable":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a jpeg")
    elif data is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        _jpeg(path, colour, label=Path(name).stem[:8])
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    thumb = None
    if status != "unreadable":
        thumb = f"thumbs/{sha[:16]}.jpg"
        if not (survey / thumb).exists():
            _jpeg(survey / thumb, colour, (40, 30))
    return {"photo": name, "sha256": sha, "status": status, "reason": "cannot identify image file"
            if status == "unreadable" else None, "duplicate_of": duplicate_of, "taken": taken,
            "time_source": "exif" if taken else None, "encounter": encounter, "score": score, "thumb": thumb}


def _candidate(survey: Path, identity, score, cosine, inliers, survey_photo, picture=None) -> dict:
    if picture:
        _jpeg(survey / picture, (90, 120, 160), (120, 50), label=identity)
    return {"identity": identity, "score": score, "cosine": cosine, "inliers": inliers, "support": 2,
            "catalogue_image_id": f"{identity}-img", "catalogue_photo": f"{identity}/{identity}_000.jpg",
            "survey_photo": survey_photo, "picture": picture}


def _encounter(key, photos, start, verdict, proposed, score, candidates, new=False, new_group=None) -> dict:
    return {"encounter": key, "photos": photos, "start": start, "end": start, "date": start[:10], "window": "T001",
            "verdict": verdict, "new": new, "proposed_identity": proposed, "score": score,
            "score_kind": "match_probability", "threshold": 0.58, "confident_threshold": 0.93,
            "candidates": candidates, "new_group": new_group}


def build_survey(base: Path) -> Path:
    """A finished survey folder, written by hand in survey.json format 1."""
    photos, survey = base / "PHOTOS", base / "SURVEY"
    survey.mkdir(parents=True)
    day = "2026-07-01T"
    dup_bytes = _jpeg(base / "tmp.jpg", (30, 140, 60), label="IMG_0002")
    records = [
        _photo(photos, survey, "card/IMG_0001.JPG", (20, 120, 50), "E001", day + "10:03:05", 0.95),
        _photo(photos, survey, "card/IMG_0002.JPG", (30, 140, 60), "E001", day + "10:03:40", 0.97, data=dup_bytes),
        _photo(photos, survey, "card/IMG_0002 copy.JPG", (30, 140, 60), "E001", day + "10:03:40",
               status="duplicate", duplicate_of="card/IMG_0002.JPG", data=dup_bytes),
        _photo(photos, survey, "card/IMG_0003.JPG", (160, 90, 30), "E002", day + "10:40:00", 0.62),
        _photo(photos, survey, SCRIPT_PHOTO, (170, 100, 40), "E002", day + "10:40:30", 0.55),
        _photo(photos, survey, "card/IMG_0005.JPG", (60, 60, 170), "E003", day + "11:20:00", 0.30),
        _photo(photos, survey, "card/IMG_0006.JPG", (70, 70, 180), "E004", day + "13:05:00", 0.45),
        _photo(photos, survey, "card/broken.jpg", (0, 0, 0), None, None, status="unreadable"),
        _photo(photos, survey, "card/sand.jpg", (200, 190, 150), None, day + "13:30:00", status="no_turtle"),
    ]
    group = {"id": "new-001", "encounters": ["E003", "E004"],
             "evidence": [{"a": "E003", "b": "E004", "score": 0.88, "inliers": 40,
                           "picture": "pictures/new-001-E003-E004.jpg"}]}
    _jpeg(survey / group["evidence"][0]["picture"], (120, 60, 160), (120, 50), label="new-001")
    encounters = [
        _encounter("E001", ["card/IMG_0001.JPG", "card/IMG_0002.JPG"], day + "10:03:05", "confident", "t004", 0.97,
                   [_candidate(survey, "t004", 0.97, 0.71, 54, "card/IMG_0002.JPG", "pictures/E001-1.jpg"),
                    _candidate(survey, "t007", 0.12, 0.40, 6, "card/IMG_0001.JPG", "pictures/E001-2.jpg")]),
        _encounter("E002", ["card/IMG_0003.JPG", SCRIPT_PHOTO], day + "10:40:00", "review", "t002", 0.62,
                   [_candidate(survey, "t002", 0.62, 0.55, 17, "card/IMG_0003.JPG", "pictures/E002-1.jpg"),
                    _candidate(survey, "t009", 0.31, 0.52, 9, SCRIPT_PHOTO)]),
        _encounter("E003", ["card/IMG_0005.JPG"], day + "11:20:00", "review", "new-001", 0.30,
                   [_candidate(survey, "t001", 0.30, 0.44, 8, "card/IMG_0005.JPG", "pictures/E003-1.jpg")],
                   new=True, new_group=group),
        _encounter("E004", ["card/IMG_0006.JPG"], day + "13:05:00", "review", "new-001", 0.45,
                   [_candidate(survey, "t003", 0.45, 0.47, 11, "card/IMG_0006.JPG", "pictures/E004-1.jpg")],
                   new=True, new_group=group),
    ]
    policy = {**DecisionPolicy("match_probability", 0.41, 0.58, "fitted", 0.05,
                               {"TAR": 0.98, "FAR": 0.047, "num_known": 100, "num_unknown": 100}).to_dict(),
              "confident_photo_threshold": 0.9, "confident_encounter_threshold": 0.93, "confident_far": 0.01}
    data = {"survey_id": "0123456789abcdef", "photos_root": str(photos),
            "catalogue": {"index_dir": str(base / "INDEX"), "catalogue_id": "cat", "generation": 3,
                          "model_fingerprint": "cafe", "images": 120, "identities": 12, "synthetic": True},
            "settings": {"gap_s": 600, "grouping": "auto", "grouped_by": "time", "topk": 5},
            "policy": policy, "photos": records, "encounters": encounters,
            "counts": {"photos": 9, "ok": 6, "unreadable": 1, "duplicate": 1, "no_turtle": 1, "encounters": 4,
                       "confident": 1, "review": 3, "new_turtles": 1}}
    save_survey(survey, data)
    write_decisions(survey, initial_decisions(data))
    set_decision(survey, data, "E002", RENAME, EVIL_NAME)
    return survey


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    folder = build_survey(tmp_path_factory.mktemp("review"))
    write_review(folder)
    return folder


@pytest.fixture()
def page(browser, survey):
    """review.html opened from disk; any request that is not a local file is refused and recorded."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    remote: list[str] = []

    def refuse(route):
        remote.append(route.request.url)
        route.abort()

    page.route(lambda url: not url.startswith("file://"), refuse)
    page.goto((survey / REVIEW_FILE).as_uri())
    page.remote_requests = remote
    yield page
    page.close()


def test_cards_come_uncertain_first_and_confident_ones_collapsed(page):
    cards = page.locator("section.enc")
    assert [cards.nth(i).get_attribute("data-encounter") for i in range(cards.count())] == EXPECTED_ORDER
    assert [cards.nth(i).get_attribute("data-verdict") for i in range(cards.count())] == \
        ["review", "review", "review", "confident"]
    for key in EXPECTED_ORDER[:3]:
        assert page.locator(f"#card-{key} details").evaluate("d => d.open")
        assert page.locator(f"#card-{key} .decision").is_visible()
    confident = page.locator("#card-E001")
    assert not confident.locator("details").evaluate("d => d.open")
    assert confident.locator("summary").is_visible()
    assert "t004" in confident.locator("summary").inner_text()
    assert not confident.locator(".candidates").is_visible()
    assert "closest to the new-individual threshold" in page.locator("#order").inner_text()


def test_header_counts_operating_point_and_next_step(page, survey):
    counts = {page.locator("[data-count]").nth(i).get_attribute("data-count"):
              page.locator("[data-count] .v").nth(i).inner_text() for i in range(page.locator("[data-count]").count())}
    assert counts == {"photos": "9", "encounters": "4", "confident": "1", "review": "3", "new_turtles": "1",
                      "unusable": "3"}
    policy = DecisionPolicy("match_probability", 0.41, 0.58, "fitted", 0.05,
                            {"TAR": 0.98, "FAR": 0.047, "num_known": 100, "num_unknown": 100})
    assert policy.sentence() in page.locator("#operating-point").inner_text()
    confident = page.locator("#confident-point").inner_text()
    assert "0.930" in confident and "1 % false accepts" in confident
    step = page.locator("#next-step").inner_text()
    assert "wildtrack survey apply" in step and "--index" in step and "--artifacts" in step
    assert str(survey.resolve()) in step
    assert "2 of 4 encounters decided" in page.locator("#decided").inner_text()  # E001 pre-filled, E002 renamed
    assert page.locator("#synthetic").is_visible()
    assert page.locator("#sheet-error").count() == 0


def test_every_picture_loads_with_a_text_alternative(page):
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    images = page.locator("img")
    # thumbnails: E001 2, E002 2, E003 1, E004 1, the duplicate, the photo without turtle; match pictures: E001 2,
    # E002 1, E003 1, E004 1; the new turtle's evidence on both of its cards
    assert images.count() == 15
    for i in range(images.count()):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        assert (image.get_attribute("alt") or "").strip()
        assert not (image.get_attribute("src") or "").startswith(("/", "http", "file:"))
    assert page.remote_requests == []
    assert page.locator("h1").count() == 1 and page.locator("h3").count() >= 4


def test_new_turtle_cards_link_each_other_with_their_evidence(page):
    for key, other in (("E003", "E004"), ("E004", "E003")):
        card = page.locator(f"#card-{key}")
        assert "new-001" in card.locator("summary").inner_text()
        assert card.locator(f".new-group a[href='#card-{other}']").count() == 1
        assert "0.880" in card.locator(".evidence figcaption").inner_text()


def test_unusable_photos_are_listed_with_their_reason(page):
    assert "cannot identify image file" in page.locator("#unusable-unreadable + .photos").inner_text()
    duplicate = page.locator("#unusable-duplicate + .photos").inner_text()
    assert "IMG_0002 copy.JPG" in duplicate and "the same bytes as card/IMG_0002.JPG" in duplicate
    assert "card/sand.jpg" in page.locator("#unusable-no_turtle + .photos").inner_text()
    assert "IMG_0002 copy.JPG" in page.locator("#card-E001").text_content()  # also named on its encounter's card


def test_file_names_and_identities_are_text_not_markup(page, survey):
    assert page.evaluate("window.pwned") is None
    assert page.locator("script").count() == 0
    card = page.locator("#card-E002")
    assert SCRIPT_PHOTO in card.locator(f"figure.photo[data-photo='{SCRIPT_PHOTO}']").inner_text()
    assert card.locator(".decision").get_attribute("data-decision") == "rename"
    assert EVIL_NAME in card.locator(".decision").inner_text()
    # the photo's full-size link is relative and reaches the file despite the markup in its name
    href = card.locator(f"figure.photo[data-photo='{SCRIPT_PHOTO}'] a").evaluate("a => a.href")
    from urllib.parse import unquote, urlparse

    assert Path(unquote(urlparse(href).path)).is_file()
    shot = survey.parent / "review.png"
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("WILDTRACK_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "survey_review_test.png")


def test_an_unusable_sheet_shows_the_run_proposals_under_a_banner(browser, survey, tmp_path):
    copy = tmp_path / "SURVEY"
    shutil.copytree(survey, copy)
    sheet = copy / DECISIONS_FILE
    sheet.write_text(sheet.read_text().replace(",t002,", ",t099,"))  # someone edited the proposal
    write_review(copy)
    page = browser.new_page()
    page.goto((copy / REVIEW_FILE).as_uri())
    banner = page.locator("#sheet-error")
    assert banner.is_visible()
    assert "E002's proposed identity was changed" in banner.inner_text()
    assert page.locator("#card-E002 .decision").get_attribute("data-decision") == "undecided"
    assert page.locator("#card-E001 details .decision").get_attribute("data-decision") == "accept"
    page.close()


def test_the_page_is_reproducible_and_needs_a_survey(survey, tmp_path):
    first = (survey / REVIEW_FILE).read_bytes()
    assert write_review(survey).read_bytes() == first
    with pytest.raises(SurveyError, match="holds no survey.json"):
        write_review(tmp_path)


def test_order_without_a_threshold_falls_back_to_lowest_score_first():
    encounters = [{"encounter": "E001", "verdict": "review", "score": 0.8, "threshold": None},
                  {"encounter": "E002", "verdict": "confident", "score": 0.99},
                  {"encounter": "E003", "verdict": "review", "score": None},
                  {"encounter": "E004", "verdict": "review", "score": 0.2, "threshold": None}]
    assert [e["encounter"] for e in card_order(encounters)] == ["E003", "E004", "E001", "E002"]


def test_an_index_without_the_confident_point_says_every_verdict_is_to_review(survey):
    data = load_survey(survey)
    for key in ("confident_photo_threshold", "confident_encounter_threshold", "confident_far"):
        data["policy"].pop(key)
    page = render_review(survey, data, initial_decisions(data))
    assert "No confident operating point" in page and "Rebuild the index" in page
    assert data["policy"]["sentence"] in page


def test_the_review_command_renders_the_page_again_after_the_sheet_was_edited(survey, tmp_path):
    """A person edits decisions.csv in a spreadsheet, then `wildtrack survey review SURVEY`: the page shows the
    edit; a sheet apply would refuse still gets its page (with the banner) and exit code 1 with the problems."""
    from typer.testing import CliRunner

    from wildtrack.cli import app

    copy = tmp_path / "SURVEY"
    shutil.copytree(survey, copy)
    sheet = copy / DECISIONS_FILE
    with sheet.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    next(r for r in rows if r["encounter"] == "E003")["decision"] = "reject"
    with sheet.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    runner = CliRunner()
    result = runner.invoke(app, ["survey", "review", str(copy)])
    assert result.exit_code == 0, result.output
    assert str(copy / REVIEW_FILE) in result.output.replace("\n", "")
    assert "1 encounter undecided: E004" in result.output
    assert "<b>reject</b>: nothing will be enrolled" in (copy / REVIEW_FILE).read_text()

    sheet.write_text(sheet.read_text().replace(",t002,", ",t099,"))  # someone edited the proposal
    (copy / REVIEW_FILE).unlink()
    refused = runner.invoke(app, ["survey", "review", str(copy)])
    assert refused.exit_code == 1 and "E002's proposed identity was changed" in refused.output
    assert "sheet-error" in (copy / REVIEW_FILE).read_text()
