"""What a hostile page, a sloppy launcher or a curious client can get out of a real server: answers that name no
server path and say what to do, security headers on every answer, strict Host/Origin/Sec-Fetch-Site checks, the
same start-up rule for every way of starting the app, and tokens that never leak or silently fail."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import pytest
from _serve_helpers import FACTORY, Server, build_gallery, free_port, jpeg_bytes

TOKEN = "s3cret-field-token"


@pytest.fixture(scope="module")
def base(synth_data, tiny_artifacts, tmp_path_factory):
    """A catalogue with one extra row whose photo is not a photo (a damaged file)."""
    base = tmp_path_factory.mktemp("serve-hardening")
    data = base / "data"
    shutil.copytree(synth_data, data)
    (data / "t999").mkdir()
    (data / "t999" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    build_gallery(data, tiny_artifacts, base / "index",
                  extra_rows=[{"path": "t999/broken.jpg", "identity": "t999", "date": "2024-01-01"}])
    return base


@pytest.fixture(scope="module")
def server(base, tiny_artifacts):
    srv = Server(base / "index", tiny_artifacts, base / "server.log").start()
    yield srv
    srv.stop()


def _raw(url: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
         ) -> tuple[int, dict[str, str], str]:
    """One request with exactly these headers (repeated ones too), as a browser or an attacker would send them."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode(errors="replace")
    finally:
        conn.close()


def _host(server) -> str:
    return urlsplit(server.url).netloc


# ------------------------------------------------------------------------------------------ answers (7)


def test_a_damaged_thumbnail_is_named_by_id_not_by_server_path(server, base):
    from wildtrack.index import image_id_for

    r = httpx.get(f"{server.url}/thumbnails/{image_id_for('t999/broken.jpg')}", timeout=60)
    assert r.status_code == 404
    assert image_id_for("t999/broken.jpg") in r.json()["detail"]
    assert str(base) not in r.text and "/t999/" not in r.text


def test_a_locked_catalogue_answers_503_with_retry_after_and_no_path(server, base):
    from wildtrack.index import writer_lock

    with writer_lock(base / "index"):  # e.g. a long `wildtrack index add` holds it
        r = httpx.post(server.url + "/enroll", data={"identity": "Locked"},
                       files={"files": ("a.jpg", jpeg_bytes(seed=31))}, timeout=120)
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert str(base) not in r.text and ".lock" not in r.text
    assert "retry" in r.json()["detail"]


# ------------------------------------------------------------------------------------------ headers (10)


def test_every_answer_forbids_framing_and_sniffing(server):
    host = _host(server)
    answers = [_raw(server.url, "GET", "/", [("Host", host)]),
               _raw(server.url, "GET", "/health", [("Host", host)]),
               _raw(server.url, "GET", "/thumbnails/nope", [("Host", host)]),
               _raw(server.url, "GET", "/health", [("Host", "evil.example")])]  # refused: still carries them
    assert [a[0] for a in answers] == [200, 200, 404, 400]
    for _, headers, _ in answers:
        assert headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


def test_a_host_with_a_foreign_name_after_the_port_is_refused(server):
    status, _, body = _raw(server.url, "GET", "/health", [("Host", f"{_host(server)}@evil.example")])
    assert status == 400, body


@pytest.mark.parametrize("headers", [
    [("Origin", "https://{host}")],  # same host and port, another scheme: another origin
    [("Sec-Fetch-Site", "CROSS-SITE")],
    [("Origin", "http://evil.example"), ("Origin", "http://{host}")],  # the last one must not win
])
def test_cross_site_tricks_are_refused(server, headers):
    host = _host(server)
    sent = [("Host", host), *[(k, v.format(host=host)) for k, v in headers]]
    status, _, body = _raw(server.url, "POST", "/enroll", sent)
    assert status in (400, 403), body


def test_the_same_origin_still_writes(server):
    host = _host(server)
    r = httpx.post(server.url + "/enroll", data={"identity": "SameOrigin"},
                   files={"files": ("a.jpg", jpeg_bytes(seed=32))}, headers={"Origin": f"http://{host}"}, timeout=120)
    assert r.status_code == 200, r.text


def test_writes_relayed_by_a_proxy_need_the_token(server):
    r = httpx.post(server.url + "/enroll", data={"identity": "Proxied"},
                   files={"files": ("a.jpg", jpeg_bytes(seed=33))}, headers={"X-Forwarded-For": "203.0.113.9"},
                   timeout=120)
    assert r.status_code == 403 and "token" in r.json()["detail"]


# ------------------------------------------------------------------------------------------ start-up (6, 9)


