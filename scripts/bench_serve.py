#!/usr/bin/env python
"""Service benchmark: how fast does ``POST /predict`` answer on this machine, alone and under load?

Starts the real server (``python -m uvicorn --factory wildtrack.serve.app:app_from_env`` on 127.0.0.1, a port
chosen by the OS), waits for ``/health``, then for each concurrency level sends the same photo from that many
threads (httpx) until ``--requests`` answers or ``--seconds`` have passed, whichever comes first. Prints
p50/p90/p99 latency and requests/s per level, writes them as JSON to ``--out`` and stops the server.

    python scripts/bench_serve.py --index runs/demo/index --artifacts runs/demo/artifacts \\
        --image photo.jpg --concurrency 1 8 --out bench_out/serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

FACTORY = "wildtrack.serve.app:app_from_env"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, required=True, help="index directory the server loads")
    p.add_argument("--artifacts", type=Path, required=True, help="model artifacts the index was built with")
    p.add_argument("--image", type=Path, required=True, help="the photo every request sends")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--requests", type=int, default=200, help="answers per concurrency level (at most)")
    p.add_argument("--seconds", type=float, default=30.0, help="time per concurrency level (at most)")
    p.add_argument("--warmup", type=int, default=5, help="untimed requests before the first level")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=Path("bench_out/serve.json"))
    return p.parse_args(argv)


class ServerProcess:
    """The service in a child process, started the way a user starts it."""

    def __init__(self, args: argparse.Namespace, log_path: Path) -> None:
        self.args, self.log_path = args, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> ServerProcess:
        with socket.socket() as probe:  # a free port; the tiny window before uvicorn binds it is harmless here
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "WILDTRACK_INDEX": str(self.args.index), "WILDTRACK_ARTIFACTS": str(self.args.artifacts),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        if self.args.threshold is not None:
            env["WILDTRACK_THRESHOLD"] = str(self.args.threshold)
        # --port, not an inherited --fd: uvicorn takes an fd for a Unix socket and skips TCP_NODELAY (+40 ms).
        cmd = [sys.executable, "-m", "uvicorn", "--factory", FACTORY, "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait(self.args.start_timeout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"server not healthy after {timeout:.0f}s; log: {self.log_path}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_level(url: str, photo: bytes, name: str, concurrency: int, max_requests: int, seconds: float,
              topk: int) -> dict[str, Any]:
    """``concurrency`` threads, each with its own connection, share one request budget and one deadline."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + seconds

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.perf_counter() >= deadline:
                return False
            issued += 1
            return True

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while take():
                t0 = time.perf_counter()
                try:
                    r = client.post("/predict", files={"file": (name, photo)}, data={"topk": str(topk)})
                    ok = r.status_code == 200
                    err = None if ok else f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, err = False, f"{type(e).__name__}: {e}"
                dt = time.perf_counter() - t0
                with lock:
                    (latencies.append(dt) if ok else errors.append(err or "?"))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2) if wall > 0 else 0.0,
        "latency_ms": {q: round(float(np.percentile(ms, p)), 2) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}
        | {"mean": round(float(ms.mean()), 2), "max": round(float(ms.max()), 2)},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    photo = args.image.read_bytes()
    out: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "image": {"path": str(args.image), "bytes": len(photo)},
        "settings": {k: v for k, v in vars(args).items() if k not in ("index", "artifacts", "image", "out")},
        "levels": [],
    }
    with ServerProcess(args, args.out.with_suffix(".server.log")) as server:
        out["server"] = httpx.get(server.url + "/health", timeout=10).json()
        print(f"server {server.url}: {out['server']['index_count']} images, {out['server']['identities_count']} "
              f"individuals, model {out['server']['model_fingerprint']} ({out['server']['backend']})")
        run_level(server.url, photo, args.image.name, 1, args.warmup, args.seconds, args.topk)
        print(f"{'conc':>4} {'reqs':>6} {'err':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'req/s':>8}")
        for c in args.concurrency:
            level = run_level(server.url, photo, args.image.name, c, args.requests, args.seconds, args.topk)
            lat = level["latency_ms"]
            print(f"{c:>4} {level['requests']:>6} {level['errors']:>4} {lat['p50']:>8.1f} {lat['p90']:>8.1f} "
                  f"{lat['p99']:>8.1f} {level['requests_per_s']:>8.1f}")
            for e in level["first_errors"]:
                print(f"     error: {e}")
            out["levels"].append(level)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(level["errors"] for level in out["levels"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
