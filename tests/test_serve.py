"""The laptop service end to end: a real uvicorn process, a real index, real HTTP.

Every client mistake must come back as a 4xx JSON ``{"detail": ...}`` (never a 500 or an HTML page), enrolments
must survive a restart, and no request can make the server read a file the index does not list.
"""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from _serve_helpers import Server, build_gallery, jpeg_bytes
from PIL import Image

MAX_UPLOAD = 1_000_000
THRESHOLD = 0.5


@pytest.fixture(scope="module")
def gallery(synth_data, tiny_artifacts, tmp_path_factory):
    """An index of the synthetic photos plus one poisoned row whose path escapes the data root."""
    base = tmp_path_factory.mktemp("serve")
    secret = base / "outside" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(jpeg_bytes(seed=99))
    poisoned = {"path": os.path.relpath(secret, synth_data), "identity": "t000", "image_id": "poisoned"}
    index_dir = base / "index"
    size = build_gallery(synth_data, tiny_artifacts, index_dir, extra_rows=[poisoned])
    return {"index": index_dir, "size": size, "base": base}


@pytest.fixture(scope="module")
def server(gallery, tiny_artifacts):
    srv = Server(gallery["index"], tiny_artifacts, gallery["base"] / "server.log", threshold=THRESHOLD,
                 config={"max_upload_bytes": MAX_UPLOAD, "topk": 5}).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _gallery_image(synth_data: Path, n: int = 14) -> tuple[Path, str]:
    with open(synth_data / "metadata.csv", newline="") as fh:
        row = list(csv.DictReader(fh))[n]
    return synth_data / row["file_name"], row["identity"]


def _image_id(synth_data: Path, path: Path) -> str:
    from wildtrack.index import image_id_for

    return image_id_for(path.relative_to(synth_data).as_posix())


def _assert_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    detail = r.json()["detail"]
    assert detail
    return detail if isinstance(detail, str) else str(detail)


# ------------------------------------------------------------------------------------------ happy path


def test_health_reports_model_and_index(client, gallery, tiny_artifacts):
    from wildtrack.model import model_fingerprint

    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["model_fingerprint"] == model_fingerprint(tiny_artifacts)
    assert h["backend"] == "keras"
    assert h["dim"] == 32
    assert h["index_count"] >= gallery["size"]
    assert h["identities_count"] >= 12
    assert h["threshold"] == pytest.approx(THRESHOLD)


def test_predict_names_a_gallery_photo_with_score_one(client, synth_data):
    path, identity = _gallery_image(synth_data)
    r = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")}, data={"topk": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["identity"] == identity and not body["is_unknown"]
    assert body["score"] == pytest.approx(1.0, abs=1e-4)
    assert body["threshold"] == pytest.approx(THRESHOLD)
    assert body["matches"][0]["image_id"] == _image_id(synth_data, path)  # its own gallery entry is top-1
    assert body["matches"][0]["identity"] == identity and body["matches"][0]["rank"] == 1
    assert body["matches"][0]["date"]  # dates from metadata.csv travel through the index
    assert 1 <= len(body["candidates"]) <= 3 and len(body["matches"]) == 3
    assert body["candidates"][0]["thumbnail_url"].startswith("/thumbnails/")


def test_search_returns_k_hits_with_working_thumbnails(client, synth_data):
    path, _ = _gallery_image(synth_data, 40)
    r = client.post("/search", files={"file": ("q.jpg", path.read_bytes())}, data={"k": "7"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 8))
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:], strict=False))
    thumb = client.get(hits[0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(thumb.content))
    assert img.format == "JPEG" and max(img.size) <= 256


def test_concurrent_predictions_all_answer(client, synth_data):
    path, identity = _gallery_image(synth_data, 3)
    data = path.read_bytes()

    def one(_):
        return client.post("/predict", files={"file": ("q.jpg", data)}).json()["identity"]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(16))) == [identity] * 16