def _factory(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m uvicorn --factory`` as a user would start it; stopped after 90 s if it does not exit."""
    full_env = {**os.environ, "WILDTRACK_INDEX": str(tmp_path), "WILDTRACK_ARTIFACTS": str(tmp_path),
                "WILDTRACK_API_TOKEN": "", **(env or {})}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", FACTORY, "--port", str(free_port()), *args]
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the server started: {out[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def test_factory_mode_on_every_interface_needs_a_token(tmp_path):
    done = _factory(tmp_path, "--host", "0.0.0.0")
    assert done.returncode != 0
    assert "--api-token" in done.stdout and "0.0.0.0" in done.stdout


def test_factory_mode_behind_a_trusting_proxy_needs_a_token(tmp_path):
    done = _factory(tmp_path, "--host", "127.0.0.1", "--forwarded-allow-ips", "*")
    assert done.returncode != 0
    assert "proxy" in done.stdout and "--api-token" in done.stdout


def test_factory_mode_refuses_a_token_that_cannot_match(tmp_path):
    done = _factory(tmp_path, "--host", "127.0.0.1", env={"WILDTRACK_API_TOKEN": "pässwörd-für-alle"})
    assert done.returncode != 0 and "ASCII" in done.stdout


def _serve(tmp_path, *args: str) -> tuple[int, str]:
    """``wildtrack serve`` in its own process (a server that does start is stopped after 120 s)."""
    done = subprocess.run([sys.executable, "-m", "wildtrack", "serve", "--index", str(tmp_path / "none"),
                           "--artifacts", str(tmp_path / "none"), "--port", str(free_port()), *args],
                          env={**os.environ, "WILDTRACK_API_TOKEN": ""}, capture_output=True, text=True, timeout=120)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_serve_help_offers_a_token_file_and_the_environment():
    from typer.testing import CliRunner

    from wildtrack.cli import app

    text = " ".join(CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--api-token-file" in text and "WILDTRACK_API_TOKEN" in text


def test_a_short_token_is_refused_without_echoing_it(tmp_path):
    code, output = _serve(tmp_path, "--api-token", "kiwi42")
    assert code == 2, output
    assert "too short" in output and "kiwi42" not in output


def test_a_non_ascii_token_is_refused_at_start_up(tmp_path):
    code, output = _serve(tmp_path, "--api-token", "pässwörd-für-alle")
    assert code == 2, output
    assert "ASCII" in output and "pässwörd" not in output


def test_the_token_can_come_from_a_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    _, output = _serve(tmp_path, "--host", "0.0.0.0", "--api-token-file", str(token_file))
    assert "No such option" not in output
    assert "without an API token" not in output and "without --api-token" not in output, output  # it was read
    assert TOKEN not in output


# ------------------------------------------------------------------------------------------ identities (5)


def _enrol(server, identity: str, seed: int) -> httpx.Response:
    return httpx.post(server.url + "/enroll", data={"identity": identity},
                      files={"files": ("a.jpg", jpeg_bytes(seed=seed))}, timeout=120)


@pytest.mark.parametrize("name", ["t001\u034f", "t001\u3164", "t001\u2800", "\u0301t001", "t\u200b001",
                                  "t001\u180e"])
def test_invisible_characters_are_refused(server, name):
    r = _enrol(server, name, 40)
    assert r.status_code == 400, r.text
    assert "show nothing" in r.json()["detail"]


@pytest.mark.parametrize("name", ["\u0442001", "\u0422001", "\u03c4001"])  # Cyrillic т and Т, Greek τ
def test_a_look_alike_of_a_catalogued_individual_is_refused_naming_it(server, name):
    r = _enrol(server, name, 41)
    assert r.status_code == 409, r.text
    assert "'t001'" in r.json()["detail"]


def test_other_scripts_are_still_welcome(server):
    for n, name in enumerate(["Schildkröte Grün", "海龟一号", "Черепаха"]):
        assert _enrol(server, name, 42 + n).status_code == 200


def test_formula_identities_are_stored_as_text_in_meta_csv(server, base):
    import csv

    name = '=HYPERLINK("evil.example";"t001")'
    r = _enrol(server, name, 50)
    assert r.status_code == 200, r.text
    with open(base / "index" / "meta.csv", newline="", encoding="utf-8") as fh:
        cells = [row["identity"] for row in csv.DictReader(fh)]
    assert f"'{name}" in cells and name not in cells
    for formula in ("=", "+", "-", "@"):
        assert not any(c.startswith(formula) for c in cells)
    listed = httpx.get(server.url + "/identities", timeout=60).json()["identities"]
    assert name in [i["identity"] for i in listed]  # read back as it was typed
