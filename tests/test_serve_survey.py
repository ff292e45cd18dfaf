"""Surveys on the service: a card uploaded as a zip runs in the background, its encounters are decided on the API
and on the page, and one apply enrols them into the served catalogue.

One real uvicorn server on 127.0.0.1 with an API token (a copy of the re-ranking test index), a generated field
card (:func:`wildtrack.data.synth.card.generate_card`: turtles of the catalogue seen again, one it does not hold
met twice, open water, a duplicate, a cut file), and the system Chromium for the page.
"""

from __future__ import annotations

import io
import re
import shutil
import stat
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from _serve_helpers import Server
from test_web_page import TIMEOUT_MS, _shot

TOKEN = "survey-team-secret"
AUTH = {"X-API-Token": TOKEN}
MAX_FILES = 40
MAX_UNPACKED = 4_000_000
RUN_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def card_zip(tmp_path_factory) -> Path:
    """The card as a team zips it: a folder of camera files (the catalogue's t000-t002 again, t012 twice)."""
    from wildtrack.data.synth.card import generate_card

    base = tmp_path_factory.mktemp("card")
    photos = generate_card(base / "card", known=[0, 1, 2], unknown=[12], seed=1, photos_per_encounter=2,
                           image_size=96)
    path = base / "card.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p in photos:
            z.write(base / "card" / p.file, f"card/{p.file}")
        z.writestr("card/notes.txt", "dive 1, north reef")
    return path


@pytest.fixture(scope="module")
def server(reranked_index, tiny_artifacts, tmp_path_factory):
    base = tmp_path_factory.mktemp("survey-serve")
    shutil.copytree(reranked_index, base / "index")
    srv = Server(base / "index", tiny_artifacts, base / "server.log",
                 config={"api_token": TOKEN, "max_survey_files": MAX_FILES,
                         "max_survey_unpacked_bytes": MAX_UNPACKED}).start()
    srv.base = base
    yield srv
    srv.stop()


def _post_zip(server: Server, data: bytes, name: str = "card.zip", headers: dict | None = None) -> httpx.Response:
    return httpx.post(server.url + "/surveys", files=[("files", (name, data, "application/zip"))],
                      headers=AUTH if headers is None else headers, timeout=60)


def _zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buf.getvalue()


def _wait_done(server: Server, status_url: str) -> tuple[dict, list[str]]:
    stages: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        job = httpx.get(server.url + status_url, timeout=10).json()
        if job["stage"] and job["stage"] not in stages:
            stages.append(job["stage"])
        if job["state"] in ("done", "failed"):
            return job, stages
        time.sleep(0.2)
    raise AssertionError(f"survey not finished in {RUN_TIMEOUT:.0f} s:\n{server.log()}")


def test_zips_that_escape_the_folder_or_explode_are_refused_before_anything_is_written(server):
    jpeg = b"\xff\xd8\xff\xe0" + b"0" * 64
    refusals = {
        "outside": (_zip({"card/../../escape.jpg": jpeg}), 400, "points outside the card's folder"),
        "absolute": (_zip({"/tmp/escape.jpg": jpeg}), 400, "points outside the card's folder"),
        "link": (_zip({"card/a.jpg": jpeg}, links={"card/b.jpg": "/etc/passwd"}), 400, "symbolic link"),
        "bomb": (_zip({"card/huge.jpg": bytes(MAX_UNPACKED + 1)}), 413, "unpack to"),
        "too many": (_zip({f"card/{n:03d}.jpg": jpeg for n in range(MAX_FILES + 1)}), 413, "at most 40"),
        "no photos": (_zip({"card/notes.txt": b"dive log"}), 400, "holds no photos"),
        "not a zip": (b"PK\x03\x04 truncated", 400, "not a readable zip"),
    }
    for what, (data, status, words) in refusals.items():
        r = _post_zip(server, data)
        assert r.status_code == status, (what, r.text)
        assert words in r.json()["detail"], (what, r.json())
    assert len(refusals["bomb"][0]) < 50_000  # small on the wire: refused by what it declares
    # a write: the token is required like /enroll's
    r = _post_zip(server, _zip({"card/a.jpg": jpeg}), headers={})
    assert r.status_code == 401
    # nothing was kept: no survey listed, no folder left, nothing written outside
    assert httpx.get(server.url + "/surveys").json() == {"surveys": []}
    surveys = server.base / "index" / "surveys"
    assert list(surveys.iterdir()) == []
    assert not list(server.base.rglob("escape.jpg")) and not Path("/tmp/escape.jpg").exists()