def test_identities_and_detail(client):
    listing = client.get("/identities").json()
    names = [i["identity"] for i in listing["identities"]]
    assert listing["count"] == len(names) and "t003" in names
    detail = client.get("/identities/t003").json()
    assert detail["identity"] == "t003" and detail["count"] == len(detail["images"]) == 10
    assert client.get(detail["images"][0]["thumbnail_url"]).status_code == 200


def test_page_static_and_offline_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    try:
        import fastapi_offline  # noqa: F401
    except ImportError:
        return
    assert "cdn.jsdelivr" not in docs.text  # the field laptop is offline
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


# ------------------------------------------------------------------------------------------ enrolment


def test_enroll_new_identity_survives_restart(server, client, gallery, synth_data):
    before = client.get("/health").json()
    big = jpeg_bytes((640, 480), seed=7, fmt="PNG")
    files = [("files", ("first.png", big, "image/png")), ("files", ("second.jpg", jpeg_bytes(seed=8), "image/jpeg"))]
    r = client.post("/enroll", data={"identity": "Nalani (new)", "date": "2024-05-01"}, files=files)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["new_identity"] and done["identity"] == "Nalani (new)" and len(done["image_ids"]) == 2
    assert done["identities_count"] == before["identities_count"] + 1
    assert done["index_count"] == before["index_count"] + 2

    stored = sorted((gallery["index"] / "enrolled" / "Nalani_new").iterdir())
    assert sorted(p.suffix for p in stored) == [".jpg", ".png"]  # extension from the decoded format
    with open(gallery["index"] / "meta.csv", newline="") as fh:
        rows = {r["image_id"]: r for r in csv.DictReader(fh)}
    for image_id in done["image_ids"]:
        rel = rows[image_id]["path"]
        assert (synth_data / rel).resolve() in [p.resolve() for p in stored]  # relative to the data root
        assert rows[image_id]["date"] == "2024-05-01"

    again = client.post("/predict", files={"file": ("q.png", big)}).json()
    assert again["identity"] == "Nalani (new)" and again["score"] == pytest.approx(1.0, abs=1e-4)
    thumb = Image.open(io.BytesIO(client.get(again["matches"][0]["thumbnail_url"]).content))
    assert max(thumb.size) == 256  # 640×480 scaled down

    more = client.post("/enroll", data={"identity": "Nalani (new)"}, files={"files": ("x.jpg", jpeg_bytes(seed=9))})
    assert more.status_code == 200 and not more.json()["new_identity"] and more.json()["identity_images"] == 3

    server.restart()
    with httpx.Client(base_url=server.url, timeout=30) as fresh:
        after = fresh.get("/health").json()
        assert after["index_count"] == before["index_count"] + 3
        assert after["identities_count"] == before["identities_count"] + 1
        assert "Nalani (new)" in [i["identity"] for i in fresh.get("/identities").json()["identities"]]
        detail = fresh.get("/identities/Nalani (new)").json()
        assert detail["count"] == 3
        assert all(fresh.get(i["thumbnail_url"]).status_code == 200 for i in detail["images"])


# ------------------------------------------------------------------------------------------ bad input


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height pixels but carries none: a pixel bomb costs a few bytes."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("name", "payload", "status"), [
    ("text.jpg", b"this is not a photo at all", 415),
    ("empty.jpg", b"", 400),
    ("truncated.jpg", jpeg_bytes((400, 300))[:2500], 400),
    ("bomb.png", _png_header(50_000, 50_000), 413),
    ("huge-but-under-pillow-limit.png", _png_header(9_000, 8_000), 413),
    ("big.jpg", os.urandom(MAX_UPLOAD + 50_000), 413),
])
@pytest.mark.parametrize("endpoint", ["/predict", "/search", "/enroll"])
def test_bad_uploads_are_4xx_json(client, endpoint, name, payload, status):
    field = "files" if endpoint == "/enroll" else "file"
    r = client.post(endpoint, files={field: (name, payload, "image/jpeg")}, data={"identity": "bad-upload"})
    _assert_error(r, status)


