"""report.html: one self-contained page a biologist can open from the output folder (or on a phone).

Plain HTML and inline CSS, no scripts, no external assets; pictures are linked relatively because they
sit in the same folder, so the folder can be zipped or copied as a whole.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["write_report"]

HEADLINE = ("R@1", "R@5", "R@10", "mAP", "top1_identity_accuracy")
COUNTS = ("num_queries", "num_queries_without_match", "num_gallery", "num_ids")
LABELS = {
    "top1_identity_accuracy": "top-1 identity",
    "num_queries": "queries evaluated",
    "num_queries_without_match": "queries with no gallery match",
    "num_gallery": "gallery images",
    "num_ids": "identities",
    "TAR": "true-accept rate (known)",
    "FAR": "false-accept rate (unknown)",
    "num_known": "known queries",
    "num_unknown": "unknown queries",
}
RATE_KEYS = {"mAP", "top1_identity_accuracy", "TAR", "FAR", "accuracy"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:12px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:.3em 0}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{flex:1 1 120px;background:#f3f6f9;border-radius:8px;padding:10px;text-align:center}
.card .v{font-size:1.7em;font-weight:600}.card .k{color:#555;font-size:.9em}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.95em;min-width:260px}
td,th{padding:4px 10px;border-bottom:1px solid #e5e5e5;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.9em;word-break:break-all}.note{color:#666;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#555;font-size:.9em}
"""


def _is_rate(key: str) -> bool:
    return key.startswith("R@") or key in RATE_KEYS


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and _is_rate(key):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping) and all(not isinstance(v, Mapping | list) for v in value.values()):
        return ", ".join(f"{html.escape(str(k))} <b>{_fmt(str(k), v)}</b>" for k, v in value.items())
    if isinstance(value, Mapping | list | tuple):
        return f"<code>{html.escape(json.dumps(value, default=str))}</code>"
    return html.escape(str(value))


def _kv_table(items: Mapping[str, Any], unit: str = "") -> str:
    rows = "".join(
        f"<tr><th>{html.escape(LABELS.get(k, k))}</th><td class='n'>{_fmt(k, v)}{unit}</td></tr>"
        for k, v in items.items()
    )
    return f"<div class='scroll'><table>{rows}</table></div>"


def _per_identity_table(per_identity: Mapping[str, Mapping[str, Any]]) -> str:
    if not per_identity:
        return "<p class='note'>No per-identity figures.</p>"
    columns = sorted({c for row in per_identity.values() for c in row},
                     key=lambda c: (c != "num_queries", not c.startswith("R@"), c))
    # Worst first: the identities a biologist should look at are at the top.
    ordered = sorted(per_identity.items(), key=lambda kv: (kv[1].get("R@1", 0.0), kv[1].get("mAP", 0.0), kv[0]))
    head = "".join(f"<th class='n'>{html.escape(LABELS.get(c, c))}</th>" for c in columns)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td class='n'>{_fmt(c, row.get(c))}</td>" for c in columns)
        + "</tr>"
        for name, row in ordered
    )
    return (f"<p class='note'>Sorted by R@1, worst first.</p><div class='scroll'><table><tr><th>identity</th>"
            f"{head}</tr>{body}</table></div>")


def _href(picture: str | Path, out_dir: Path) -> str:
    p = Path(picture)
    rel = Path(os.path.relpath(p, out_dir)) if p.is_absolute() else p
    return quote(rel.as_posix())


def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    pictures: Sequence[str | Path],
    title: str = "WildTrack evaluation",
) -> Path:
    """Write ``out_dir/report.html`` from a metrics.json dict and the pictures saved beside it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    cards = "".join(
        f"<div class='card'><div class='v'>{_fmt(k, metrics[k])}</div><div class='k'>{esc(LABELS.get(k, k))}"
        f"</div></div>"
        for k in HEADLINE
        if k in metrics
    )
    sections = [
        f"<h1>{esc(title)}</h1>",
        f"<p>Split <b>{esc(str(metrics.get('split', '?')))}</b> · model "
        f"<code>{esc(str(metrics.get('model_fingerprint', '?')))}</code></p>",
        f"<div class='cards'>{cards}</div>",
        "<p class='note'>R@K: share of queries whose own turtle is among the K most similar gallery photos. "
        "mAP: how high all of its photos rank. Queries whose turtle has no gallery photo are not counted "
        "here.</p>",
        "<h2>Counts</h2>" + _kv_table({k: metrics[k] for k in COUNTS if k in metrics}),
    ]
    if metrics.get("open_set"):
        sections.append("<h2>Open set (new individuals)</h2>" + _kv_table(metrics["open_set"]))
    if metrics.get("extra"):
        sections.append("<h2>Further figures</h2>" + _kv_table(metrics["extra"]))
    if metrics.get("timings_s"):
        sections.append("<h2>Timings</h2>" + _kv_table(metrics["timings_s"], unit=" s"))
    if metrics.get("dataset_fingerprint"):
        sections.append("<h2>Dataset</h2>" + _kv_table(metrics["dataset_fingerprint"]))
    if pictures:
        figures = "".join(
            f"<figure><a href='{_href(p, out_dir)}'><img src='{_href(p, out_dir)}' loading='lazy' "
            f"alt='{esc(Path(p).stem)}'></a><figcaption>{esc(Path(p).name)}</figcaption></figure>"
            for p in pictures
        )
        sections.append(f"<h2>Pictures</h2>{figures}")
    sections.append("<h2>Per identity</h2>" + _per_identity_table(metrics.get("per_identity") or {}))

    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
