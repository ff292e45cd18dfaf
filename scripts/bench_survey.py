#!/usr/bin/env python
"""Survey benchmark: the real sample's later encounters as one field card, end to end (docs/survey.md).

    python scripts/bench_survey.py --data ../shared/data/seaturtleid2022-dev      (make bench-survey)

What a field team would do, with the dataset's labels kept aside to score it:

* the card: the ``split_closed == valid`` photos copied into one flat folder with neutral names
  (``card/0001.jpg`` …, in capture order; the identity folders are dropped), each with its capture time from the
  metadata's ``timestamp`` written into the file as EXIF ``DateTimeOriginal`` and as the file time. A timestamp of
  ``00:00:00`` means the time is unknown: such a photo gets no EXIF time, and its file time is its date at
  midnight (the date is all that is known), so the survey reads it from the file time;
* the catalogue: the ``train`` photos, indexed as a user would (``wildtrack index build``, default ``best``
  matching) with a model trained by ``scripts/bench_train.py`` (or ``--artifacts``) and exported to ONNX;
* one ``run_survey`` of the card against it: encounter grouping (pairwise precision/recall of "same encounter"
  against identity+date), encounters named right, per-photo R@1, confident verdicts, photos per second, cards to
  review;
* the same card against a catalogue without two turtles (``--held-out``, default: the two with the most ``valid``
  photos among those seen on two or more dates): are their encounters called new, and clustered together?
* the living catalogue: the card's encounters (identity+date) replayed in date order, each as its own survey
  against ``train`` plus every encounter already reviewed (the true identity stands in for the reviewer: accept, or
  rename to the truth) and enrolled with ``apply_survey``; against the frozen catalogue (same replay, nothing
  enrolled).

Every step writes its result under ``--work``; ``--reuse`` keeps the steps already done. The photos and anything
derived from them stay under ``--work`` (never in the repository).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
UNKNOWN_TIME = "00:00:00"  # the metadata's way of saying "time not recorded"
SECTION = "## Benchmark: the real sample as a field card (`make bench-survey`)"  # this script's part of the page


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/seaturtleid2022-dev"))
    p.add_argument("--work", type=Path, default=Path("bench_out/survey"),
                   help="card, catalogues, indexes, survey folders and per-step JSON")
    p.add_argument("--doc", type=Path, default=Path("docs/survey.md"))
    p.add_argument("--artifacts", type=Path, default=None,
                   help="a trained model folder to use (default: train one into WORK/model with bench_train.py)")
    p.add_argument("--loss", default=None, help="loss of the trained model (default: TrainConfig's)")
    p.add_argument("--budget-min", type=float, default=20.0, help="training time limit")
    p.add_argument("--held-out", nargs=2, default=None, metavar="ID",
                   help="the two turtles left out of the second catalogue (default: chosen as described above)")
    p.add_argument("--reuse", action="store_true", help="keep steps whose results already exist")
    p.add_argument("--speed-photos", type=int, default=300,
                   help="time a card of this many photos (the real card's, repeated); 0 skips it")
    p.add_argument("--prepare-only", action="store_true",
                   help="stop after the model, the card and the two indexes")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- inputs: metadata, card, catalogues ------------------------------------------------------------------------

def read_metadata(data: Path) -> list[dict[str, str]]:
    with (data / "metadata_splits.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def choose_held_out(valid: list[dict[str, str]], train_ids: set[str]) -> list[str]:
    """The two catalogued turtles with the most card photos, preferring those met on two or more dates (so the
    clustering of one new turtle's encounters is tested)."""
    dates: dict[str, set[str]] = defaultdict(set)
    photos: Counter[str] = Counter()
    for r in valid:
        dates[r["identity"]].add(r["date"])
        photos[r["identity"]] += 1
    ranked = sorted((i for i in photos if i in train_ids), key=lambda i: (-(len(dates[i]) >= 2), -photos[i], i))
    return ranked[:2]


def exif_with_time(when: dt.datetime) -> bytes:
    """An EXIF APP1 payload holding only ``DateTimeOriginal`` (what a camera writes)."""
    from PIL import Image

    from wildtrack.images import DATETIME_ORIGINAL, EXIF_IFD

    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = when.strftime("%Y:%m:%d %H:%M:%S")
    return exif.tobytes()


def copy_with_exif(src: Path, dst: Path, when: dt.datetime | None) -> None:
    """Copy a JPEG byte for byte, inserting an EXIF segment after SOI when ``when`` is given (no re-encoding: the
    pixels the survey sees are the dataset's)."""
    data = src.read_bytes()
    if when is not None:
        if data[:2] != b"\xff\xd8":
            raise SystemExit(f"{src} is not a JPEG: cannot write its capture time as EXIF")
        payload = exif_with_time(when)
        if not payload.startswith(b"Exif\x00\x00"):
            payload = b"Exif\x00\x00" + payload
        data = data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]
    dst.write_bytes(data)


