"""The drag-and-drop page in a real headless Chromium against a real server: identify, see cards, enrol.

Uses the system Chromium (``apt-get install chromium``), never ``playwright install``: the machine is offline.
Set ``WILDTRACK_SCREENSHOT_DIR`` to keep the desktop and phone screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from _serve_helpers import Server, build_gallery
from conftest import CHROMIUM_ARGS, _chromium  # noqa: F401 - other browser tests import them from here

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def server(synth_data, tiny_artifacts, tmp_path_factory):
    base = tmp_path_factory.mktemp("web")
    build_gallery(synth_data, tiny_artifacts, base / "index")
    srv = Server(base / "index", tiny_artifacts, base / "server.log", threshold=0.5).start()
    yield srv
    srv.stop()


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("WILDTRACK_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    assert path.stat().st_size > 10_000
    return path


def test_identify_then_enrol_in_the_browser(browser, server, synth_data, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    photo = synth_data / "t005" / "t005_003.jpg"
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    expect(page.get_by_test_id("identity-count")).to_have_text("12")
    expect(page.get_by_test_id("enroll-panel")).to_be_hidden()

    page.get_by_test_id("file-input").set_input_files(str(photo))
    expect(page.get_by_test_id("preview")).to_be_visible()
    cards = page.get_by_test_id("result-card")
    expect(cards).to_have_count(5)
    verdict = page.get_by_test_id("verdict")
    expect(verdict).to_have_attribute("data-state", "known")
    expect(page.get_by_test_id("verdict-name")).to_have_text("t005")
    expect(cards.first).to_have_attribute("data-identity", "t005")
    expect(cards.first).to_have_class("card predicted")
    expect(cards.nth(1)).to_have_class("card other")
    expect(cards.first.locator("img")).to_have_js_property("complete", True)
    assert cards.first.locator("img").evaluate("img => img.naturalWidth") > 0  # the thumbnail really loaded
    expect(page.get_by_test_id("enroll-existing")).to_have_value("t005")  # preselected: add to the match
    _shot(page, tmp_path, "page_desktop.png")

    # Enrol the photo as a new individual; the count in the header grows.
    page.get_by_test_id("enroll-existing").select_option("")
    page.get_by_test_id("enroll-new-name").fill("Browser Turtle")
    page.get_by_test_id("enroll-submit").click()
    expect(page.get_by_test_id("enroll-status")).to_contain_text("Created Browser Turtle")
    expect(page.get_by_test_id("identity-count")).to_have_text("13")
    expect(page.get_by_test_id("enroll-existing")).to_have_value("Browser Turtle")

    # An API error is shown in the page, not swallowed.
    page.get_by_test_id("file-input").set_input_files(
        files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"field notes, not a photo"}])
    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("error")).to_contain_text("not a supported image")
    assert not errors, errors
    page.close()


def test_phone_layout(browser, server, synth_data, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                            has_touch=True)
    page.goto(server.url + "/")
    page.get_by_test_id("file-input").set_input_files(str(synth_data / "t002" / "t002_001.jpg"))
    expect(page.get_by_test_id("result-card")).to_have_count(5)
    expect(page.get_by_test_id("verdict")).to_be_visible()
    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # Upload, then the answer, then the enrol form: the order a phone user scrolls through.
    # Document coordinates, read in one go: the page smooth-scrolls to the verdict, so viewport positions move.
    tops = page.evaluate("""ids => ids.map(id => document.querySelector(`[data-testid="${id}"]`)
                                                .getBoundingClientRect().top + window.scrollY)""",
                         ["dropzone", "verdict", "enroll-form"])
    assert tops == sorted(tops)
    _shot(page, tmp_path, "page_phone.png")
    page.close()


def test_a_reranked_index_shows_the_local_evidence_on_each_card(browser, synth_data, tiny_artifacts, reranked_index,
                                                                tmp_path):
    from playwright.sync_api import expect

    srv = Server(reranked_index, tiny_artifacts, tmp_path / "server.log").start()
    try:
        expect.set_options(timeout=TIMEOUT_MS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(srv.url + "/")
        page.get_by_test_id("file-input").set_input_files(str(synth_data / "t004" / "t004_007.jpg"))
        cards = page.get_by_test_id("result-card")
        first = cards.first
        expect(first).to_have_attribute("data-identity", "t004")
        expect(first.get_by_test_id("evidence")).to_have_text(re.compile(r"^[1-9]\d* matching keypoints? · "
                                                                          r"cosine -?[01]\.\d{3}$"))
        # Each card's big number is the P(same) the list is ordered by: never increasing down the list.
        shown = [float(t.removeprefix("P(same) ")) for t in cards.get_by_test_id("card-score").all_inner_texts()]
        assert len(shown) == 5 and shown == sorted(shown, reverse=True), shown
        expect(page.get_by_test_id("operating-point")).to_contain_text(
            re.compile(r"^New individual below P\(same\) 0\.\d{3} for a photo.*fitted on the catalogue at 5 % "
                       r"false accepts \(there: [\d.]+ % of known turtles accepted, [\d.]+ % false accepts\)"
                       r"; named automatically \(confident\) above P\(same\) .*at 1 % false accepts.*\.$"))
        # ... and first in words a biologist reads without the jargon
        expect(page.get_by_test_id("operating-point-words")).to_have_text(
            re.compile(r"^Below a match probability of 0\.\d{3}, WildTrack says “new turtle”\. On this catalogue, "
                       r"(that lets through about 1 wrong turtle in \d+|no wrong turtle got through)\.$"))
        expect(page.get_by_test_id("synthetic-banner")).to_be_visible()  # synth_data comes from `data synth`
        expect(first).to_contain_text(re.compile(r"[1-9]\d* of its photos among the closest in the catalogue"))
        # Click a card: the photo beside the catalogue's, the verified keypoint pairs drawn.
        first.click()
        picture = page.get_by_test_id("match-picture")
        expect(page.get_by_test_id("match-caption")).to_contain_text(re.compile(r"t004: [1-9]\d* keypoint pairs"))
        expect(picture).to_be_visible()
        page.wait_for_function("() => document.getElementById('evidence-image').naturalWidth > 0",
                               timeout=TIMEOUT_MS)
        assert picture.evaluate("img => img.naturalWidth") > picture.evaluate("img => img.naturalHeight") > 100
        _shot(page, tmp_path, "page_evidence.png")
        # Several photos of one sighting are identified together: the most confident photo decides.
        photos = [str(synth_data / "t004" / f"t004_00{n}.jpg") for n in (7, 8, 9)]
        page.get_by_test_id("file-input").set_input_files(photos)
        expect(page.get_by_test_id("status")).to_contain_text("3 photos of one encounter")
        expect(page.get_by_test_id("verdict-name")).to_have_text("t004")
        first = page.get_by_test_id("result-card").first
        expect(first).to_have_attribute("data-identity", "t004")
        expect(first).to_contain_text(re.compile(r"closest turtle in [1-3] of 3 photos"))
        expect(page.get_by_test_id("enroll-submit")).to_have_text("Enrol 3 photos")  # the encounter, not one
        expect(first.get_by_test_id("evidence")).to_have_text(re.compile(r"^[1-9]\d* matching keypoints? · "))
        _shot(page, tmp_path, "page_encounter.png")
        page.close()
    finally:
        srv.stop()


def test_a_server_with_an_api_token_asks_for_it_once_and_enrols(browser, synth_data, tiny_artifacts, tmp_path):
    from playwright.sync_api import expect

    base = tmp_path / "token"
    build_gallery(synth_data, tiny_artifacts, base / "index")
    srv = Server(base / "index", tiny_artifacts, base / "server.log", config={"api_token": "field-team-secret"}).start()
    try:
        expect.set_options(timeout=TIMEOUT_MS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        prompts: list[str] = []

        def answer(dialog):
            prompts.append(dialog.message)
            dialog.accept("field-team-secret")

        page.on("dialog", answer)
        page.goto(srv.url + "/")
        page.get_by_test_id("file-input").set_input_files(str(synth_data / "t005" / "t005_003.jpg"))
        expect(page.get_by_test_id("result-card")).to_have_count(5)  # identifying needs no token
        assert prompts == []
        page.get_by_test_id("enroll-existing").select_option("")
        page.get_by_test_id("enroll-new-name").fill("Token Turtle")
        page.get_by_test_id("enroll-submit").click()
        expect(page.get_by_test_id("enroll-status")).to_contain_text("Created Token Turtle")
        assert len(prompts) == 1 and "API token" in prompts[0]
        page.get_by_test_id("file-input").set_input_files(str(synth_data / "t005" / "t005_004.jpg"))
        expect(page.get_by_test_id("result-card")).to_have_count(5)
        page.get_by_test_id("enroll-existing").select_option("t005")
        page.get_by_test_id("enroll-submit").click()
        expect(page.get_by_test_id("enroll-status")).to_contain_text("Added to t005")
        assert len(prompts) == 1  # kept for the tab (sessionStorage), not asked again
        page.close()
    finally:
        srv.stop()
