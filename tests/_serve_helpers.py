"""Shared by the service tests: build a gallery index from ``synth_data`` and run a real uvicorn process."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

FACTORY = "wildtrack.serve.app:app_from_env"
START_TIMEOUT = 120.0  # TensorFlow import + model load on a busy 2-core machine


def build_gallery(data: Path, artifacts: Path, index_dir: Path, extra_rows: list[dict] | None = None) -> int:
    """Embed every synthetic image (dates from metadata.csv) and save a flat index; returns its size.

    ``extra_rows`` are appended with random embeddings (for rows that must exist but never match).
    """
    from wildtrack.embed import embed_paths, load_embedder
    from wildtrack.index import GalleryIndex

    embedder = load_embedder(artifacts)
    with open(data / "metadata.csv", newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    result = embed_paths(embedder, [data / m["file_name"] for m in meta])
    assert not result.failed, result.failed
    rows = [{"path": m["file_name"], "identity": m["identity"], "date": m["date"]} for m in meta]
    emb = result.embeddings
    if extra_rows:
        rng = np.random.default_rng(0)
        rows += extra_rows
        emb = np.concatenate([emb, rng.standard_normal((len(extra_rows), emb.shape[1])).astype(np.float32)])
    GalleryIndex.build(emb, rows, embedder.fingerprint, data_root=data).save(index_dir)
    return len(rows)


def huge_png(side: int = 7000) -> bytes:
    """A PNG of side×side pixels in flat colour bands: tens of kB on the wire, side²×3 bytes once decoded."""
    img = Image.new("RGB", (side, side), (40, 90, 120))
    for n in range(8):
        img.paste((30 * n, 200 - 20 * n, 60 + 10 * n), (0, n * side // 8, side, (n + 1) * side // 8 - side // 32))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size: tuple[int, int] = (320, 240), seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A photo-like (smooth random colours) image, encoded."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


# uvicorn as ``python -m uvicorn`` runs it, with the index's test-only commit hook installed first: at the named
# commit point the server prints "PAUSED <point>" and sleeps, so a test can kill it exactly there.
PAUSING_UVICORN = """
import sys, time
from wildtrack.index import set_commit_pause
point = sys.argv.pop(1)
def pause(reached):
    if reached == point:
        print("PAUSED", reached, flush=True)
        time.sleep(3600)
set_commit_pause(pause)
from uvicorn.main import main
sys.argv[0] = "uvicorn"
main()
"""


class Server:
    """``python -m uvicorn --factory`` on 127.0.0.1 and a free port, exactly as a user would start it."""

    def __init__(self, index_dir: Path, artifacts: Path, log_path: Path, *, threshold: float | None = None,
                 config: dict | None = None, env: dict | None = None, pause_at: str | None = None) -> None:
        self.index_dir, self.artifacts, self.log_path = index_dir, artifacts, log_path
        self.threshold, self.config, self.env = threshold, config, env or {}
        self.pause_at = pause_at
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._log_offset = 0

    def start(self, attempts: int = 3) -> Server:
        """Start on a free port; retried on another port if one was taken between choosing and binding."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except PortTaken:
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> Server:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "WILDTRACK_INDEX": str(self.index_dir), "WILDTRACK_ARTIFACTS": str(self.artifacts),
               "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **self.env}
        if self.threshold is not None:
            env["WILDTRACK_THRESHOLD"] = str(self.threshold)
        if self.config:
            env["WILDTRACK_SERVE_CONFIG"] = json.dumps(self.config)
        # --host/--port rather than an inherited --fd: uvicorn treats an fd as a Unix socket and then never sets
        # TCP_NODELAY, which adds ~40 ms (Nagle + delayed ACK) to every request.
        launcher = ["-m", "uvicorn"] if self.pause_at is None else ["-c", PAUSING_UVICORN, self.pause_at]
        cmd = [sys.executable, *launcher, "--factory", FACTORY, "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "info", "--timeout-graceful-shutdown", "5"]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                if "address already in use" in self.log(since_start=True).lower():
                    raise PortTaken(self.url)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server not healthy after {START_TIMEOUT:.0f}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the laptop loses power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(since_start=True):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the server log:\n{self.log()}")
            time.sleep(0.1)

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def log(self, since_start: bool = False) -> str:
        """The server's output (the tail, or everything since the last start)."""
        try:
            text = self.log_path.read_bytes().decode(errors="replace")
        except OSError:
            return ""
        return text[self._log_offset:] if since_start else text[-4000:]


class PortTaken(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
