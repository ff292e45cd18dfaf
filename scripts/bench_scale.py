#!/usr/bin/env python
"""Scale-out benchmark: the local and Ray engines on the same photos, search at 100k/1M vectors, re-ranking
from the feature store, and a cost table per million photos, written to docs/scale.md.

The real sample is replicated (hard links with distinct names, one folder per turtle) to ``--copies`` x its size
under /tmp. Each engine runs the two catalogue jobs (embedding with a MobileNetV2 model, RootSIFT extraction)
through :mod:`wildtrack.jobs`, as ``index build`` does; Ray runs on this machine with 1 and with 2 workers for the
per-worker throughput. Peak memory: the driver's max RSS, and the largest Ray worker's RSS sampled from /proc.

    python scripts/bench_scale.py --data ../shared/data/seaturtleid2022-dev --copies 8
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def replicate(data: Path, copies: int, out: Path) -> list[tuple[str, Path]]:
    """(identity, path) of ``copies`` hard-linked replicas of every photo of ``data``, with distinct names."""
    from wildtrack.data import load_dataset

    shutil.rmtree(out, ignore_errors=True)
    photos = []
    for r in load_dataset(data).records:
        folder = out / r.identity
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(copies):
            dst = folder / f"{r.path.stem}_c{c}{r.path.suffix}"
            try:
                os.link(r.path, dst)
            except OSError:
                shutil.copyfile(r.path, dst)
            photos.append((r.identity, dst))
    return photos


def model(out: Path, size: int) -> Path:
    from bench_embed import default_artifacts

    if not (out / "preprocessor.pkl").exists():
        out.mkdir(parents=True, exist_ok=True)
        default_artifacts(size, out)
    return out


class WorkerMemory:
    """Largest RSS of any Ray worker process (``ray::`` in its command line), sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if b"ray::" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
                except OSError:
                    continue

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_engine(engine, artifacts: Path, photos: list[Path], work: Path) -> dict:
    """Seconds and photos/s of both jobs on fresh directories (nothing reused)."""
    from wildtrack.config import DEFAULT_FOCUS
    from wildtrack.embed import load_embedder
    from wildtrack.features import SiftExtractor
    from wildtrack.jobs import embed_photos, extract_features, photo_ids

    shutil.rmtree(work, ignore_errors=True)
    os.environ["WILDTRACK_CACHE_DIR"] = str(work / "cache")  # a cold embedding cache for the local engine
    embedder = load_embedder(artifacts, backend="onnx")
    with WorkerMemory() as mem:
        t0 = time.perf_counter()
        result = embed_photos(engine, embedder, artifacts, "onnx", photos, work / "stage")
        t1 = time.perf_counter()
        ids = photo_ids(photos, photos[0].parents[1])
        files = extract_features(engine, SiftExtractor(focus=DEFAULT_FOCUS), list(zip(ids, photos, strict=True)),
                                 work / "index")
        t2 = time.perf_counter()
    store_bytes = sum(e["bytes"] for e in files.values())
    return {"embed_s": t1 - t0, "features_s": t2 - t1, "embedded": len(result.ok), "n": len(photos),
            "embed_per_s": len(photos) / (t1 - t0), "features_per_s": len(photos) / (t2 - t1),
            "worker_peak_mb": mem.peak_mb, "store_bytes": store_bytes, "files": files,
            "embeddings": result.embeddings}