def prepare_card(data: Path, valid: list[dict[str, str]], card: Path, truth_file: Path, reuse: bool
                 ) -> dict[str, dict[str, str]]:
    """The field card (flat, neutral names, capture times in the files) and its answer key."""
    if reuse and truth_file.exists() and card.is_dir():
        log(f"reusing the card {card}")
        return read_json(truth_file)
    if card.exists():
        shutil.rmtree(card)
    card.mkdir(parents=True)
    ordered = sorted(valid, key=lambda r: (r["timestamp"], r["file_name"]))
    truth: dict[str, dict[str, str]] = {}
    for n, r in enumerate(ordered, start=1):
        name = f"{n:04d}.jpg"
        stamp = dt.datetime.fromisoformat(r["timestamp"])
        known = not r["timestamp"].endswith(UNKNOWN_TIME)
        copy_with_exif(data / r["file_name"], card / name, stamp if known else None)
        file_time = stamp if known else dt.datetime.combine(stamp.date(), dt.time())
        os.utime(card / name, (file_time.timestamp(), file_time.timestamp()))
        truth[name] = {"identity": r["identity"], "date": r["date"], "timestamp": r["timestamp"],
                       "time_known": "yes" if known else "no", "source": r["file_name"]}
    write_json(truth_file, truth)
    log(f"card: {len(truth)} photos in {card} ({sum(v['time_known'] == 'no' for v in truth.values())} with the "
        "date only)")
    return truth


def prepare_big_card(data: Path, truth: dict[str, dict[str, str]], card: Path, photos: int, reuse: bool) -> Path:
    """A card of ``photos`` files for the speed row: the real card's photos again and again, each round a year
    later (a new EXIF time, so no file repeats another's bytes and no encounter spans two rounds)."""
    if reuse and card.is_dir() and len(list(card.iterdir())) == photos:
        return card
    if card.exists():
        shutil.rmtree(card)
    card.mkdir(parents=True)
    names = sorted(truth)
    for k in range(photos):
        name, round_ = names[k % len(names)], k // len(names)
        stamp = dt.datetime.fromisoformat(truth[name]["timestamp"]) + dt.timedelta(days=365 * round_)
        copy_with_exif(data / truth[name]["source"], card / f"{k + 1:04d}.jpg", stamp)
    log(f"speed card: {photos} photos in {card}")
    return card


def prepare_catalogue(data: Path, rows: list[dict[str, str]], folder: Path, reuse: bool) -> Path:
    """A catalogue folder in the dataset's own layout (``images/<id>/…`` + ``metadata_splits.csv``) holding only
    ``rows``, photos copied (not linked: the index keeps paths relative to its data root)."""
    meta = folder / "metadata_splits.csv"
    if reuse and meta.exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    for r in rows:
        dst = folder / r["file_name"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data / r["file_name"], dst)
    with meta.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log(f"catalogue: {len(rows)} photos of {len({r['identity'] for r in rows})} turtles in {folder}")
    return folder


def build_index(py: str, catalogue: Path, artifacts: Path, index_dir: Path, report: Path, reuse: bool
                ) -> dict[str, Any]:
    """``wildtrack index build`` with its defaults, as a user runs it; the time and its summary kept in JSON."""
    if reuse and report.exists():
        log(f"reusing {index_dir}")
        return read_json(report)
    cmd = [py, "-m", "wildtrack", "index", "build", "--data", str(catalogue), "--artifacts", str(artifacts),
           "--out", str(index_dir)]
    log("$ " + " ".join(cmd))
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = [line for line in done.stdout.splitlines() if line.strip()][-6:]
    print("\n".join(tail), flush=True)
    result = {"command": " ".join(cmd), "seconds": round(seconds, 1), "summary": tail}
    write_json(report, result)
    return result


