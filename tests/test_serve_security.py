"""Who may change the catalogue: foreign Host names, cross-site pages and the API token, on a real server.

Also the identity and form rules that keep the catalogue clean: one ``file`` per /predict, no ``.``/``..``
identities, and look-alike spellings of one individual never become two.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
import pytest
from _serve_helpers import Server, build_gallery, jpeg_bytes

TOKEN = "s3cret-field-token"


@pytest.fixture(scope="module")
def gallery(synth_data, tiny_artifacts, tmp_path_factory):
    base = tmp_path_factory.mktemp("serve-sec")
    build_gallery(synth_data, tiny_artifacts, base / "index")
    return base


@pytest.fixture(scope="module")
def server(gallery, tiny_artifacts):
    srv = Server(gallery / "index", tiny_artifacts, gallery / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def token_server(tiny_artifacts, synth_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("serve-token")
    build_gallery(synth_data, tiny_artifacts, base / "index")
    srv = Server(base / "index", tiny_artifacts, base / "server.log", config={"api_token": TOKEN}).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _enrol(client: httpx.Client, identity: str, seed: int, headers: dict | None = None) -> httpx.Response:
    return client.post("/enroll", data={"identity": identity}, files={"files": ("a.jpg", jpeg_bytes(seed=seed))},
                       headers=headers or {})


def _identities(client: httpx.Client) -> list[str]:
    return [i["identity"] for i in client.get("/identities").json()["identities"]]


# ------------------------------------------------------------------------------------------ Host and Origin


def test_a_foreign_host_name_is_refused(server, client):
    """DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends Host: evil.example."""
    port = urlsplit(server.url).port
    r = _enrol(client, "rebound", 1, {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"})
    assert r.status_code == 400, r.text
    assert "evil.example" in r.json()["detail"] and "--allowed-host" in r.json()["detail"]
    assert client.get("/health", headers={"Host": "evil.example"}).status_code == 400
    assert "rebound" not in _identities(client)


def test_loopback_names_are_accepted(server, client):
    port = urlsplit(server.url).port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_cross_site_writes_are_refused(client, headers):
    r = _enrol(client, "cross-site", 2, headers)
    assert r.status_code == 403, r.text
    assert "cross-site" in r.json()["detail"]
    predict = client.post("/predict", files={"file": ("a.jpg", jpeg_bytes())}, headers=headers)
    assert predict.status_code == 403
    assert "cross-site" not in _identities(client)


def test_same_origin_and_scripted_writes_are_accepted(server, client):
    same = _enrol(client, "same-origin", 3, {"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200, same.text
    scripted = _enrol(client, "scripted", 4)  # curl / Python: neither header
    assert scripted.status_code == 200, scripted.text


# ------------------------------------------------------------------------------------------ API token


def test_with_a_token_writes_need_it(token_server):
    with httpx.Client(base_url=token_server.url, timeout=60) as c:
        missing = _enrol(c, "no-token", 5)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "API token" in missing.json()["detail"]
        assert _enrol(c, "bad-token", 5, {"Authorization": "Bearer wrong-token"}).status_code == 401
        assert _enrol(c, "bearer", 5, {"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert _enrol(c, "header", 6, {"X-API-Token": TOKEN}).status_code == 200
        assert c.post("/predict", files={"file": ("a.jpg", jpeg_bytes())}).status_code == 200  # reads stay open
        names = _identities(c)
        assert "bearer" in names and "header" in names and "no-token" not in names and "bad-token" not in names


def test_listening_beyond_loopback_needs_a_token(tiny_artifacts, tmp_path, caplog):
    from wildtrack.config import ServeConfig
    from wildtrack.serve import create_app
    from wildtrack.serve.security import StartupRefused

    with pytest.raises(StartupRefused, match="--api-token"):
        create_app(tmp_path, tiny_artifacts, ServeConfig(host="0.0.0.0"))
    create_app(tmp_path, tiny_artifacts, ServeConfig(host="0.0.0.0", api_token=TOKEN))  # accepted
    with caplog.at_level(logging.WARNING):
        create_app(tmp_path, tiny_artifacts, ServeConfig(host="0.0.0.0", insecure_no_token=True))
    assert "INSECURE" in caplog.text and "WITHOUT an API token" in caplog.text


def test_cli_refuses_an_open_host_without_a_token(tmp_path):
    from typer.testing import CliRunner

    from wildtrack.cli import app

    result = CliRunner().invoke(app, ["serve", "--index", str(tmp_path), "--artifacts", str(tmp_path),
                                      "--host", "0.0.0.0"], env={"WILDTRACK_API_TOKEN": ""})
    assert result.exit_code == 2, result.output
    assert "without an API token" in result.output and "--insecure-no-token" in result.output


# ------------------------------------------------------------------------------------------ form and identities


@pytest.mark.parametrize("endpoint", ["/predict", "/search"])
def test_two_file_parts_are_a_clear_422(client, endpoint):
    files = [("file", ("a.jpg", jpeg_bytes(seed=1))), ("file", ("b.jpg", jpeg_bytes(seed=2)))]
    r = client.post(endpoint, files=files)
    assert r.status_code == 422, r.text
    assert "exactly one 'file'" in r.json()["detail"]


@pytest.mark.parametrize("identity", [".", "..", " ... "])
def test_dot_identities_are_refused(client, identity):
    r = _enrol(client, identity, 7)
    assert r.status_code == 400, r.text
    assert "not a name" in r.json()["detail"]


def test_full_width_spelling_is_the_same_individual(client):
    before = client.get("/health").json()
    r = _enrol(client, "ｔ００１", 8)
    assert r.status_code == 200, r.text
    assert r.json()["identity"] == "t001" and not r.json()["new_identity"]
    assert r.json()["identities_count"] == before["identities_count"]
    assert "ｔ００１" not in _identities(client)


def test_a_case_look_alike_of_a_catalogued_individual_is_refused(client):
    r = _enrol(client, "T002", 9)
    assert r.status_code == 409, r.text
    assert "'t002'" in r.json()["detail"]
    assert "T002" not in _identities(client)
