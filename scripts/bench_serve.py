#!/usr/bin/env python
"""Service benchmark: requests/s, latency, errors and peak memory of the real server under mixed load.

Starts the real server (``python -m uvicorn --factory wildtrack.serve.app:app_from_env`` on 127.0.0.1, a port
chosen by the OS), waits for ``/health``, then for each concurrency level runs that many clients for
``--seconds``, each sending a mix of ``/predict``, ``/search`` and ``/enroll`` (``--mix``, by weight). Prints
req/s, p50/p99 latency and errors per level, the server's peak RSS (``VmHWM``), then an overload level
(``--overload`` clients against a queue of ``--max-queue``) that must answer past capacity with fast 503s.
Without ``--index``/``--artifacts`` it generates a small synthetic catalogue and a tiny untrained model.

    python scripts/bench_serve.py --concurrency 8 32 --seconds 20 --out bench_out/serve.json
    python scripts/bench_serve.py --index runs/demo/index --artifacts runs/demo/artifacts --image photo.jpg
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

FACTORY = "wildtrack.serve.app:app_from_env"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, help="index directory the server loads (default: a generated one)")
    p.add_argument("--artifacts", type=Path, help="model artifacts the index was built with")
    p.add_argument("--image", type=Path, help="the photo every query sends (default: one of the catalogue's)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    p.add_argument("--requests", type=int, default=100_000, help="answers per concurrency level (at most)")
    p.add_argument("--seconds", type=float, default=20.0, help="time per concurrency level")
    p.add_argument("--mix", default="predict=6,search=3,enroll=1", help="endpoint weights")
    p.add_argument("--max-queue", type=int, default=32, help="the server's queue (max_queued_requests)")
    p.add_argument("--overload", type=int, default=96, help="clients for the past-capacity level (0: skip)")
    p.add_argument("--work", type=Path, default=Path("bench_out/serve_work"), help="where a generated catalogue goes")
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
               "TF_CPP_MIN_LOG_LEVEL": "2",
               "WILDTRACK_SERVE_CONFIG": json.dumps({"max_queued_requests": self.args.max_queue})}
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


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (Linux ``VmHWM``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def run_level(url: str, photo: bytes, name: str, concurrency: int, max_requests: int, seconds: float,
              topk: int, mix: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """``concurrency`` threads, each with its own connection, share one request budget and one deadline."""
    latencies: dict[str, list[float]] = {k: [] for k in mix}
    busy: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + seconds
    endpoints = [k for k, w in mix.items() for _ in range(w)]

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.perf_counter() >= deadline:
                return False
            issued += 1
            return True

    def call(client: httpx.Client, endpoint: str, n: int) -> httpx.Response:
        if endpoint == "enroll":  # a fresh small photo each time: every enrolment really writes
            img = Image.fromarray(np.random.default_rng(n).integers(0, 255, (48, 64, 3), dtype=np.uint8))
            buf = io.BytesIO()
            img.resize((320, 240)).save(buf, format="JPEG")
            return client.post("/enroll", data={"identity": f"bench-{n % 7}"},
                               files={"files": ("e.jpg", buf.getvalue())})
        field = "file"
        data = {"topk": str(topk)} if endpoint == "predict" else {"k": str(topk)}
        return client.post(f"/{endpoint}", files={field: (name, photo)}, data=data)

    def worker(w: int) -> None:
        rng = np.random.default_rng(seed * 1000 + w)
        with httpx.Client(base_url=url, timeout=120) as client:
            while take():
                endpoint = endpoints[int(rng.integers(len(endpoints)))]
                t0 = time.perf_counter()
                try:
                    r = call(client, endpoint, int(rng.integers(1 << 30)))
                    status, text = r.status_code, r.text[:200]
                except httpx.HTTPError as e:
                    status, text = 0, f"{type(e).__name__}: {e}"
                dt = time.perf_counter() - t0
                with lock:
                    if status == 200:
                        latencies[endpoint].append(dt)
                    elif status == 503 and "retry-after" in r.headers:
                        busy.append(dt)
                    else:
                        errors.append(f"{endpoint} {status}: {text}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [x for v in latencies.values() for x in v]

    def pct(values: list[float]) -> dict[str, float]:
        ms = np.array(values or [0.0]) * 1000
        return {"p50": round(float(np.percentile(ms, 50)), 1), "p99": round(float(np.percentile(ms, 99)), 1)}

    return {
        "concurrency": concurrency, "wall_s": round(wall, 2), "ok": len(ok), "busy_503": len(busy),
        "errors": len(errors), "first_errors": errors[:3],
        "requests_per_s": round(len(ok) / wall, 2) if wall > 0 else 0.0,
        "latency_ms": pct(ok), "per_endpoint": {k: {"n": len(v), **pct(v)} for k, v in latencies.items()},
        "busy_503_latency_ms": pct(busy) if busy else None,
    }


def generated_catalogue(work: Path) -> tuple[Path, Path, Path]:
    """A synthetic catalogue (24 individuals × 10 photos of 320 px), a tiny model trained for 2 epochs and its
    flat index, built once in ``work`` and reused; returns (index, artifacts, a query photo)."""
    import csv

    from wildtrack.config import TrainConfig
    from wildtrack.data.synth import generate_synthetic
    from wildtrack.embed import embed_paths, load_embedder
    from wildtrack.index import GalleryIndex
    from wildtrack.train import train

    data, artifacts, index = work / "data", work / "artifacts", work / "index"
    if not (index / "manifest.json").exists():
        shutil.rmtree(work, ignore_errors=True)
        print(f"generating a synthetic catalogue and a tiny model in {work} ...")
        generate_synthetic(data, identities=24, images_per_id=10, image_size=320, encounters_per_id=3, seed=7)
        cfg = TrainConfig(backbone="tiny", loss="softmax", image_size=64, embed_dim=32, epochs=2, batch_size=16,
                          split="per-identity")
        train(data, artifacts, cfg, log=lambda _msg: None, verbose=0)
        with open(data / "metadata.csv", newline="", encoding="utf-8") as fh:
            meta = list(csv.DictReader(fh))
        embedder = load_embedder(artifacts)
        result = embed_paths(embedder, [data / m["file_name"] for m in meta])
        rows = [{"path": m["file_name"], "identity": m["identity"], "date": m["date"]} for m in meta]
        GalleryIndex.build(result.embeddings, rows, embedder.fingerprint, data_root=data).save(index)
    query = sorted((data / "t003").glob("*.jpg"))[0]
    return index, artifacts, query


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.index is None or args.artifacts is None:
        args.index, args.artifacts, default_image = generated_catalogue(args.work)
        args.image = args.image or default_image
    if args.image is None:
        raise SystemExit("--image is required with --index/--artifacts")
    mix = {k: int(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    photo = args.image.read_bytes()
    out: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "image": {"path": str(args.image), "bytes": len(photo)},
        "settings": {k: str(v) for k, v in vars(args).items() if k not in ("out",)},
        "levels": [],
    }
    with ServerProcess(args, args.out.with_suffix(".server.log")) as server:
        assert server.proc is not None
        out["server"] = httpx.get(server.url + "/health", timeout=10).json()
        print(f"server {server.url}: {out['server']['index_count']} images, {out['server']['identities_count']} "
              f"individuals, model {out['server']['model_fingerprint']} ({out['server']['backend']})")
        run_level(server.url, photo, args.image.name, 1, args.warmup, args.seconds, args.topk, {"predict": 1})
        out["rss_after_warmup_mb"] = peak_rss_mb(server.proc.pid)
        print(f"{'clients':>7} {'ok':>6} {'503':>5} {'err':>4} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'peak RSS MB':>12}")
        levels = [(c, args.seconds) for c in args.concurrency]
        levels += [(args.overload, args.seconds)] if args.overload else []
        for n, (c, seconds) in enumerate(levels):
            level = run_level(server.url, photo, args.image.name, c, args.requests, seconds, args.topk, mix, seed=n)
            level["peak_rss_mb"] = peak_rss_mb(server.proc.pid)
            level["overload"] = n >= len(args.concurrency)
            lat = level["latency_ms"]
            print(f"{c:>7} {level['ok']:>6} {level['busy_503']:>5} {level['errors']:>4} "
                  f"{level['requests_per_s']:>7.1f} {lat['p50']:>8.1f} {lat['p99']:>8.1f} {level['peak_rss_mb']!s:>12}"
                  + (f"   503 p50 {level['busy_503_latency_ms']['p50']} ms" if level["busy_503_latency_ms"] else ""))
            for e in level["first_errors"]:
                print(f"     error: {e}")
            out["levels"].append(level)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(level["errors"] for level in out["levels"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