def ensure_model(args: argparse.Namespace, py: str) -> tuple[Path, dict[str, Any]]:
    """The model: ``--artifacts``, or one trained by bench_train.py into WORK/model; exported to ONNX."""
    from wildtrack.config import TrainConfig
    from wildtrack.model.export import onnx_export_status

    train_json = args.work / "train.json"
    if args.artifacts is not None:
        model_dir = args.artifacts
        train = read_json(train_json) if train_json.exists() else {}
    else:
        model_dir = args.work / "model"
        loss = args.loss or TrainConfig().loss
        if args.reuse and train_json.exists() and (model_dir / "model.keras").exists():
            log(f"reusing the model {model_dir}")
        else:
            cmd = [py, str(HERE / "bench_train.py"), "--data", str(args.data), "--set", f"loss={loss}",
                   "--artifacts", str(model_dir), "--out", str(train_json), "--no-anchor",
                   "--budget-min", str(args.budget_min)]
            log("$ " + " ".join(cmd))
            subprocess.run(cmd, check=True)
        train = read_json(train_json)
    if not onnx_export_status(model_dir)[0]:  # the fast backend, as `wildtrack export` gives users
        subprocess.run([py, "-m", "wildtrack", "export", "--artifacts", str(model_dir)], check=True)
    return model_dir, train


# --- running surveys -------------------------------------------------------------------------------------------

def survey_once(photos: Path, index_dir: Path, artifacts: Path, out: Path) -> float:
    """One ``run_survey`` with the default settings, from scratch; its wall seconds."""
    from wildtrack.survey.run import SurveySettings, run_survey

    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    run_survey(photos, index_dir, artifacts, out, settings=SurveySettings(), say=log)
    return time.perf_counter() - start


def load_result(out: Path) -> dict[str, Any]:
    from wildtrack.survey.files import load_survey

    return load_survey(out)


# --- scoring ---------------------------------------------------------------------------------------------------

def majority(identities: Iterable[str]) -> str:
    counts = Counter(identities)
    return max(sorted(counts), key=counts.__getitem__)


def is_new(e: dict[str, Any]) -> bool:
    return bool(e.get("new")) or str(e.get("proposed_identity") or "").startswith("new-")


def photo_truth(survey: dict[str, Any], truth: Callable[[str], dict[str, str]]) -> dict[str, dict[str, str]]:
    return {p["photo"]: truth(p["photo"]) for p in survey["photos"]}


