"""Bounded uploads and a queue bounded by waiting time: what a busy field station (or a client that never finishes
its upload) can hold on a server, and the fast, explicit answers past each bound."""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit

import pytest
from _serve_helpers import Server, build_gallery


@pytest.fixture(scope="module")
def server(synth_data, tiny_artifacts, tmp_path_factory):
    base = tmp_path_factory.mktemp("serve-bounds")
    build_gallery(synth_data, tiny_artifacts, base / "index")
    srv = Server(base / "index", tiny_artifacts, base / "server.log",
                 config={"max_concurrent_uploads": 2, "max_spooled_bytes": 3_000_000, "upload_timeout_s": 3,
                         "retry_after_s": 4}).start()
    yield srv
    srv.stop()


def _start_upload(url: str, declared: int, sent: int = 1000) -> socket.socket:
    """A /predict upload that declares ``declared`` bytes and sends only ``sent`` of them."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = (f"POST /predict HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    sock.sendall(head + b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
                 + b"\0" * sent)
    return sock


def _answer(sock: socket.socket, timeout: float) -> tuple[int, str]:
    """The status line and the rest of the answer (the server closes the connection after a refusal)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        if not data:
            raise
    head = data.decode(errors="replace")
    return int(head.split(" ", 2)[1]), head


def test_a_stalled_upload_gets_408_and_is_closed(server):
    sock = _start_upload(server.url, 500_000)
    started = time.monotonic()
    try:
        status, text = _answer(sock, 30)
    finally:
        sock.close()
    assert status == 408, text
    assert time.monotonic() - started < 15
    assert "connection: close" in text.lower()


def test_uploads_past_the_cap_get_a_fast_503(server):
    open_uploads = [_start_upload(server.url, 100_000) for _ in range(2)]
    try:
        time.sleep(0.5)  # both are in flight, neither complete
        extra = _start_upload(server.url, 100_000)
        started = time.monotonic()
        try:
            status, text = _answer(extra, 2.5)  # before the others' 3 s body timeout frees a place
        finally:
            extra.close()
    finally:
        for s in open_uploads:
            s.close()
    assert status == 503, text
    assert "retry-after: 4" in text.lower()
    assert time.monotonic() - started < 2.5


def test_spooled_bytes_are_bounded(server):
    first = _start_upload(server.url, 2_000_000)
    try:
        time.sleep(0.5)
        second = _start_upload(server.url, 2_000_000)
        try:
            status, text = _answer(second, 2.5)
        finally:
            second.close()
    finally:
        first.close()
    assert status == 503, text


# ------------------------------------------------------------------------------------------ the queue


def _gate(**kwargs):
    from wildtrack.serve.limits import InferenceGate

    return InferenceGate(**kwargs)


async def _hold(gate, seconds: float, photos: int = 1) -> None:
    async with gate.slot(photos=photos):
        await asyncio.sleep(seconds)


def test_a_request_that_would_wait_too_long_is_refused_at_once():
    from wildtrack.serve.uploads import UploadError

    async def scenario():
        gate = _gate(max_concurrent=1, max_queued=100, retry_after_s=3, max_wait_s=0.5)
        await _hold(gate, 0.3)  # measured: about 0.3 s a photo
        holder = asyncio.create_task(_hold(gate, 0.4))
        queued = asyncio.create_task(_hold(gate, 0.01))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(UploadError) as refused:
            async with gate.slot():
                pass
        waited = time.monotonic() - started
        await asyncio.gather(holder, queued)
        return refused.value, waited

    error, waited = asyncio.run(scenario())
    assert error.status_code == 503 and error.headers["Retry-After"] == "3"
    assert waited < 0.1


def test_no_request_waits_longer_than_max_wait():
    from wildtrack.serve.uploads import UploadError

    async def scenario():
        gate = _gate(max_concurrent=1, max_queued=100, max_wait_s=0.3)  # nothing measured yet: admitted
        holder = asyncio.create_task(_hold(gate, 1.5))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(UploadError) as refused:
            async with gate.slot():
                pass
        waited = time.monotonic() - started
        await holder
        return refused.value, waited

    error, waited = asyncio.run(scenario())
    assert error.status_code == 503 and waited < 1.0


def test_the_queue_counts_photos_not_requests():
    from wildtrack.serve.uploads import UploadError

    async def scenario():
        gate = _gate(max_concurrent=1, max_queued=4)
        holder = asyncio.create_task(_hold(gate, 0.5))
        queued = asyncio.create_task(_hold(gate, 0.01))
        await asyncio.sleep(0.05)
        with pytest.raises(UploadError):  # an encounter of 8 photos does not fit behind one waiting photo
            async with gate.slot(photos=8):
                pass
        three = asyncio.create_task(_hold(gate, 0.01, photos=3))  # 1 + 3 photos fit in 4
        await asyncio.sleep(0.05)
        assert gate.waiting_photos == 4
        await asyncio.gather(holder, queued, three)

    asyncio.run(scenario())
