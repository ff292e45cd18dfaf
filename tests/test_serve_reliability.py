"""The service under load and after crashes, on a real server: bounded work, fast refusals, /health that always
answers, enrolments that survive a kill at any point without orphans or duplicates, and a catalogue that follows
what the CLI commits."""

from __future__ import annotations

import contextlib
import http.client
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from _serve_helpers import Server, build_gallery, huge_png, jpeg_bytes


@pytest.fixture(scope="module")
def big_photo() -> bytes:
    return huge_png(4000)  # 16 megapixels: each prediction decodes 48 MB of pixels, slow enough to queue behind


@pytest.fixture
def fresh_gallery(synth_data, tiny_artifacts, tmp_path):
    """A catalogue of its own (the data copied too), so a test may enrol, crash and add freely."""
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    build_gallery(data, tiny_artifacts, tmp_path / "index")
    return tmp_path


def _server(base, artifacts, name: str, **kwargs) -> Server:
    return Server(base / "index", artifacts, base / f"{name}.log", **kwargs)


def _files(base) -> list[str]:
    enrolled = base / "index" / "enrolled"
    return sorted(p.relative_to(enrolled).as_posix() for p in enrolled.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ load


def test_past_the_queue_requests_get_a_fast_503_with_retry_after(fresh_gallery, tiny_artifacts, big_photo):
    srv = _server(fresh_gallery, tiny_artifacts, "queue",
                  config={"max_concurrent_inference": 1, "max_queued_requests": 1, "retry_after_s": 3}).start()
    try:
        def predict(_):
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                r = c.post("/predict", files={"file": ("big.png", big_photo)})
                return r, r.elapsed.total_seconds()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(predict, range(8)))
    finally:
        srv.stop()
    busy = [(r, t) for r, t in answers if r.status_code == 503]
    done = [(r, t) for r, t in answers if r.status_code == 200]
    assert len(busy) + len(done) == 8, [r.text for r, _ in answers]
    assert busy and len(done) >= 2  # one running and one queued are always admitted
    for r, _ in busy:
        assert r.headers["retry-after"] == "3"
        assert "busy" in r.json()["detail"]
    assert max(t for _, t in busy) < max(t for _, t in done)  # refused at once, not after waiting


def test_health_answers_while_inference_is_saturated(fresh_gallery, tiny_artifacts, big_photo):
    """50 slow predictions queue behind one inference slot; /health must not wait behind any of them.

    (Before the fix /health's dependency needed a worker thread, queued behind the ten predictions that did not
    fit in the 40-thread pool: it answered only after at least eleven of them had finished.)
    """
    srv = _server(fresh_gallery, tiny_artifacts, "saturated",
                  config={"max_concurrent_inference": 1, "max_queued_requests": 100,
                          "max_wait_s": 3600, "max_concurrent_uploads": 64}).start()  # all 50 are admitted
    finished: list[float] = []
    lock = threading.Lock()
    boundary_request = httpx.Request("POST", srv.url, files={"file": ("big.png", big_photo)})
    body, content_type = boundary_request.read(), boundary_request.headers["content-type"]

    def wait_answer(conn: http.client.HTTPConnection) -> int:
        status = conn.getresponse().status
        with lock:
            finished.append(time.monotonic())
        conn.close()
        return status

    port = urlsplit(srv.url).port
    try:
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=600) for _ in range(50)]
        for conn in conns:  # request() returns once the whole upload is sent
            conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        with ThreadPoolExecutor(50) as pool:
            futures = [pool.submit(wait_answer, conn) for conn in conns]
            health = httpx.get(srv.url + "/health", timeout=600)
            answered = time.monotonic()
            with lock:
                done_before_health = len(finished)
            statuses = [f.result() for f in futures]
    finally:
        srv.stop()
    assert health.status_code == 200
    assert statuses == [200] * 50
    assert done_before_health <= 2, f"/health waited for {done_before_health} predictions"
    assert answered < sorted(finished)[2]


# ------------------------------------------------------------------------------------------ crashes