def grouping_scores(survey: dict[str, Any], truth: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Pairwise "same encounter" precision/recall over all the card's photos; a photo in no encounter (unusable)
    is alone, so it costs recall."""
    photos = [p["photo"] for p in survey["photos"]]
    group = {p["photo"]: p.get("encounter") or f"none:{p['photo']}" for p in survey["photos"]}
    tp = fp = fn = 0
    for i, a in enumerate(photos):
        for b in photos[i + 1:]:
            same_true = (truth[a]["identity"], truth[a]["date"]) == (truth[b]["identity"], truth[b]["date"])
            same_pred = group[a] == group[b]
            tp += same_true and same_pred
            fp += same_pred and not same_true
            fn += same_true and not same_pred
    true_encounters = {(t["identity"], t["date"]) for t in truth.values()}
    mixed = [e["encounter"] for e in survey["encounters"]
             if len({(truth[p]["identity"], truth[p]["date"]) for p in e["photos"]}) > 1]
    split = {k: len({group[p] for p in photos if (truth[p]["identity"], truth[p]["date"]) == k})
             for k in true_encounters}
    why = {f"{k[0]} {k[1]}": split_cause([truth[p] for p in photos if (truth[p]["identity"], truth[p]["date"]) == k],
                                         survey["settings"]["gap_s"])
           for k, v in split.items() if v > 1}
    return {"pairs_true": tp + fn, "pairs_found": tp + fp, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0, "true_encounters": len(true_encounters),
            "found_encounters": len(survey["encounters"]), "mixed_encounters": mixed,
            "split_true_encounters": {f"{k[0]} {k[1]}": v for k, v in sorted(split.items()) if v > 1},
            "split_causes": why,
            "status": dict(Counter(p["status"] for p in survey["photos"]))}


def split_cause(members: list[dict[str, str]], gap_s: int) -> str:
    """Why a true encounter may have been cut: photos without a known time, a pause longer than the gap, or
    neither (then the appearance split did it)."""
    causes = []
    if any(m["time_known"] == "no" for m in members):
        causes.append("photos with the date only")
    times = sorted(dt.datetime.fromisoformat(m["timestamp"]) for m in members if m["time_known"] == "yes")
    pauses = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    if pauses and max(pauses) > gap_s:
        causes.append(f"a {max(pauses) / 60:.0f}-minute pause")
    return " and ".join(causes) or f"appearance, all within {(times[-1] - times[0]).total_seconds():.0f} s"


def naming_scores(survey: dict[str, Any], truth: dict[str, dict[str, str]], catalogued: set[str]) -> dict[str, Any]:
    """Encounters named right (proposal = the identity of most of its photos; a turtle the catalogue lacks is
    named right when called new), per-photo R@1 over photos of catalogued turtles, confident verdicts."""
    enc_rows = []
    for e in survey["encounters"]:
        true_id = majority(truth[p]["identity"] for p in e["photos"])
        proposed = e.get("proposed_identity") or ""
        right = is_new(e) if true_id not in catalogued else (proposed == true_id and not is_new(e))
        enc_rows.append({"encounter": e["encounter"], "truth": true_id, "proposed": proposed,
                         "verdict": e.get("verdict"), "new": is_new(e), "right": right, "photos": len(e["photos"]),
                         "photo_list": list(e["photos"]), "score": e.get("score")})
    by_photo = {p: r for r in enc_rows for p in r["photo_list"]}
    known = [p["photo"] for p in survey["photos"] if truth[p["photo"]]["identity"] in catalogued]
    r1 = [by_photo.get(p) is not None and by_photo[p]["proposed"] == truth[p]["identity"] for p in known]
    confident = [r for r in enc_rows if r["verdict"] == "confident"]
    conf_photos = [p for r in confident for p in r["photo_list"]]
    conf_right = [p for p in conf_photos if by_photo[p]["proposed"] == truth[p]["identity"]]
    all_photos = len(survey["photos"])
    return {
        "encounters": len(enc_rows), "encounters_right": sum(r["right"] for r in enc_rows),
        "known_photos": len(known), "photo_r1": sum(r1) / len(known) if known else None,
        "confident_encounters": len(confident), "confident_encounters_right": sum(r["right"] for r in confident),
        "confident_photos": len(conf_photos), "confident_photos_right": len(conf_right),
        "photo_coverage": len(conf_photos) / all_photos if all_photos else 0.0,
        "photo_precision": len(conf_right) / len(conf_photos) if conf_photos else None,
        "review": sum(r["verdict"] != "confident" for r in enc_rows),
        "rows": [{k: v for k, v in r.items() if k != "photo_list"} for r in enc_rows],
    }


def held_out_scores(survey: dict[str, Any], truth: dict[str, dict[str, str]], held_out: list[str]
                    ) -> dict[str, Any]:
    """Per held-out turtle: its encounters (by majority), how many called new, their provisional ids, and whether
    other turtles' encounters share them."""
    provisional = {e["encounter"]: str(e.get("proposed_identity") or "") for e in survey["encounters"] if is_new(e)}
    owner = {e["encounter"]: majority(truth[p]["identity"] for p in e["photos"]) for e in survey["encounters"]}
    result = {}
    for h in held_out:
        mine = [e for e in survey["encounters"] if owner[e["encounter"]] == h]
        ids = sorted({provisional[e["encounter"]] for e in mine if e["encounter"] in provisional})
        others = sorted(k for k, v in provisional.items() if v in ids and owner[k] != h)
        true_dates = sorted({t["date"] for t in truth.values() if t["identity"] == h})
        result[h] = {"true_encounters": len(true_dates), "photos": sum(t["identity"] == h for t in truth.values()),
                     "encounters": len(mine), "called_new": sum(e["encounter"] in provisional for e in mine),
                     "confident": sum(e.get("verdict") == "confident" for e in mine),  # necessarily a wrong name
                     "provisional_ids": ids, "shared_with_others": others,
                     "named_as": sorted({str(e.get("proposed_identity")) for e in mine
                                         if e["encounter"] not in provisional})}
    catalogued_called_new = sorted(k for k in provisional if owner[k] not in held_out)
    return {"turtles": result, "other_encounters_called_new": catalogued_called_new,
            "encounters": len(survey["encounters"]),
            "held_out_encounters": sum(owner[e["encounter"]] in held_out for e in survey["encounters"]),
            "new_groups": dict(Counter(provisional.values()))}


# --- the living catalogue --------------------------------------------------------------------------------------

def replay_cards(truth: dict[str, dict[str, str]], card: Path, folder: Path) -> list[tuple[str, Path]]:
    """One small card per true encounter (identity+date), in date order, its photos in one sub-folder so the
    survey takes them as one encounter (the replay measures naming, not grouping)."""
    encounters: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, t in sorted(truth.items()):
        encounters[(t["identity"], t["date"])].append(name)
    order = sorted(encounters, key=lambda k: (min(truth[n]["timestamp"] for n in encounters[k]), k))
    cards = []
    for n, key in enumerate(order, start=1):
        label = f"R{n:02d}"
        sub = folder / label / label
        sub.mkdir(parents=True, exist_ok=True)
        for name in encounters[key]:
            if not (sub / name).exists():
                shutil.copy2(card / name, sub / name)
        cards.append((label, folder / label))
    return cards


def review_as_truth(survey_dir: Path, survey: dict[str, Any], truth_of: Callable[[str], str]) -> Counter[str]:
    """The reviewer: every encounter accepted when its proposal is its turtle, else renamed to it."""
    from wildtrack.survey.decisions import ACCEPT, RENAME, read_decisions, write_decisions

    rows, done = [], Counter()
    for row in read_decisions(survey_dir, survey):
        true_id = majority(truth_of(p) for p in row.photos)
        if row.proposed_identity == true_id:
            rows.append(replace(row, decision=ACCEPT, final_identity=true_id))
            done["accept"] += 1
        else:
            rows.append(replace(row, decision=RENAME, final_identity=true_id))
            done["rename"] += 1
    write_decisions(survey_dir, rows)
    return done


def replay(truth: dict[str, dict[str, str]], card: Path, work: Path, index_dir: Path, artifacts: Path,
           catalogued: set[str], living: bool, out_json: Path, reuse: bool) -> dict[str, Any]:
    """The card's encounters one survey at a time, against a frozen catalogue or a living copy of it."""
    if reuse and out_json.exists():
        log(f"reusing {out_json}")
        return read_json(out_json)
    kind = "living" if living else "frozen"
    base = work / "replay" / kind
    if base.exists():
        shutil.rmtree(base)
    cards = replay_cards(truth, card, work / "replay" / "cards")
    index = index_dir
    if living:  # a copy: the train index stays as built for the other runs
        index = base / "index"
        shutil.copytree(index_dir, index)
    merged_photos: list[dict[str, Any]] = []
    merged_encounters: list[dict[str, Any]] = []
    seen = set(catalogued)
    steps = []
    start = time.perf_counter()
    for label, photos in cards:
        out = base / label
        seconds = survey_once(photos, index, artifacts, out)
        survey = load_result(out)
        prefix = f"{label}/"

        def key(p: str, prefix: str = prefix) -> str:
            return p if p.startswith(prefix) else prefix + p
        for p in survey["photos"]:
            merged_photos.append({**p, "photo": key(p["photo"]),
                                  "encounter": f"{label}:{p['encounter']}" if p.get("encounter") else None})
        for e in survey["encounters"]:
            true_id = majority(truth[Path(p).name]["identity"] for p in e["photos"])
            merged_encounters.append({**e, "encounter": f"{label}:{e['encounter']}",
                                      "photos": [key(p) for p in e["photos"]], "_catalogued": true_id in seen})
        step_info: dict[str, Any] = {"card": label, "photos": len(survey["photos"]), "seconds": round(seconds, 1),
                                     "proposed": [e.get("proposed_identity") for e in survey["encounters"]],
                                     "verdicts": [e.get("verdict") for e in survey["encounters"]]}
        if living:
            step_info["review"] = dict(review_as_truth(out, survey, lambda p: truth[Path(p).name]["identity"]))
            from wildtrack.survey.apply import apply_survey

            report = apply_survey(out, index, artifacts)
            step_info["applied"] = {"enrolled": {k: len(v) for k, v in report.enrolled.items()},
                                    "new_identities": report.new_identities,
                                    "generation_after": report.generation_after}
            seen |= {truth[Path(p["photo"]).name]["identity"] for p in survey["photos"]}
        steps.append(step_info)
        log(f"{kind} {label}: {step_info}")
    # a turtle enrolled by an earlier encounter counts as catalogued for the later ones
    merged = {"photos": merged_photos, "encounters": [{k: v for k, v in e.items() if k != "_catalogued"}
                                                      for e in merged_encounters]}
    flat_truth = {p["photo"]: truth[Path(p["photo"]).name] for p in merged_photos}
    catalogued_at = {e["encounter"]: e["_catalogued"] for e in merged_encounters}
    scores = naming_scores(merged, flat_truth, catalogued)
    if living:  # encounters of a turtle first met earlier in the replay are judged as catalogued ones
        scores = naming_scores_living(merged, flat_truth, catalogued_at, catalogued)
    result = {"kind": kind, "cards": len(cards), "seconds": round(time.perf_counter() - start, 1), "steps": steps,
              "scores": scores}
    write_json(out_json, result)
    return result


def naming_scores_living(merged: dict[str, Any], truth: dict[str, dict[str, str]], catalogued_at: dict[str, bool],
                         catalogued: set[str]) -> dict[str, Any]:
    """As :func:`naming_scores`, but an encounter's turtle counts as catalogued when it was in ``train`` or
    enrolled by an earlier encounter of the replay."""
    scores = naming_scores(merged, truth, catalogued)
    for row in scores["rows"]:
        if catalogued_at.get(row["encounter"]) and row["truth"] not in catalogued:
            row["right"] = row["proposed"] == row["truth"] and not row["new"]
    scores["encounters_right"] = sum(r["right"] for r in scores["rows"])
    scores["confident_encounters_right"] = sum(r["right"] for r in scores["rows"] if r["verdict"] == "confident")
    return scores


# --- the table -------------------------------------------------------------------------------------------------

def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def write_doc(args: argparse.Namespace, ctx: dict[str, Any]) -> list[str]:
    g, n, h = ctx["grouping"], ctx["naming"], ctx["held_out"]
    fz, lv = ctx["frozen"]["scores"], ctx["living"]["scores"]
    main_run = ctx["main_run"]
    train = ctx["train"]
    photos = main_run["photos"]
    held = ", ".join(ctx["held_out_ids"])
    fresh = [r for r in n["rows"] if r["truth"] in ctx["uncatalogued"]]
    changed = [(a, b) for a, b in zip(fz["rows"], lv["rows"], strict=True)
               if a["encounter"] == b["encounter"] and a["score"] != b["score"]]

    def conf(s: dict[str, Any]) -> str:
        return (f"{pct(s['photo_precision'])} ({s['confident_photos_right']}/{s['confident_photos']} photos; "
                f"{s['confident_encounters_right']}/{s['confident_encounters']} encounters) | "
                f"{pct(s['photo_coverage'])} ({s['confident_encounters']}/{s['encounters']} encounters)")

    lines = [
        "| measure | result | notes |",
        "|---|---|---|",
        f"| encounter grouping: pairwise precision / recall of \"same encounter\" | {pct(g['precision'])} / "
        f"{pct(g['recall'])} | {g['found_encounters']} encounters found for {g['true_encounters']} true ones "
        f"(identity+date); {g['pairs_true']} true same-encounter pairs |",
        f"| encounters named right | {n['encounters_right']} of {n['encounters']} | proposal = the turtle of most of "
        "its photos (a turtle not in `train` is right when called new) |",
        f"| per-photo R@1 (the photo's encounter names its turtle) | {pct(n['photo_r1'])} | {n['known_photos']} "
        "photos of turtles in `train` |",
        f"| confident verdicts: precision / photo coverage | {conf(n).replace(' | ', ' / ', 1)} | second operating "
        "point |",
        f"| encounters of turtles not in `train` ({', '.join(ctx['uncatalogued']) or 'none'}) called new | "
        f"{sum(r['new'] for r in fresh)} of {len(fresh)} | |",
        f"| cards to review at the default operating point | {n['review']} of {n['encounters']} | everything not "
        "confident |",
        f"| photos per second, end to end (run_survey on the card) | {photos / main_run['seconds']:.2f} | {photos} "
        f"photos in {main_run['seconds']:.0f} s on {os.cpu_count()} cores, from a cold start"
        + (" (1-min load average {} at the start, {} at the end: the cores were shared)".format(
            *main_run["load_average"]) if "load_average" in main_run else "") + " |",
    ]
    speed = main_run.get("speed")
    if speed:
        lines.append(f"| a {speed['photos']}-photo card, end to end | {speed['seconds'] / 60:.1f} min "
                    f"({speed['photos'] / speed['seconds']:.2f} photos/s) | the card's {len(ctx['truth'])} photos "
                    "repeated, each round a year later (a new EXIF time: no two files alike), default settings;"
                    f" load average {speed['load_average'][0]} at the start, "
                    f"{speed['load_average'][1]} at the end |")
    for tid, r in h["turtles"].items():
        ids = ", ".join(r["provisional_ids"]) or "none"
        lines.append(
            f"| new turtle {tid} (held out): encounters called new, in one provisional id | {r['called_new']} of "
            f"{r['encounters']} called new; {'yes' if len(r['provisional_ids']) == 1 else 'no'} ({ids}) | "
            f"{r['photos']} photos, {r['true_encounters']} true encounters"
            + (f"; the others named {', '.join(r['named_as'])} ({r.get('confident', 0)} confident)"
               if r["named_as"] else "")
            + (f"; its id shared with {', '.join(r['shared_with_others'])}" if r["shared_with_others"] else "")
            + " |")
    lines.append(f"| catalogued turtles' encounters called new (two-turtles-out catalogue) | "
                 f"{len(h['other_encounters_called_new'])} of {h['encounters'] - h['held_out_encounters']} | "
                 f"that run found {h['encounters']} encounters (grouping reads the catalogue's names) |")
    lines += [
        "",
        "| living catalogue (card's encounters replayed in date order) | per-photo R@1 | encounters named right | "
        "confident precision | confident coverage |",
        "|---|---|---|---|---|",
        f"| frozen: `train` only, nothing enrolled | {pct(fz['photo_r1'])} | {fz['encounters_right']} of "
        f"{fz['encounters']} | {conf(fz)} |",
        f"| living: each reviewed encounter enrolled by `apply_survey` | {pct(lv['photo_r1'])} | "
        f"{lv['encounters_right']} of {lv['encounters']} | {conf(lv)} |",
    ]
    unknown = sum(t["time_known"] == "no" for t in ctx["truth"].values())
    train_note = (f"a {args.budget_min:g}-minute budget; it ran {train['train_seconds'] / 60:.1f} min "
                  f"({train.get('epochs_run', '?')} epochs, `wildtrack train`'s default; best epoch "
                  f"{train.get('best_epoch', '?')})"
                  if train.get("train_seconds") else "given with --artifacts")
    cmd = "python scripts/bench_survey.py " + " ".join(ctx["argv"])
    doc = [
        SECTION,
        "",
        f"Produced by `{cmd}` (what `make bench-survey` runs) on {dt.date.today().isoformat()}, "
        f"{os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}. Do not edit by hand: rerun the command.",
        "",
        f"* The card: the {photos} `split_closed == valid` photos in one flat folder, renamed `0001.jpg`… in capture "
        "order (the identity folders dropped), each with the metadata's capture time written as EXIF "
        f"`DateTimeOriginal` and as the file time. {unknown} photos have the time `00:00:00` (unknown): they get "
        "no EXIF time and their date at midnight as file time, so the survey dates them from the file and they "
        "fall into their own time group.",
        f"* The catalogue: the {ctx['catalogue_photos']} `train` photos, `wildtrack index build` with its defaults "
        f"(`best` matching; {ctx['index']['seconds'] / 60:.1f} min to build). The model: `scripts/bench_train.py` "
        f"(loss {ctx['loss']}), {train_note}, exported to ONNX.",
        f"* New turtles: the same card against a second index without {held} (all their `train` photos left out; "
        "the turtles with the most card photos among those met on two dates).",
        "* Confident: the encounter's score passes the second operating point (≤ 1 % false accepts, fitted on the "
        "catalogue); precision and coverage are counted in photos (encounters in brackets).",
        "",
        *lines,
        "",
        f"* Living catalogue: the card's {ctx['living']['cards']} encounters (identity+date), one survey each in date "
        "order (each encounter's photos in one sub-folder, so grouping is not measured there), against a copy of "
        "the `train` index; after each, decisions.csv says accept when the proposal is the turtle and rename to "
        "the turtle otherwise (the truth stands in for the reviewer), and `apply_survey` enrols the photos. "
        "Frozen: the same surveys against `train` alone. An encounter of a turtle enrolled earlier in the replay "
        "counts as catalogued.",
        f"* Turtles met again within the replay: {', '.join(ctx['met_again']) or 'none'}. Encounters whose score "
        "changed once the earlier ones were enrolled: "
        + (", ".join(f"{a['encounter'].split(':')[0]} ({a['truth']}) {a['score']:.3f} → {b['score']:.3f}"
                     for a, b in changed) or "none") + ".",
        f"* What grouping costs: the replay takes the true encounters as given; its frozen row (R@1 "
        f"{pct(fz['photo_r1'])}, {fz['encounters_right']} of {fz['encounters']} named right) against the card's "
        f"own grouping above (R@1 {pct(n['photo_r1'])}).",
    ]
    if g["mixed_encounters"] or g["split_true_encounters"]:
        doc.append(f"* Grouping: {len(g['mixed_encounters'])} found encounter(s) mix turtles or days "
                   f"({', '.join(g['mixed_encounters']) or 'none'}); true encounters split: "
                   + (", ".join(f"{k} into {v} ({g['split_causes'][k]})"
                                for k, v in g["split_true_encounters"].items()) or "none") + ".")
    if g["status"].get("ok", 0) != photos:
        doc.append(f"* Photos by status: {json.dumps(g['status'], sort_keys=True)}.")
    doc += ["", f"Raw JSON for every row: `{args.work}/`.", ""]
    replace_section(args.doc, "\n".join(doc))
    return lines


def replace_section(path: Path, section: str) -> None:
    """Write ``section`` (starting with :data:`SECTION`) into ``path`` in place of its previous version (up to
    the next ``## `` heading), or at the end; the rest of the page (the survey docs) is left as it is."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
    else:
        head, tail = (old.rstrip("\n") + "\n\n") if old else "", ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + section.rstrip("\n") + "\n" + ("\n" + tail if tail else ""), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    if not args.data.is_dir():
        sys.exit(f"no data at {args.data}: pass --data (the SeaTurtleID2022 sample or the full dataset)")
    args.work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    meta = read_metadata(args.data)
    train_rows = [r for r in meta if r["split_closed"] == "train"]
    valid_rows = [r for r in meta if r["split_closed"] == "valid"]
    train_ids = {r["identity"] for r in train_rows}
    held_out = list(args.held_out or choose_held_out(valid_rows, train_ids))
    log(f"held out of the second catalogue: {', '.join(held_out)}")

    artifacts, train = ensure_model(args, py)
    card = args.work / "card"
    truth = prepare_card(args.data, valid_rows, card, args.work / "card_truth.json", args.reuse)
    cat_train = prepare_catalogue(args.data, train_rows, args.work / "catalogue_train", args.reuse)
    cat_held = prepare_catalogue(args.data, [r for r in train_rows if r["identity"] not in held_out],
                                 args.work / "catalogue_held_out", args.reuse)
    idx_train, idx_held = args.work / "index_train", args.work / "index_held_out"
    index_train = build_index(py, cat_train, artifacts, idx_train, args.work / "index_train.json", args.reuse)
    build_index(py, cat_held, artifacts, idx_held, args.work / "index_held_out.json", args.reuse)
    if args.prepare_only:
        return 0

    main_json = args.work / "main_run.json"
    if args.reuse and main_json.exists():
        main_run = read_json(main_json)
    else:
        log("surveying the card against train")
        load_before = os.getloadavg()[0]
        seconds = survey_once(card, idx_train, artifacts, args.work / "survey_train")
        main_run = {"seconds": round(seconds, 2), "photos": len(truth),
                    "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
        write_json(main_json, main_run)
    speed_json = args.work / f"speed_{args.speed_photos}.json"
    if args.speed_photos and not (args.reuse and speed_json.exists()):
        big = prepare_big_card(args.data, truth, args.work / f"card{args.speed_photos}", args.speed_photos,
                               args.reuse)
        log(f"surveying the {args.speed_photos}-photo card against train (speed)")
        load_before = os.getloadavg()[0]
        seconds = survey_once(big, idx_train, artifacts, args.work / f"survey_{args.speed_photos}")
        write_json(speed_json, {"seconds": round(seconds, 2), "photos": args.speed_photos,
                                "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]})
    main_run["speed"] = read_json(speed_json) if args.speed_photos and speed_json.exists() else None
    held_json = args.work / "held_out_run.json"
    if not (args.reuse and held_json.exists()):
        log(f"surveying the card against train without {', '.join(held_out)}")
        write_json(held_json, {"seconds": round(survey_once(card, idx_held, artifacts,
                                                            args.work / "survey_held_out"), 2)})
    survey = load_result(args.work / "survey_train")
    card_truth = {p["photo"]: truth[Path(p["photo"]).name] for p in survey["photos"]}
    grouping = grouping_scores(survey, card_truth)
    naming = naming_scores(survey, card_truth, train_ids)
    held_survey = load_result(args.work / "survey_held_out")
    held_truth = {p["photo"]: truth[Path(p["photo"]).name] for p in held_survey["photos"]}
    held = held_out_scores(held_survey, held_truth, held_out)
    write_json(args.work / "card_scores.json", {"grouping": grouping, "naming": naming, "held_out": held,
                                                "held_out_ids": held_out, "main_run": main_run})

    frozen = replay(truth, card, args.work, idx_train, artifacts, train_ids, False, args.work / "frozen.json",
                    args.reuse)
    living = replay(truth, card, args.work, idx_train, artifacts, train_ids, True, args.work / "living.json",
                    args.reuse)
    from wildtrack.config import TrainConfig
    ctx = {"grouping": grouping, "naming": naming, "held_out": held, "held_out_ids": held_out, "frozen": frozen,
           "living": living, "main_run": main_run, "train": train, "truth": truth, "index": index_train,
           "catalogue_photos": len(train_rows),
           "uncatalogued": sorted({r["identity"] for r in valid_rows} - train_ids),
           "met_again": sorted(i for i, k in Counter(r["identity"] for r in
                                                     {(v["identity"], v["date"]): v for v in valid_rows}.values()
                                                     ).items() if k > 1),
           "loss": args.loss or TrainConfig().loss, "argv": raw_argv}
    lines = write_doc(args, ctx)
    print("\n".join(lines))
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