def test_bad_uploads_leave_the_catalogue_unchanged(client):
    assert "bad-upload" not in [i["identity"] for i in client.get("/identities").json()["identities"]]


def test_body_over_limit_without_content_length_is_413(client):
    """Chunked upload: no Content-Length to check, so the server must count bytes as they arrive."""
    boundary = "wildtrackboundary"

    def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'.encode()
        for _ in range(40):
            yield b"\xff" * 50_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/predict", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in r.request.headers
    _assert_error(r, 413)


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("post", "/predict", {}, 422),  # no file field
    ("post", "/predict", {"files": {"file": ("a.jpg", jpeg_bytes())}, "data": {"topk": "0"}}, 422),
    ("post", "/search", {"files": {"file": ("a.jpg", jpeg_bytes())}, "data": {"k": "nope"}}, 422),
    ("post", "/enroll", {"files": {"files": ("a.jpg", jpeg_bytes())}}, 422),  # no identity field
    ("post", "/enroll", {"files": {"files": ("a.jpg", jpeg_bytes())}, "data": {"identity": "  "}}, 400),
    ("post", "/enroll", {"files": {"files": ("a.jpg", jpeg_bytes())}, "data": {"identity": "../../etc"}}, 400),
    ("post", "/enroll", {"files": {"files": ("a.jpg", jpeg_bytes())},
                         "data": {"identity": "x", "date": "yesterday"}}, 400),
    ("get", "/identities/nobody-like-this", {}, 404),
    ("get", "/thumbnails/0123456789abcdef", {}, 404),
    ("get", "/no/such/route", {}, 404),
])
def test_client_mistakes_are_4xx_json(client, method, path, kwargs, status):
    _assert_error(getattr(client, method)(path, **kwargs), status)


# ------------------------------------------------------------------------------------------ file access


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (httpx would normalise ``..`` away before sending)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", [
    "/thumbnails/../../../../etc/passwd",
    "/thumbnails/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/thumbnails/%2Fetc%2Fpasswd",
    "/static/../app.py",
    "/static/..%2F..%2F..%2Fpyproject.toml",
    "/static/%2e%2e/%2e%2e/index.py",
    "/thumbnails/poisoned",  # catalogued, but its path escapes the data root and index dir
])
def test_paths_cannot_escape(server, path):
    status, body = _raw_get(server.url, path)
    assert status in (400, 404), (status, body[:200])
    assert b"root:" not in body and b"import" not in body and b"[project]" not in body


def test_secret_next_to_poisoned_row_really_exists(gallery):
    assert (gallery["base"] / "outside" / "secret.jpg").is_file()  # so the test above proves something


# ------------------------------------------------------------------------------------------ in-process


def test_refuses_to_start_with_an_index_of_another_model(synth_data, tiny_artifacts, tmp_path):
    import numpy as np

    from wildtrack.index import GalleryIndex, IndexMismatchError
    from wildtrack.serve import create_app

    rows = [{"path": "t000/t000_000.jpg", "identity": "t000"}]
    GalleryIndex.build(np.ones((1, 32), np.float32), rows, "some-other-model", data_root=synth_data).save(tmp_path)
    app = create_app(tmp_path, tiny_artifacts)

    async def start_up():
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(IndexMismatchError, match="built with model 'some-other-model'"):
        asyncio.run(start_up())


def test_unexpected_errors_are_json_500():
    from fastapi import FastAPI

    from wildtrack.serve.app import _add_error_handlers

    app = FastAPI()
    _add_error_handlers(app)

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaput")

    async def call():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.get("/boom")

    r = asyncio.run(call())
    assert r.status_code == 500 and r.json()["detail"].startswith("internal error (RuntimeError)")
    assert "kaput" not in r.text  # an exception's text may name server paths: it goes to the log only