@pytest.mark.parametrize("point", ["locked", "tmp-written", "replaced:meta.csv"])
def test_killed_before_the_commit_leaves_no_orphans(fresh_gallery, tiny_artifacts, point):
    srv = _server(fresh_gallery, tiny_artifacts, "crash", pause_at=point).start()
    threading.Thread(target=lambda: _enrol_quietly(srv.url, "ghost", jpeg_bytes(seed=11)), daemon=True).start()
    srv.wait_for_log(f"PAUSED {point}")
    srv.kill()
    assert _files(fresh_gallery)  # the photo was written before the kill

    srv.pause_at = None
    srv.start()
    try:
        assert _files(fresh_gallery) == []
        assert "1 orphan file(s) removed" in srv.log(since_start=True)
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            assert c.get("/identities/ghost").status_code == 404
    finally:
        srv.stop()


def test_killed_after_the_commit_the_retry_is_not_a_duplicate(fresh_gallery, tiny_artifacts):
    photo = jpeg_bytes(seed=12)
    srv = _server(fresh_gallery, tiny_artifacts, "committed", pause_at="committed").start()
    threading.Thread(target=lambda: _enrol_quietly(srv.url, "Kai", photo), daemon=True).start()
    srv.wait_for_log("PAUSED committed")
    srv.kill()  # the client sees a dropped connection, yet the enrolment is saved

    srv.pause_at = None
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            detail = c.get("/identities/Kai").json()
            assert detail["count"] == 1
            assert c.get(detail["images"][0]["thumbnail_url"]).status_code == 200  # its file was moved in
            retry = c.post("/enroll", data={"identity": "Kai"}, files={"files": ("kai.jpg", photo)})
            assert retry.status_code == 200, retry.text
            body = retry.json()
            assert body["image_ids"] == [] and body["already_enrolled"] == [detail["images"][0]["image_id"]]
            assert body["identity_images"] == 1 and not body["new_identity"]
    finally:
        srv.stop()
    assert len(_files(fresh_gallery)) == 1


def test_the_same_photo_is_enrolled_once(fresh_gallery, tiny_artifacts):
    photo, other = jpeg_bytes(seed=13), jpeg_bytes(seed=14)
    srv = _server(fresh_gallery, tiny_artifacts, "idempotent").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            first = c.post("/enroll", data={"identity": "Moana"},
                           files=[("files", ("a.jpg", photo)), ("files", ("copy.jpg", photo))]).json()
            assert len(first["image_ids"]) == 1 and first["identity_images"] == 1
            again = c.post("/enroll", data={"identity": "Moana"},
                           files=[("files", ("a.jpg", photo)), ("files", ("b.jpg", other))]).json()
            assert again["already_enrolled"] == first["image_ids"] and len(again["image_ids"]) == 1
            assert again["identity_images"] == 2
            elsewhere = c.post("/enroll", data={"identity": "Moana II"}, files={"files": ("a.jpg", photo)}).json()
            assert elsewhere["new_identity"] and len(elsewhere["image_ids"]) == 1  # per identity, not global
    finally:
        srv.stop()


def _enrol_quietly(url: str, identity: str, photo: bytes) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed mid-request
        httpx.post(url + "/enroll", data={"identity": identity}, files={"files": ("p.jpg", photo)}, timeout=120)


# ------------------------------------------------------------------------------------------ other writers


def test_a_cli_index_add_is_served_without_restart(fresh_gallery, tiny_artifacts, synth_data):
    srv = _server(fresh_gallery, tiny_artifacts, "reload").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            before = c.get("/health").json()
            newcomer = fresh_gallery / "data" / "t999"
            newcomer.mkdir()
            with open(fresh_gallery / "data" / "metadata.csv", "a", encoding="utf-8") as meta:
                for n, src in enumerate(sorted((synth_data / "t003").glob("*.jpg"))[:3]):
                    shutil.copy(src, newcomer / f"t999_{n}.jpg")
                    meta.write(f"t999/t999_{n}.jpg,t999,2024-01-0{n + 1},t999_e0\n")
            subprocess.run([sys.executable, "-m", "wildtrack", "index", "add", "--index",
                            str(fresh_gallery / "index"), "--artifacts", str(tiny_artifacts)],
                           check=True, capture_output=True)
            after = c.get("/health").json()
            assert after["index_count"] == before["index_count"] + 3
            assert after["identities_count"] == before["identities_count"] + 1
            assert after["generation"] > before["generation"]
            assert c.get("/identities/t999").json()["count"] == 3
            enrolled = c.post("/enroll", data={"identity": "t999"}, files={"files": ("x.jpg", jpeg_bytes(seed=15))})
            assert enrolled.status_code == 200 and enrolled.json()["identity_images"] == 4
    finally:
        srv.stop()