def rerank_cost(work: Path, files: dict, photos: list[Path], queries: int, k: int) -> dict:
    """Per query: reading a K-photo shortlist's features from the store (cold process cache), and the whole
    re-ranking (store read + K RANSAC matches; the query's own extraction excluded)."""
    from wildtrack.config import DEFAULT_FOCUS
    from wildtrack.features import SiftExtractor
    from wildtrack.features.store import FeatureStore, StoreFeatureCache
    from wildtrack.matching import matcher_for
    from wildtrack.matching.pipeline import MatchingPipeline

    rng = np.random.default_rng(0)
    extractor = SiftExtractor(focus=DEFAULT_FOCUS)
    read, total = [], []
    for _ in range(queries):
        store = FeatureStore(work / "index", files)  # fresh: every shard verified and mapped on first use
        cache = StoreFeatureCache(store, photos[0].parents[1], extractor)
        pipeline = MatchingPipeline(extractor, matcher_for(extractor.name), k=k, features=cache)
        pick = [photos[i] for i in rng.choice(len(photos), k + 1, replace=False)]
        query = cache.get(pick[0])
        t0 = time.perf_counter()
        gallery = cache.get_many(pick[1:], pipeline.workers)
        t1 = time.perf_counter()
        pipeline.count(query, gallery)
        t2 = time.perf_counter()
        read.append(t1 - t0)
        total.append(t2 - t0)
    return {"read_ms": 1000 * float(np.median(read)), "rerank_ms": 1000 * float(np.median(total)),
            "shards": len(files) - 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--copies", type=int, default=8, help="replicas of each photo (388 x 8 = 3104 files)")
    p.add_argument("--size", type=int, default=224, help="model input side")
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--search-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--search-budget-s", type=float, default=420.0)
    p.add_argument("--usd-per-core-hour", type=float, default=0.04,
                   help="price used for the cost column (an assumption: on-demand x86 vCPU-hour, set your own)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wildtrack_scale")
    p.add_argument("--out", type=Path, default=Path("docs/scale.md"))
    args = p.parse_args(argv)

    import ray

    from wildtrack.jobs import LocalEngine, RayEngine

    start = time.perf_counter()
    photos = [path for _, path in replicate(args.data, args.copies, args.work / "data")]
    artifacts = model(args.work / "model", args.size)
    cores = os.cpu_count() or 1
    print(f"{len(photos)} photos, {cores} cores", flush=True)
    runs = {}
    runs["local"] = run_engine(LocalEngine(args.shard_size), artifacts, photos, args.work / "local")
    print("local", {k: v for k, v in runs["local"].items() if k not in ("files", "embeddings")}, flush=True)
    local_driver_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start_s = time.perf_counter() - t0
    for workers in sorted({cores, 1}, reverse=True):
        name = f"ray x{workers}"
        runs[name] = run_engine(RayEngine("local", args.shard_size, workers=workers), artifacts, photos,
                                args.work / f"ray{workers}")
        print(name, {k: v for k, v in runs[name].items() if k not in ("files", "embeddings")}, flush=True)
    ray.shutdown()
    driver_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    diff = float(np.abs(runs["local"]["embeddings"] - runs[f"ray x{cores}"]["embeddings"]).max())
    rerank = rerank_cost(args.work / "local", runs["local"]["files"], photos, 20, 20)

    import bench_search

    search_json = args.work / "search.json"
    bench_search.main(["--sizes", *map(str, args.search_sizes), "--budget-s", str(args.search_budget_s),
                       "--queries", "100", "--out", str(search_json)])
    import json

    search = json.loads(search_json.read_text())
    write_doc(args, runs, cores, ray_start_s, local_driver_mb, driver_mb, diff, rerank, search,
              time.perf_counter() - start, len(photos))
    return 0


def write_doc(args, runs, cores, ray_start_s, local_driver_mb, driver_mb, diff, rerank, search, total_s, n) -> None:
    from bench_search import HEADER, format_row

    local, ray_all = runs["local"], runs[f"ray x{cores}"]
    lines = [
        "# Scale-out: catalogue jobs on Ray, the feature store, and what a million photos cost",
        "",
        f"Measured by `make bench-scale` (`python scripts/bench_scale.py --data {args.data} --copies {args.copies}`)"
        f" on {platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}: "
        f"the real sample replicated to {n} files with distinct names, a MobileNetV2 model at {args.size} px "
        f"(ONNX Runtime), RootSIFT from the located turtle, shards of {args.shard_size} photos. Total run "
        f"{total_s / 60:.0f} min.",
        "",
        "## Engines side by side (same photos, nothing cached)",
        "",
        "| engine | embedding photos/s | local features photos/s | both jobs photos/s | peak worker RSS MB |",
        "|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        both = r["n"] / (r["embed_s"] + r["features_s"])
        worker = "in the driver" if name == "local" else f"{r['worker_peak_mb']:.0f}"
        lines.append(f"| {name} | {r['embed_per_s']:.1f} | {r['features_per_s']:.2f} | {both:.2f} | {worker} |")
    overhead = 1 - (ray_all["n"] / (ray_all["embed_s"] + ray_all["features_s"])) / (
        local["n"] / (local["embed_s"] + local["features_s"]))
    one = runs.get("ray x1")
    lines += [
        "",
        f"- Driver peak RSS: {local_driver_mb:.0f} MB after the local engine's run (model and jobs in-process), "
        f"{driver_mb:.0f} MB at the end (the Ray runs add what the driver receives: shard bytes, one at a time).",
        f"- Ray on one {cores}-core machine, both jobs together: "
        + (f"{100 * overhead:.0f} % fewer photos/s than the local engine" if overhead >= 0 else
           f"{-100 * overhead:.0f} % more photos/s than the local engine (its SIFT threads share one turtle "
           "locator; Ray's workers are separate processes)")
        + f" (target: within 25 %), plus {ray_start_s:.0f} s to start the runtime once.",
        f"- Embeddings from the two engines differ by at most {diff:.1e} (batches differ).",
    ]
    if one is not None:
        per1 = one["n"] / (one["embed_s"] + one["features_s"])
        per2 = ray_all["n"] / (ray_all["embed_s"] + ray_all["features_s"]) / cores
        lines.append(f"- Per-worker throughput: {per1:.2f} photos/s with 1 worker, {per2:.2f} photos/s per worker "
                     f"with {cores} ({100 * per2 / per1:.0f} %). Caveat: the single worker is not confined to one "
                     "core (ONNX Runtime and the turtle locator's TensorFlow keep their own thread pools), so on "
                     f"{cores} cores this understates the per-worker figure; what supports linear scaling is that "
                     "shards share nothing but the photos (no coordination between workers, results stream to the "
                     "driver), not a measurement on more machines.")
    per_photo = {"embedding": cores / local["embed_per_s"], "local features": cores / local["features_per_s"]}
    store_per_photo = local["store_bytes"] / local["n"]
    lines += [
        "",
        "## Cost per million photos",
        "",
        f"From the local engine's measured per-photo CPU time (seconds x {cores} cores / photos); linear scaling "
        "assumed from the per-worker figures above; price "
        f"${args.usd_per_core_hour}/core-hour (`--usd-per-core-hour`, an assumption: set your own).",
        "",
        "| job | core-s per photo | core-hours per 1M | hours on 16 cores | hours on 128 cores | USD per 1M |",
        "|---|---|---|---|---|---|",
    ]
    for job, s in per_photo.items():
        ch = s * 1e6 / 3600
        lines.append(f"| {job} | {s:.3f} | {ch:.0f} | {ch / 16:.1f} | {ch / 128:.1f} | "
                     f"{ch * args.usd_per_core_hour:.2f} |")
    lines += [
        "",
        f"Feature store: {store_per_photo / 1e3:.0f} kB per photo, so {store_per_photo * 1e6 / 1e9:.0f} GB per "
        f"million photos; embeddings: {4 * runs['local']['embeddings'].shape[1] / 1e3:.1f} kB per photo.",
        "",
        "## Re-ranking with the shortlist's features from the store",
        "",
        f"Median over 20 queries of a 20-photo shortlist drawn at random from {n} photos in "
        f"{rerank['shards']} shards, store opened fresh for each (so each touched shard is verified by sha256 and "
        f"mapped): reading the shortlist's features {rerank['read_ms']:.0f} ms; reading plus 20 RANSAC matches "
        f"{rerank['rerank_ms']:.0f} ms (the query's own extraction not included). Only the shortlisted photos' rows "
        "are read from their shards.",
        "",
        "## Search latency at 100k and 1M vectors",
        "",
        f"From `scripts/bench_search.py` (random 256-d unit vectors, the worst case for approximate search; "
        f"{search['total_s']:.0f} s within its time budget; notes below).",
        "",
        "```",
        HEADER,
        *[format_row(r, 10) for r in search["results"]],
        *[f"note: {note}" for note in search["notes"]],
        "```",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = args.out.read_text() if args.out.exists() else ""
    marker = "<!-- measured above, by hand below -->"
    manual = existing.split(marker, 1)[1] if marker in existing else ""
    args.out.write_text("\n".join(lines) + marker + manual)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
