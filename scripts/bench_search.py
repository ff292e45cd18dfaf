#!/usr/bin/env python
"""Search benchmark for the catalogue index: how big can a gallery get before search feels slow?

For each gallery size, random L2-normalised vectors (dim 256 by default) are indexed as flat (exact), HNSW and IVF
through ``GalleryIndex``, the way the CLI uses it, and the script reports build time, single-query and batched
search latency (p50/p99), and recall@k of HNSW/IVF against the exact flat results. HNSW and IVF are also timed at a
4x more thorough search setting (efSearch / nprobe), which needs no rebuild.

Random vectors are a worst case for approximate search (no cluster structure; every neighbour is almost equally
far away); real embeddings cluster by individual, so recall on them is higher.

The run finishes by itself within ``--budget-s`` (default 570 s): galleries of 500k and more use a lighter HNSW
efConstruction and IVF training and fewer single queries; timing loops stop after ``--search-cap-s``; and a build
whose projected time (from the previous size) does not fit what is left of the budget is skipped. Every such
change is printed and stored under ``notes`` in the JSON.

    python scripts/bench_search.py --sizes 10000 100000 --out bench_out/search.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

import wildtrack.index as ix
import wildtrack.index.faiss_spec as faiss_spec
from wildtrack.index import GalleryIndex, MetaRow

LARGE = 500_000  # from this gallery size on, the lighter build settings apply
IVF_DEFAULTS = (ix.IVF_POINTS_PER_CENTROID, ix.IVF_TRAIN_ITERS)  # patched per size, restored from here


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf"], choices=ix.KINDS)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", type=int, default=200, help="single-query timings per setting (halved at >= 500k)")
    p.add_argument("--batch", type=int, default=100, help="queries per batched search call")
    p.add_argument("--batches", type=int, default=5, help="batched calls timed per setting")
    p.add_argument("--ef-construction", type=int, default=ix.HNSW_EF_CONSTRUCTION)
    p.add_argument("--large-ef-construction", type=int, default=16, help="HNSW efConstruction at >= 500k")
    p.add_argument("--ef-search", type=int, default=ix.HNSW_EF_SEARCH)
    p.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: all cores)")
    p.add_argument("--budget-s", type=float, default=570.0, help="whole-run time budget")
    p.add_argument("--search-cap-s", type=float, default=20.0, help="max seconds per timing loop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench_out/search.json"))
    return p.parse_args(argv)


@dataclass
class Run:
    """Run-wide state: arguments, the deadline, what earlier builds took, and notes for the report."""

    args: argparse.Namespace
    deadline: float
    builds: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # kind -> (n, seconds, effort)
    notes: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)


def unit_vectors(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    """Random unit vectors, generated in chunks to keep peak memory near the final array."""
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        out[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def settings_for(n: int, run: Run) -> dict[str, Any]:
    """Per-size settings, lighter for large galleries so the default run fits the budget."""
    a = run.args
    s = {"ef_construction": a.ef_construction, "queries": a.queries, "ivf": IVF_DEFAULTS}
    if n >= LARGE:
        s.update(ef_construction=a.large_ef_construction, queries=max(20, a.queries // 2), ivf=(39, 8))
        run.note(
            f"n={n:,}: to fit the budget, HNSW efConstruction {a.ef_construction}->{s['ef_construction']} "
            f"(lowers HNSW recall), {s['queries']} single queries, IVF k-means on 39 points/centroid x 8 iterations"
        )
    return s


def build_effort(kind: str, s: dict[str, Any]) -> float:
    """Relative cost knob of a build: efConstruction for HNSW, k-means points/centroid x iterations for IVF."""
    if kind == "hnsw":
        return float(s["ef_construction"])
    ppc, iters = s["ivf"]
    return float(ppc * iters)


def projected_build_s(run: Run, kind: str, n: int, s: dict[str, Any]) -> float | None:
    """Build time extrapolated (roughly) from the same kind at the previous size; flat is always cheap."""
    if kind not in run.builds or kind == "flat":
        return None
    n0, t0, effort0 = run.builds[kind]
    ratio = build_effort(kind, s) / effort0
    if kind == "hnsw":
        return t0 * (n / n0) * (math.log(n) / math.log(n0)) * ratio
    # ivf: nlist ~ sqrt(n), so k-means and assignment both grow ~ n^1.5; only k-means follows the effort knob
    return t0 * (n / n0) ** 1.5 * (1 + ratio) / 2


def time_search(
    idx: GalleryIndex, q: np.ndarray, n_single: int, n_batches: int, run: Run, **search_kw: int
) -> tuple[dict[str, Any], dict[str, Any], list[list[str]]]:
    """Single-query and batched latencies plus the batched top-k ids; each loop stops at --search-cap-s."""
    a = run.args
    idx.search(q[:5], a.k, **search_kw)  # warm-up
    single: list[float] = []
    stop = time.perf_counter() + a.search_cap_s
    for i in range(n_single):
        t = time.perf_counter()
        idx.search(q[i], a.k, **search_kw)
        single.append(time.perf_counter() - t)
        if t > stop:
            break
    batched, ids = [], []
    for b in range(n_batches):
        t = time.perf_counter()
        hits = idx.search(q[b * a.batch : (b + 1) * a.batch], a.k, **search_kw)
        batched.append(time.perf_counter() - t)
        ids += [[h.image_id for h in row] for row in hits]
    one = {**percentiles_ms(single), "queries": len(single)}
    many = {**percentiles_ms(batched), "batch": a.batch, "calls": n_batches, "qps": round(len(ids) / sum(batched), 1)}
    return one, many, ids


def flat_batches(idx: GalleryIndex, q: np.ndarray, run: Run) -> int:
    """How many batched calls fit --search-cap-s on exact search (the slowest kind); others use the same."""
    t = time.perf_counter()
    idx.search(q[: run.args.batch], run.args.k)
    per = time.perf_counter() - t
    return max(1, min(run.args.batches, int(run.args.search_cap_s / max(per, 1e-6))))


def bench_kind(
    kind: str, x: np.ndarray, meta: list[MetaRow], q: np.ndarray, s: dict[str, Any], run: Run, n_batches: int
) -> tuple[list[tuple[dict[str, Any], list[list[str]]]], int]:
    """Build one kind, time it at its default search setting and a 4x more thorough one."""
    faiss_spec.IVF_POINTS_PER_CENTROID, faiss_spec.IVF_TRAIN_ITERS = s["ivf"]  # read by faiss_spec when building
    t0 = time.perf_counter()
    idx = GalleryIndex.build(
        x, meta, "bench", kind=kind, ef_search=run.args.ef_search, ef_construction=s["ef_construction"]
    )
    build_s = time.perf_counter() - t0
    run.builds[kind] = (len(x), build_s, build_effort(kind, s))
    if kind == "flat":
        n_batches = flat_batches(idx, q, run)
        if n_batches < run.args.batches:
            run.note(f"n={len(x):,}: {n_batches} batched call(s) per setting instead of {run.args.batches}")
    params = idx.index_info["params"]
    variants: list[dict[str, int]] = [{}]
    if idx.kind == "hnsw":
        variants.append({"ef_search": 4 * params["ef_search"]})
    elif idx.kind == "ivf":
        variants.append({"nprobe": min(params["nlist"], 4 * params["nprobe"])})
    out = []
    for kw in variants:
        single, batched, ids = time_search(idx, q, s["queries"], n_batches, run, **kw)
        label = kind if kind == idx.kind else f"{kind}>{idx.kind}"
        label += "".join(f" {'ef' if k == 'ef_search' else k}={v}" for k, v in kw.items())
        row = {"kind": kind, "effective_kind": idx.kind, "label": label, "index_params": params}
        row.update(search_params=kw, build_s=round(build_s, 2), single=single, batched=batched)
        out.append((row, ids))
    return out, n_batches


def recall(approx: list[list[str]], exact: list[list[str]]) -> float:
    found = sum(len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True))
    return round(found / sum(len(e) for e in exact), 4)


def bench_size(n: int, run: Run, rng: np.random.Generator) -> list[dict[str, Any]]:
    a = run.args
    s = settings_for(n, run)
    t0 = time.perf_counter()
    x, q = unit_vectors(rng, n, a.dim), unit_vectors(rng, max(s["queries"], a.batch * a.batches), a.dim)
    meta = [MetaRow(str(i), f"id{i % 1000}/{i}.jpg", f"id{i % 1000}") for i in range(n)]
    print(f"\n== n={n:,} dim={a.dim}: data ready in {time.perf_counter() - t0:.1f}s", flush=True)
    rows: list[dict[str, Any]] = []
    exact: list[list[str]] | None = None
    n_batches = a.batches
    for kind in ["flat"] + [k for k in a.kinds if k != "flat"]:  # flat first: it is the ground truth
        guess = projected_build_s(run, kind, n, s)
        reserve = 4 * a.search_cap_s  # two settings x (single + batched) loops
        if guess is not None and guess + reserve > run.left():
            run.note(
                f"n={n:,}: {kind} skipped - projected build {guess:.0f}s + search does not fit the "
                f"{max(run.left(), 0):.0f}s left of --budget-s {a.budget_s:.0f}"
            )
            continue
        results, n_batches = bench_kind(kind, x, meta, q, s, run, n_batches)
        for row, ids in results:
            if kind == "flat":
                exact = ids
            row.update(n=n, dim=a.dim, k=a.k)
            row[f"recall@{a.k}"] = recall(ids, exact) if exact is not None else None
            if kind in a.kinds:
                rows.append(row)
                print(format_row(row, a.k), flush=True)
    return rows


HEADER = (
    f"{'n':>9} {'kind':<16} {'build s':>8} {'1q p50 ms':>10} {'1q p99 ms':>10} "
    f"{'batch p50 ms':>13} {'batch p99 ms':>13} {'qps':>9} {'recall':>7}"
)


def format_row(r: dict[str, Any], k: int) -> str:
    rec = r.get(f"recall@{k}")
    return (
        f"{r['n']:>9,} {r['label']:<16} {r['build_s']:>8.2f} "
        f"{r['single']['p50_ms']:>10.3f} {r['single']['p99_ms']:>10.3f} "
        f"{r['batched']['p50_ms']:>13.2f} {r['batched']['p99_ms']:>13.2f} {r['batched']['qps']:>9.0f} "
        f"{'' if rec is None else f'{rec:.3f}':>7}"
    )


def environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "numpy": np.__version__,
        "loadavg_at_end": None if load is None else [round(v, 2) for v in load],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    run = Run(args, deadline=start + args.budget_s)
    rng = np.random.default_rng(args.seed)
    print(
        f"k={args.k}, batches of {args.batch} queries, HNSW M={ix.HNSW_M} efSearch={args.ef_search}; "
        f"random unit vectors (worst case for approximate search); faiss threads {faiss.omp_get_max_threads()}",
        flush=True,
    )
    print(HEADER, flush=True)
    results = []
    for n in sorted(args.sizes):
        results += bench_size(n, run, rng)
    total = time.perf_counter() - start
    print("\n" + HEADER)
    for r in results:
        print(format_row(r, args.k))
    for note in run.notes:
        print(f"note: {note}")
    print(f"total {total:.0f}s")
    doc = {
        "benchmark": "wildtrack search",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": "random L2-normalised float32 vectors; queries are fresh random vectors (not gallery items)",
        "notes": run.notes,
        "environment": environment(),
        "total_s": round(total, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
