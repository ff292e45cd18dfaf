#!/usr/bin/env python
"""Every matcher and crop side by side on the dev split: one table for `make bench-accuracy`.

For the two presets exactly as ``--matching fast|best`` sets them, and each other local-feature configuration
(features × where keypoints come from), it runs
:mod:`bench_rerank` (the product's extractor, matcher, gallery-only fit and identity support) and collects:

* the matcher **alone over the whole gallery** (inliers, the cosine breaking ties);
* the matcher **re-ranking the global shortlist** at each K, fused with the cosine as the product fuses it
  (``K = gallery size`` is the ``best`` preset on a catalogue this small);
* R@1, R@5, mAP, encounters named right, new-individual true-accept at the catalogue's own threshold, seconds
  per query (global embedding, extraction and matching apart) and the share of queries with local evidence;
* the global stage's shortlist recall@K (own turtle within the top K).

Features and embeddings are cached (``WILDTRACK_CACHE_DIR``), so a rerun of one row costs only its matching.

    python scripts/bench_matching.py --data ../shared/data/seaturtleid2022-dev \
        --artifacts bench_out/accuracy/model_arcface_triplet
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from wildtrack.config import MATCHING_PRESETS


def _preset_args(name: str) -> list[str]:
    """bench_rerank arguments that match exactly as ``--matching NAME`` does."""
    p = MATCHING_PRESETS[name]
    return ["--features", str(p["local_features"]), "--focus", str(p["local_focus"]),
            "--max-side", str(p["local_max_side"]), "--max-keypoints", str(p["local_keypoints"]),
            "--local-dims", str(p["local_dims"]), "--fusion-features", str(p["fusion_features"]),
            "--ks", str(p["rerank_k"])]


SHORTLISTS = ["--ks", "100", str(MATCHING_PRESETS["best"]["rerank_k"])]  # beyond a small gallery: all of it
CONFIGS: dict[str, list[str]] = {
    # name: bench_rerank arguments (the matcher alone over the whole gallery, then re-ranking each shortlist)
    "preset best": [*_preset_args("best")],
    "preset fast": [*_preset_args("fast"), "--skip-anchor"],
    "rootsift/turtle": ["--features", "rootsift", "--focus", "turtle", "--max-side", "800", "--max-keypoints", "1500",
                        "--local-dims", "0", "--fusion-features", "inliers", *SHORTLISTS],
    "rootsift/frame": ["--features", "rootsift", "--focus", "frame", "--max-side", "1024", "--max-keypoints", "1000",
                       "--local-dims", "0", "--fusion-features", "inliers", *SHORTLISTS],
    "xfeat/saliency": ["--features", "xfeat", "--focus", "saliency", "--max-side", "1024", "--max-keypoints", "1024",
                       "--fusion-features", "inliers", "cosine+inliers", *SHORTLISTS],
}


def _bench_rerank() -> Any:
    spec = importlib.util.spec_from_file_location("bench_rerank", Path(__file__).with_name("bench_rerank.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--artifacts", type=Path, required=True, help="trained model (the global stage and shortlist)")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", type=Path, default=Path("bench_out/matching"))
    p.add_argument("--reuse", action="store_true", help="keep a configuration's JSON from an earlier run")
    return p.parse_args(argv)


def _rows(name: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows of one configuration's bench_rerank report."""
    timing = report["timing_breakdown_s"]
    evidence = report.get("evidence", {})
    encounters = report.get("encounters", {})
    open_sets = report.get("open_set", {})
    out = []
    for r in report["results"]:
        method = r["method"]
        if "no identity support" in method or method.startswith("global+inliers") or method == "local-all":
            continue
        key = method.replace("global+local", "match_probability") if method.startswith("global+local") else None
        enc = encounters.get(method) or (encounters.get("global") if method == "global" else None)
        row = {"config": name if method != "global" else "global stage", "method": method,
               "R@1": r["R@1"], "R@5": r["R@5"], "mAP": r["mAP"],
               "encounters": None if not enc else f"{round(enc.get('accuracy', 0) * enc.get('num_encounters', 0))}/"
                                                  f"{enc.get('num_encounters')}",
               "s_per_query": r["s_per_query"], "extract_s": timing.get("extract"),
               "evidence": evidence.get("with_evidence") if method.startswith("local-all") else None}
        if key and key in open_sets:
            row["TAR@catalogue_threshold"] = (open_sets[key].get("gallery_fitted") or {}).get("TAR")
            row["FAR@catalogue_threshold"] = (open_sets[key].get("gallery_fitted") or {}).get("FAR")
        out.append(row)
    return out


def _markdown(rows: list[dict[str, Any]], recall: dict[str, float]) -> str:
    head = ("| features / crop | method | R@1 | R@5 | mAP | encounters | new-individual TAR / FAR (catalogue thr.) | "
            "s/query | extract s |")
    lines = [head, "|" + "---|" * 9]
    seen_global = False
    for r in rows:
        if r["method"] == "global":
            if seen_global:
                continue
            seen_global = True
        tar, far = r.get("TAR@catalogue_threshold"), r.get("FAR@catalogue_threshold")
        rates = "" if tar is None else f"{tar:.2f} / {far:.2f}"
        lines.append(f"| {r['config']} | {r['method']} | {r['R@1']:.3f} | {r['R@5']:.3f} | {r['mAP']:.3f} | "
                     f"{r['encounters'] or ''} | {rates} | {r['s_per_query']:.2f} | "
                     f"{'' if r['method'] == 'global' else r['extract_s']} |")
    lines.append("")
    lines.append("Shortlist recall of the global stage (own turtle within the top K): "
                 + ", ".join(f"K{k[1:]} {v:.2f}" for k, v in recall.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = _bench_rerank()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    recall: dict[str, float] = {}
    for name in args.configs:
        path = args.out / (name.replace("/", "__").replace(" ", "_") + ".json")
        if not (args.reuse and path.is_file()):
            print(f"== {name}", file=sys.stderr, flush=True)
            bench.main(["--data", str(args.data), "--artifacts", str(args.artifacts), *CONFIGS[name], "--out",
                        str(path)])
        report = json.loads(path.read_text())
        recall = report.get("shortlist_recall", recall)
        rows += _rows(name, report)
    table = _markdown(rows, recall)
    (args.out / "table.md").write_text(table, encoding="utf-8")
    (args.out / "table.json").write_text(json.dumps({"rows": rows, "shortlist_recall": recall}, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