def test_a_card_runs_in_the_background_is_decided_and_applied_into_the_served_catalogue(server, card_zip):
    before = httpx.get(server.url + "/health").json()
    started = _post_zip(server, card_zip.read_bytes())
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["photos"] == 13 and body["ignored"] == ["card/notes.txt"]
    assert started.headers["location"] == body["status_url"]
    # one survey at a time: a second card waits its turn
    busy = _post_zip(server, card_zip.read_bytes())
    assert busy.status_code == 409 and "one survey runs at a time" in busy.json()["detail"]

    job, stages = _wait_done(server, body["status_url"])
    assert job["state"] == "done", job
    assert stages and job["stage"] is None, (stages, job)  # polling saw the run's stages go by

    r = httpx.get(server.url + body["result_url"])
    assert r.status_code == 200
    assert str(server.base) not in r.text  # answers never name server paths
    result = r.json()
    survey, decisions = result["survey"], result["decisions"]
    assert survey["counts"]["photos"] == 13
    assert {p["status"] for p in survey["photos"]} == {"ok", "duplicate", "unreadable", "no_turtle"}
    assert [d["encounter"] for d in decisions] == [e["encounter"] for e in survey["encounters"]]
    assert result["undecided"] == sum(d["decision"] == "" for d in decisions)
    # the page's order is review.html's: to review first, the hardest calls first
    from wildtrack.survey.review import card_order
    assert result["review_order"] == [e["encounter"] for e in card_order(survey["encounters"])]

    # thumbnails and match pictures are served from the survey folder, and nothing else of it
    thumb = next(p["thumb"] for p in survey["photos"] if p["thumb"])
    r = httpx.get(server.url + result["files_url"] + thumb)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    picture = next(c["picture"] for e in survey["encounters"] for c in e["candidates"] if c.get("picture"))
    assert httpx.get(server.url + result["files_url"] + picture).status_code == 200
    for bad in ("thumbs/..%2F..%2Fjob.json", "thumbs/../../job.json", ".work/scan.json", "survey.json",
                "thumbs/%2E%2E%2Fdecisions.csv"):
        r = httpx.get(server.url + result["files_url"] + bad)
        assert r.status_code in (404, 422) and b'"state"' not in r.content, bad

    # decisions: the same rules as the sheet, refusals say why
    url = server.url + f"/surveys/{body['id']}/decisions"
    known = next(e for e in survey["encounters"] if not e["new"] and e["proposed_identity"])
    new = next(e for e in survey["encounters"] if e["new"])
    r = httpx.post(url, json={"encounter": new["encounter"], "decision": "rename"}, headers=AUTH)
    assert r.status_code == 400 and "rename needs the identity" in r.json()["detail"]
    for name, why in (("T000", "looks like the catalogued individual 't000'"), ("a/b", "may not contain slashes")):
        r = httpx.post(url, json={"encounter": new["encounter"], "decision": "rename", "final_identity": name},
                       headers=AUTH)
        assert r.status_code == 400 and why in r.json()["detail"], r.json()  # said now, not at apply
    r = httpx.post(url, json={"encounter": "E999", "decision": "reject"}, headers=AUTH)
    assert r.status_code == 400 and "not one of this survey's" in r.json()["detail"]
    assert httpx.post(url, json={"encounter": known["encounter"], "decision": "accept"}).status_code == 401
    r = httpx.post(url, json={"encounter": known["encounter"], "decision": "accept"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["decision"]["final_identity"] == known["proposed_identity"]
    r = httpx.post(url, json={"encounter": new["encounter"], "decision": "rename", "final_identity": "Survey Turtle"},
                   headers=AUTH)
    assert r.status_code == 200 and r.json()["decision"]["final_identity"] == "Survey Turtle"
    sheet = (server.base / "index" / "surveys" / body["id"] / "survey" / "decisions.csv").read_text()
    assert f"{new['encounter']}," in sheet and ",rename,Survey Turtle" in sheet  # the same file the CLI applies
    page = (server.base / "index" / "surveys" / body["id"] / "survey" / "review.html").read_text()
    assert "<b>rename</b>: its photos will be enrolled as <b>Survey Turtle</b>" in page  # the folder's page too

    decided = httpx.get(server.url + body["result_url"]).json()
    assert decided["undecided"] == r.json()["undecided"]
    ok = {p["photo"] for p in survey["photos"] if p["status"] == "ok"}
    enrolled = sum(len(ok.intersection(d["photos"])) for d in decided["decisions"]
                   if d["decision"] in ("accept", "rename"))

    # apply: a write; then the served catalogue holds the photos at once
    apply_url = server.url + f"/surveys/{body['id']}/apply"
    assert httpx.post(apply_url, timeout=120).status_code == 401
    r = httpx.post(apply_url, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    applied = r.json()
    assert applied["index_count"] == before["index_count"] + enrolled
    assert any("enrolled" in line for line in applied["summary"]), applied
    health = httpx.get(server.url + "/health").json()
    assert health["index_count"] == before["index_count"] + enrolled
    assert health["generation"] > before["generation"]
    names = {i["identity"] for i in httpx.get(server.url + "/identities").json()["identities"]}
    assert "Survey Turtle" in names
    # again: nothing new
    again = httpx.post(apply_url, headers=AUTH, timeout=120).json()
    assert again["index_count"] == applied["index_count"]
    assert httpx.get(server.url + body["result_url"]).json()["applied"] is not None


def test_the_page_reviews_a_survey_accept_one_rename_one_apply(browser, server, card_zip, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    before = httpx.get(server.url + "/health").json()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    prompts: list[str] = []

    def answer(dialog):
        prompts.append(dialog.message)
        dialog.accept(TOKEN)

    page.on("dialog", answer)
    page.goto(server.url + "/")
    page.get_by_test_id("view-survey").click()
    expect(page.get_by_test_id("survey-view")).to_be_visible()
    expect(page.get_by_test_id("dropzone")).to_be_hidden()  # the identify view is put away
    earlier = httpx.get(server.url + "/surveys").json()["surveys"]  # e.g. the API test's, when it ran first
    expect(page.get_by_test_id("survey-list")).to_contain_text("done" if earlier else "none yet")

    page.get_by_test_id("survey-input").set_input_files(str(card_zip))
    encounters = page.get_by_test_id("encounter")
    expect(encounters.first).to_be_visible(timeout=int(RUN_TIMEOUT * 1000))
    assert len(prompts) == 1 and "API token" in prompts[0]  # starting a survey is a write
    n = encounters.count()
    verdicts = [encounters.nth(i).get_attribute("data-verdict") for i in range(n)]
    assert verdicts == sorted(verdicts, key=lambda v: v != "review")  # the uncertain ones first
    for i in range(n):  # confident ones are folded, the others open
        assert encounters.nth(i).evaluate("d => d.open") == (verdicts[i] == "review")
    undecided = int(page.get_by_test_id("undecided-count").inner_text())

    # accept a catalogued turtle's encounter (any undecided one when the catalogue names them all confidently)
    def card(encounter: str):
        return page.locator(f'[data-testid="encounter"][data-encounter="{encounter}"]')  # stays put once decided

    states = {encounters.nth(i).get_attribute("data-encounter"): (encounters.nth(i).get_attribute("data-decision"),
                                                                   encounters.nth(i).get_attribute("data-new"))
              for i in range(n)}
    open_ones = [e for e, (d, _) in states.items() if d == ""]
    assert open_ones, states  # the turtle the catalogue does not hold is never confident
    known_id = next((e for e in open_ones if states[e][1] == "false"), open_ones[0])
    known = card(known_id)
    if not known.evaluate("d => d.open"):
        known.locator("summary").click()
    known.get_by_test_id("accept").click()
    expect(known.get_by_test_id("decision-state")).to_have_text(re.compile(r"^accepted as \S+$"))
    expect(known.get_by_test_id("accept")).to_have_attribute("aria-pressed", "true")
    # rename another (a new turtle's when there is one): the name is typed into the card, not a dialog
    others = [e for e in states if e != known_id]
    new_id = sorted(others, key=lambda e: (states[e][0] != "", states[e][1] != "true"))[0]
    new = card(new_id)
    if not new.evaluate("d => d.open"):
        new.locator("summary").click()
    new.get_by_test_id("rename").click()
    field = new.get_by_test_id("rename-input")
    expect(field).to_be_focused()
    field.fill("Page Turtle")
    field.press("Enter")
    expect(new.get_by_test_id("decision-state")).to_have_text("renamed to Page Turtle")
    expect(new.get_by_test_id("rename-form")).to_be_hidden()
    expect(page.get_by_test_id("undecided-count")).to_have_text(
        str(undecided - sum(states[e][0] == "" for e in (known_id, new_id))))
    assert len(prompts) == 1  # the token is kept for the tab

    thumb = new.locator(".strip img").first
    expect(thumb).to_have_js_property("complete", True)
    assert thumb.evaluate("img => img.naturalWidth") > 0
    _shot(page, tmp_path, "page_survey_review.png")

    page.get_by_test_id("survey-apply").click()
    report = page.get_by_test_id("apply-report")
    expect(report).to_contain_text("The catalogue now holds")
    expect(report).to_contain_text("enrolled")
    after = httpx.get(server.url + "/health").json()
    assert after["index_count"] > before["index_count"]
    expect(page.get_by_test_id("image-count")).to_have_text(f"{after['index_count']:,}")
    names = {i["identity"] for i in httpx.get(server.url + "/identities").json()["identities"]}
    assert "Page Turtle" in names
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert not errors, errors
    page.close()


def test_after_a_restart_the_surveys_are_there_and_one_the_stop_interrupted_says_so(server, card_zip):
    held = {s["id"]: s for s in httpx.get(server.url + "/surveys").json()["surveys"]}
    started = _post_zip(server, card_zip.read_bytes())
    assert started.status_code == 202
    server.kill()  # the laptop's power goes, mid-run
    server.start()
    listed = {s["id"]: s for s in httpx.get(server.url + "/surveys").json()["surveys"]}
    cut = listed[started.json()["id"]]
    assert cut["state"] == "failed" and "server stopped while this survey ran" in cut["error"], cut
    assert {k: v["state"] for k, v in held.items()} == {k: listed[k]["state"] for k in held}
    results = [httpx.get(server.url + f"/surveys/{k}/result").json() for k, v in held.items() if v["state"] == "done"]
    assert any(r["applied"] is not None for r in results)  # what was applied before the stop still says so
    # a new survey may start: the interrupted one holds nothing
    assert _post_zip(server, card_zip.read_bytes()).status_code == 202
