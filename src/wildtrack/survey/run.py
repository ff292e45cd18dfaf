"""``wildtrack survey run``: a card of photos → encounters named against the catalogue, new turtles clustered, and
the files a person reviews (``survey.json``, ``photos.csv``, ``decisions.csv``, match pictures, thumbnails).

Work is shared between the stages: the scan reads each photo once, reduced (readability, time, thumbnail); each
usable photo is then embedded once and its local features extracted once (each decoding the file at the size it
needs, JPEG draft mode keeping that cheap), through the job engines (:mod:`wildtrack.jobs.catalogue`, so
``--engine ray`` runs them on a cluster) into ``SURVEY/.work/``; grouping, identification and the new-turtle
clustering all read those. Each stage leaves a checkpoint in ``.work/`` (and the engines keep finished shards),
so ``resume=True`` continues a killed run where it stopped. The same photos and catalogue give the same
``survey.json``, ``photos.csv`` and ``decisions.csv``, byte for byte: nothing in them depends on the clock, the
order threads finish in, or where the run's temporary files were.

No-turtle rule: a photo on which the catalogue's local-feature extractor (on the turtle the locator finds, or
the whole frame where it finds none) keeps fewer than ``min_keypoints`` keypoints is ``no_turtle``: open water,
sand or a blurred frame has nothing to match, so it could only add noise to an encounter. A global-only
catalogue extracts no local features, and then no photo is called ``no_turtle``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wildtrack.atomic import atomic_write_bytes
from wildtrack.config import MatchingConfig
from wildtrack.data import storage
from wildtrack.embed import Embedder
from wildtrack.features import FeatureCache, LocalFeatures, Source
from wildtrack.features.store import STORE_DIR, FeatureShard, FeatureStore, StoreFeatureCache
from wildtrack.jobs.catalogue import embed_photos, extract_shards, photo_ids, store_files
from wildtrack.jobs.engines import Engine, make_engine
from wildtrack.matching.pipeline import MatchingPipeline, build_pipeline
from wildtrack.progress import Advance, announce_total, next_stage
from wildtrack.search import CatalogueSearch, Identification, open_catalogue
from wildtrack.survey import encounters as grouping
from wildtrack.survey.card import DUPLICATE, NO_TURTLE, OK, UNREADABLE, CardPhoto, card_files, scan_card
from wildtrack.survey.decisions import REVIEW, initial_decisions, read_decisions, write_decisions
from wildtrack.survey.files import PHOTOS_FILE, PICTURES_DIR, THUMBS_DIR, WORK_DIR, SurveyError, save_survey
from wildtrack.survey.identify import (
    candidate_rows,
    confident_threshold,
    encounter_verdict,
    hits_from_dicts,
    hits_to_dicts,
    named,
    photo_score,
    pooled,
    write_match_picture,
)
from wildtrack.survey.newturtles import NewTurtle, cluster_new_encounters
from wildtrack.survey.pairs import PhotoPairs
from wildtrack.survey.review import write_review
from wildtrack.visualize.report import looks_synthetic

__all__ = ["MIN_TURTLE_KEYPOINTS", "PHOTO_COLUMNS", "SurveyResult", "SurveySettings", "run_survey"]

log = logging.getLogger(__name__)

MIN_TURTLE_KEYPOINTS = 24
WINDOW_NEAREST = 24  # in a time window, each photo is matched against its nearest photos by cosine, not all
PHOTO_COLUMNS = ("photo", "encounter", "proposed_identity", "score", "status", "taken", "reason")
NO_CONFIDENT_NOTE = ("this catalogue has no confident operating point (fitted before it existed): every verdict "
                     "is to review; rebuild the index (wildtrack index build) to fit it")


@dataclass(frozen=True)
class SurveySettings:
    """What decides a run's result (recorded in ``survey.json`` and part of its ``survey_id``)."""

    gap_s: int = 600
    grouping: str = "auto"
    topk: int = 5
    pictures: int = 3
    min_keypoints: int = MIN_TURTLE_KEYPOINTS

    def __post_init__(self) -> None:
        if self.gap_s <= 0:
            raise ValueError(f"gap must be more than 0 seconds, got {self.gap_s}")
        grouping.choose_grouping([], self.grouping)  # validates the name
        if self.topk < 1 or self.pictures < 0:
            raise ValueError("topk must be at least 1 and pictures at least 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SurveyResult:
    """A finished run: its folder, ``survey.json``'s content, the stages reused from a killed run, review.html."""

    survey_dir: Path
    data: dict[str, Any]
    resumed: list[str] = field(default_factory=list)
    review: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.data["counts"])


class _SurveyFeatures(FeatureCache):
    """The catalogue pipeline's features, except the card's photos, which come from the survey's store."""

    def __init__(self, survey: StoreFeatureCache, catalogue: FeatureCache) -> None:
        super().__init__(catalogue.extractor, catalogue.root.parent, catalogue.memory_items, catalogue.projection)
        self.survey, self.catalogue = survey, catalogue

    def get(self, source: Source) -> LocalFeatures:
        if not isinstance(source, bytes | Image.Image) and self.survey.image_id(source) is not None:
            return self.survey.get(source)
        return self.catalogue.get(source)


class _Work:
    """The run's checkpoints in ``SURVEY/.work``: one JSON (or npz) file per finished stage."""

    def __init__(self, out: Path) -> None:
        self.dir = out / WORK_DIR
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self, name: str) -> Any | None:
        try:
            return json.loads((self.dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save(self, name: str, data: Any) -> None:
        atomic_write_bytes(self.dir / name, json.dumps(data, sort_keys=True).encode())


def _prepare_out(photos: Path, out: Path, resume: bool) -> None:
    if out == photos or photos in out.parents:
        raise SurveyError(f"--out {out} lies inside PHOTOS {photos}: its thumbnails would become part of the card; "
                          "choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise SurveyError(f"--out {out}: a file is in the way (a folder is needed)")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise SurveyError(f"--out {out} already holds files (an earlier survey?): continue that run with --resume, "
                          "or give another --out")
    out.mkdir(parents=True, exist_ok=True)


def _listing(photos: Path) -> list[list[Any]]:
    rows = []
    for name in card_files(photos):
        st = (photos / name).stat()
        rows.append([name, st.st_size, st.st_mtime_ns])
    return rows


def _catalogue_info(index_dir: Path, search: CatalogueSearch) -> dict[str, Any]:
    index = search.index
    root = index.data_root
    return {"index_dir": str(index_dir), "catalogue_id": index.catalogue_id, "generation": index.generation,
            "model_fingerprint": index.model_fingerprint, "images": len(index),
            "identities": len(index.identities()),
            "synthetic": bool(root is not None and not storage.is_url(root) and looks_synthetic(root))}


def _survey_id(photos: Sequence[CardPhoto], catalogue: dict[str, Any], settings: SurveySettings) -> str:
    h = hashlib.sha256()
    for digest in sorted(p.sha256 for p in photos):
        h.update(digest.encode())
    h.update(json.dumps([catalogue["catalogue_id"], catalogue["generation"], settings.to_dict()],
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


@dataclass
class _Run:
    """What the stages share, so each stage reads like one step of the pipeline rather than a list of arguments."""

    photos_root: Path
    out_dir: Path
    settings: SurveySettings
    engine: Engine
    backend: str
    resume: bool
    progress: Advance | None
    work: _Work
    result: SurveyResult
    embedder: Embedder
    search: CatalogueSearch
    artifacts: Path  # the model's folder (cluster jobs load it there)
    catalogue: dict[str, Any]
    card: list[CardPhoto] = field(default_factory=list)
    survey_id: str = ""
    vector_of: dict[str, np.ndarray] = field(default_factory=dict)
    survey_cache: StoreFeatureCache | None = None
    idents: dict[str, Identification] = field(default_factory=dict)

    @property
    def by_name(self) -> dict[str, CardPhoto]:
        """The card's photos by name, the same objects, so a stage that marks one marks the card."""
        return {p.photo: p for p in self.card}

    def usable(self) -> list[str]:
        """The photos still in play: the stages before identifying drop unreadable and empty ones."""
        return [p.photo for p in self.card if p.status == OK]

    def reused(self, stage_name: str, stage: Advance | None, total: int) -> None:
        """A stage taken from a killed run's checkpoint: say so, and fill its progress bar at once."""
        self.result.resumed.append(stage_name)
        if stage:
            announce_total(stage, total)
            stage(total)


@dataclass
class _Grouping:
    """The grouping stage's outcome, which the verdicts, the new-turtle clustering and the files all read."""

    usable: list[str]
    position: dict[str, int]
    pairs: PhotoPairs
    taken: dict[str, str | None]
    grouped_by: str
    threshold: float
    groups: list[tuple[str, list[str]]]
    by_time: set[str]  # photos joined to their encounter by capture time alone


def run_survey(photos: str | Path, index_dir: str | Path, artifacts: str | Path | Embedder, out: str | Path,
               settings: SurveySettings | None = None, *, backend: str = "auto", engine: Engine | None = None,
               resume: bool = False, progress: Advance | None = None,
               say: Callable[[str], None] | None = None) -> SurveyResult:
    """Run a survey of the card ``photos`` against the catalogue ``index_dir`` (model ``artifacts``) into ``out``.

    ``out`` must be new or empty unless ``resume`` (then the checkpoints in ``out/.work`` are reused: the card and
    the catalogue must be the ones the killed run used). ``progress`` gets one stage per step
    (:mod:`wildtrack.progress`); ``say`` one line per thing a person should know (stages reused, notes).
    ``artifacts`` may be the model already loaded (the service's), so a survey loads no second copy.
    """
    run = _open_run(photos, index_dir, artifacts, out, settings or SurveySettings(), backend=backend,
                    engine=engine, resume=resume, progress=progress)
    speak = say or (lambda _line: None)
    _scan(run)
    _embed(run)
    _local_features(run)
    _identify(run)
    grouped = _group(run)
    encounters = _verdicts(run, grouped)
    turtles = _new_turtles(run, grouped, encounters)
    _match_pictures(run, encounters)
    _files(run, grouped, encounters, len(turtles))
    for line in run.result.notes:
        speak(line)
    _review(run)
    return run.result


def _open_run(photos: str | Path, index_dir: str | Path, artifacts: str | Path | Embedder, out: str | Path,
              settings: SurveySettings, *, backend: str, engine: Engine | None, resume: bool,
              progress: Advance | None) -> _Run:
    """Check the folders and open the catalogue first, so a mistyped path fails before any work is done."""
    engine = engine or make_engine("local")
    photos_root, out_dir, index_path = Path(photos).resolve(), Path(out).resolve(), Path(index_dir).resolve()
    if not photos_root.is_dir():
        raise SurveyError(f"PHOTOS {photos}: no such folder")
    _prepare_out(photos_root, out_dir, resume)
    work = _Work(out_dir)
    result = SurveyResult(out_dir, {})
    embedder, search = open_catalogue(index_path, artifacts, backend=backend)
    artifacts_dir = Path(getattr(embedder, "artifacts", artifacts))  # the model's folder (cluster jobs load it there)
    return _Run(photos_root, out_dir, settings, engine, backend, resume, progress, work, result, embedder, search,
                artifacts_dir, _catalogue_info(index_path, search))


def _scan(run: _Run) -> None:
    """Read every file once (readability, time, thumbnail), and refuse a folder that holds another run."""
    listing = _listing(run.photos_root)
    scanned = run.work.load("scan.json") if run.resume else None
    if scanned is not None and scanned.get("listing") == listing:
        run.card = [CardPhoto.from_dict(p) for p in scanned["photos"]]
        run.reused("scanning", run.progress, len(run.card))
    else:
        run.card = scan_card(run.photos_root, run.out_dir / THUMBS_DIR, run.progress)
        run.work.save("scan.json", {"listing": listing, "photos": [p.to_dict() for p in run.card]})
    if not run.card:
        raise SurveyError(f"PHOTOS {run.photos_root} holds no image files (looked for .jpg, .jpeg, .png, .webp, "
                          ".bmp)")
    run.survey_id = _survey_id(run.card, run.catalogue, run.settings)
    run_record = run.work.load("run.json")
    if run_record is not None and run_record.get("survey_id") != run.survey_id:
        raise SurveyError(f"{run.out_dir} holds a run of other photos, another catalogue generation or other "
                          "settings; start a new survey with another --out")
    run.work.save("run.json", {"survey_id": run.survey_id})


def _embed(run: _Run) -> None:
    """Embed each readable photo once, through the engine; grouping, identifying and clustering all reuse it."""
    readable = run.usable()
    stage = next_stage(run.progress, "embedding")
    embedded = run.work.load("embeddings.json") if run.resume else None
    if embedded is not None and embedded.get("photos") == readable and (run.work.dir / "embeddings.npy").is_file():
        vectors_ok = np.load(run.work.dir / "embeddings.npy")
        ok_names, failed = embedded["ok"], embedded["failed"]
        run.reused("embedding", stage, len(readable))
    else:
        res = embed_photos(run.engine, run.embedder, run.artifacts, run.backend,
                           [run.photos_root / p for p in readable], run.work.dir, stage)
        ok_names = [readable[i] for i in res.ok]
        failed = {readable[i]: why for i, why in res.failed}
        vectors_ok = np.asarray(res.embeddings, dtype=np.float32)
        atomic_write_bytes(run.work.dir / "embeddings.npy", _npy(vectors_ok))
        run.work.save("embeddings.json", {"photos": readable, "ok": ok_names, "failed": failed})
    by_name = run.by_name
    for name, why in failed.items():
        by_name[name].status, by_name[name].reason = UNREADABLE, f"cannot be embedded ({why})"
    run.vector_of = {name: vectors_ok[n] for n, name in enumerate(ok_names)}


def _local_features(run: _Run) -> None:
    """Extract each photo's local features once into the survey's store, and call the photos with none no_turtle."""
    pipeline = run.search.pipeline
    if pipeline is None:  # a global-only catalogue: nothing to extract, no photo is no_turtle
        return
    usable = run.usable()
    stage = next_stage(run.progress, "local features")
    ids = photo_ids([run.photos_root / p for p in usable], run.photos_root)
    done = run.work.load("features.json") if run.resume else None
    if done is not None and done.get("photos") == usable:
        files = done["files"]
        run.reused("local features", stage, len(usable))
    else:
        new = extract_shards(run.engine, pipeline.extractor, list(zip(ids, [run.photos_root / p for p in usable],
                                                                      strict=True)), run.work.dir, stage)
        files = store_files(run.work.dir, pipeline.extractor, new)
        run.work.save("features.json", {"photos": usable, "files": files})
    store = FeatureStore(run.work.dir, files)
    failed_features: dict[str, str] = {}
    for name in files:
        if name.startswith(f"{STORE_DIR}/") and name.endswith(".wtfs"):
            failed_features.update(FeatureShard(run.work.dir / name).failed)
    by_name, min_keypoints = run.by_name, run.settings.min_keypoints
    for name, image_id in zip(usable, ids, strict=True):
        photo = by_name[name]
        if image_id in failed_features or image_id not in store:
            photo.status = UNREADABLE
            photo.reason = f"its local features cannot be extracted ({failed_features.get(image_id, 'missing')})"
            continue
        keypoints = len(store.raw(image_id)[0])
        if keypoints < min_keypoints:
            photo.status = NO_TURTLE
            photo.reason = (f"{keypoints} local keypoints (fewer than {min_keypoints}): nothing to "
                            "match, e.g. open water or sand")
    run.survey_cache = StoreFeatureCache(store, run.photos_root, pipeline.extractor, projection=pipeline.projection)
    run.search.pipeline = replace(pipeline, features=_SurveyFeatures(run.survey_cache, pipeline.cache))


def _identify(run: _Run) -> None:
    """Identify each usable photo once against the catalogue; the encounters pool these, never re-search."""
    usable = run.usable()
    search, stage = run.search, next_stage(run.progress, "identifying")
    announce_total(stage, len(usable))
    known = run.work.load("identified.json") if run.resume else None
    known = known if isinstance(known, dict) else {}
    fresh = 0
    for name in usable:
        if name in known:
            hits = hits_from_dicts(known[name])
            run.idents[name] = Identification(search.policy.decide(hits), hits, search.policy)
        else:
            image = run.photos_root / name if search.pipeline is not None else None
            run.idents[name] = search.identify(run.vector_of[name], image, max(run.settings.topk, 5))
            known[name] = hits_to_dicts(run.idents[name].hits)
            fresh += 1
        if stage:
            stage(1)
    if fresh:
        run.work.save("identified.json", known)
    elif usable:
        run.result.resumed.append("identifying")


def _group(run: _Run) -> _Grouping:
    """Group the photos into encounters: by folder, or by time window split where the photos look unalike."""
    usable, search, settings = run.usable(), run.search, run.settings
    stage = next_stage(run.progress, "grouping")
    announce_total(stage, len(usable))
    position = {name: n for n, name in enumerate(usable)}
    survey_cache = run.survey_cache
    pairs = PhotoPairs(np.stack([run.vector_of[n] for n in usable]) if usable else np.zeros((0, run.embedder.dim)),
                       [survey_cache.get(run.photos_root / n) for n in usable] if survey_cache is not None else None,
                       search.pipeline)
    taken = {p.photo: p.taken for p in run.card}
    grouped_by = grouping.choose_grouping(usable, settings.grouping)
    threshold = grouping.link_threshold(search.policy.photo_threshold, confident_threshold(search.policy, False))
    groups: list[tuple[str, list[str]]] = []
    by_time: set[str] = set()
    if grouped_by == grouping.FOLDERS:
        for n, members in enumerate(grouping.folder_groups(usable, taken)):
            groups.append((f"F{n + 1:03d}", members))
            if stage:
                stage(len(members))
    else:
        for n, window in enumerate(grouping.time_windows(usable, taken, settings.gap_s)):
            rows = [position[p] for p in window]
            same = pairs.within(rows, WINDOW_NEAREST) if len(rows) > 1 else np.ones((1, 1))
            parts, joined = grouping.split_window(same, [named(run.idents[p]) for p in window], threshold)
            by_time.update(window[i] for i in joined)
            for part in parts:
                groups.append((f"T{n + 1:03d}", [window[i] for i in part]))
            if stage:
                stage(len(window))
    groups.sort(key=lambda g: (min(taken[p] or "" for p in g[1]), g[1][0]))
    return _Grouping(usable, position, pairs, taken, grouped_by, threshold, groups, by_time)


def _verdicts(run: _Run, grouped: _Grouping) -> list[dict[str, Any]]:
    """Pool each encounter's photos into one verdict; a photo joined by time alone sends it to review."""
    search, taken = run.search, grouped.taken
    encounters: list[dict[str, Any]] = []
    for n, (window, members) in enumerate(grouped.groups):
        key = f"E{n + 1:03d}"
        enc = pooled(search.policy, [run.idents[p] for p in members])
        new, verdict = encounter_verdict(enc)
        unlinked = [p for p in members if p in grouped.by_time]
        if unlinked:  # a photo with no evidence may be another turtle: never enrolled without a person
            verdict = REVIEW
        times = sorted(taken[p] or "" for p in members)
        encounters.append({
            "encounter": key, "photos": members, "start": times[0] or None, "end": times[-1] or None,
            "date": times[0][:10] if times[0] else None, "window": window, "verdict": verdict, "new": new,
            "proposed_identity": None if new else enc.decision.identity, "score": _r(enc.decision.score),
            "score_kind": search.policy.score, "threshold": _r(search.policy.encounter_threshold),
            "confident_threshold": _r(confident_threshold(search.policy)),
            "candidates": candidate_rows(search, enc, members, run.settings.topk), "new_group": None,
            "joined_by_time": unlinked})
    return encounters


def _new_turtles(run: _Run, grouped: _Grouping, encounters: list[dict[str, Any]]) -> list[NewTurtle]:
    """Cluster the "new individual" encounters, so one unknown turtle seen twice is proposed as one new turtle."""
    search, usable = run.search, grouped.usable
    stage = next_stage(run.progress, "clustering new turtles")
    new_encs = [(e["encounter"], [grouped.position[p] for p in e["photos"]]) for e in encounters if e["new"]]
    announce_total(stage, len(new_encs))
    turtles = cluster_new_encounters(new_encs, grouped.pairs.best_pair, search.policy.encounter_threshold,
                                     set(search.index.identities()))
    if stage:
        stage(len(new_encs))
    enc_of = {e["encounter"]: e for e in encounters}
    for turtle in turtles:
        group = {"id": turtle.id, "encounters": turtle.encounters,
                 "evidence": [{"a": link.a, "b": link.b, "score": link.score, "inliers": link.inliers,
                               "a_photo": usable[link.a_photo], "b_photo": usable[link.b_photo],
                               "picture": f"{PICTURES_DIR}/{turtle.id}-{link.a}-{link.b}.jpg"}
                              for link in turtle.links]}
        for key in turtle.encounters:
            enc_of[key]["proposed_identity"] = turtle.id
            enc_of[key]["new_group"] = group
    return turtles


def _match_pictures(run: _Run, encounters: list[dict[str, Any]]) -> None:
    """Draw the best pair of each top candidate and of each new-turtle link, so a reviewer sees the evidence."""
    stage = next_stage(run.progress, "match pictures")
    _pictures(encounters, run.settings, run.search, run.photos_root, run.out_dir, stage)


def _files(run: _Run, grouped: _Grouping, encounters: list[dict[str, Any]], new_turtles: int) -> None:
    """Write survey.json, photos.csv and decisions.csv (keeping one a person already edited, when still valid)."""
    search, settings, card, out_dir = run.search, run.settings, run.card, run.out_dir
    encounter_of = {p: e["encounter"] for e in encounters for p in e["photos"]}
    enc_of = {e["encounter"]: e for e in encounters}
    photos_rows = []
    for p in card:
        enc_key = encounter_of.get(p.photo)
        proposed = enc_of[enc_key]["proposed_identity"] if enc_key else None
        score = photo_score(run.idents[p.photo], proposed) if enc_key and proposed and not enc_of[enc_key]["new"] \
            else None
        photos_rows.append({**p.to_dict(), "encounter": enc_key, "proposed_identity": proposed,
                            "score": _r(score)})
    counts = {"photos": len(card), **{s: sum(p.status == s for p in card) for s in (OK, UNREADABLE, DUPLICATE,
                                                                                    NO_TURTLE)},
              "encounters": len(encounters), "confident": sum(e["verdict"] == "confident" for e in encounters),
              "review": sum(e["verdict"] != "confident" for e in encounters), "new_turtles": new_turtles}
    notes = [] if confident_threshold(search.policy) is not None else [NO_CONFIDENT_NOTE]
    data = {"survey_id": run.survey_id, "photos_root": str(run.photos_root), "catalogue": run.catalogue,
            "settings": {**settings.to_dict(), "grouped_by": grouped.grouped_by,
                         "link_threshold": _r(grouped.threshold),
                         "artifacts": str(Path(run.artifacts).resolve())},  # for the apply command the review prints
            "policy": search.policy.to_dict(), "photos": photos_rows, "encounters": encounters, "counts": counts,
            "notes": notes}
    save_survey(out_dir, data)
    _write_photos_csv(out_dir, photos_rows)
    if not _decisions_still_valid(out_dir, data):
        write_decisions(out_dir, initial_decisions(data))
    run.result.data, run.result.notes = data, notes


def _review(run: _Run) -> None:
    """Write review.html last, from the files just written, so the page shows exactly what the files say."""
    stage = next_stage(run.progress, "review")
    run.result.review = write_review(run.out_dir)
    if stage:
        announce_total(stage, 1)
        stage(1)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _decisions_still_valid(out_dir: Path, data: dict[str, Any]) -> bool:
    """A resumed run keeps a decisions.csv a person already edited, when it still matches the run."""
    if not (out_dir / "decisions.csv").is_file():
        return False
    try:
        read_decisions(out_dir, data)
    except SurveyError:
        return False
    return True


def _write_photos_csv(out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PHOTO_COLUMNS)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else (f"{r[c]:.6f}" if c == "score" else r[c])
                         for c in PHOTO_COLUMNS])
    atomic_write_bytes(out_dir / PHOTOS_FILE, buf.getvalue().encode("utf-8"))


def _picture_pipeline(search: CatalogueSearch) -> MatchingPipeline:
    """The catalogue's pipeline; a global-only catalogue's pictures match whole frames with plain RootSIFT."""
    if search.pipeline is not None:
        return search.pipeline
    return build_pipeline(MatchingConfig(local_features="rootsift", local_focus="frame", local_max_side=800,
                                         local_keypoints=1500, rerank_k=1))


def _pictures(encounters: list[dict[str, Any]], settings: SurveySettings, search: CatalogueSearch,
              photos_root: Path, out_dir: Path, stage: Advance | None) -> None:
    todo: list[tuple[str, Path, Path, str, str, str]] = []
    for e in encounters:
        for n, cand in enumerate(e["candidates"][: settings.pictures], start=1):
            if cand["catalogue_photo"] is None:
                continue
            cand["picture"] = f"{PICTURES_DIR}/{e['encounter']}-{n}.jpg"
            todo.append((cand["picture"], photos_root / cand["survey_photo"],
                         Path(str(storage.join(search.data_root, cand["catalogue_photo"]))),
                         f"{e['encounter']}: {cand['survey_photo']}", f"#{n} {cand['identity']}: "
                         f"{Path(cand['catalogue_photo']).name}", f"{e['encounter']} against {cand['identity']}"))
    seen = set()
    for e in encounters:
        group = e["new_group"]
        if group is None or group["id"] in seen:
            continue
        seen.add(group["id"])
        for link in group["evidence"]:
            todo.append((link["picture"], photos_root / link["a_photo"], photos_root / link["b_photo"],
                         f"{link['a']}: {link['a_photo']}", f"{link['b']}: {link['b_photo']}",
                         f"{group['id']}: {link['a']} and {link['b']}"))
    announce_total(stage, len(todo))
    pipeline = _picture_pipeline(search) if todo else None
    for picture, a, b, a_label, b_label, what in todo:
        target = out_dir / picture
        if not target.is_file():  # a resumed run keeps the pictures it drew
            try:
                assert pipeline is not None
                write_match_picture(pipeline, a, b, target, a_label, b_label, what)
            except (OSError, ValueError) as exc:  # a catalogue photo gone or damaged: no picture, the rest stands
                log.warning("match picture %s: %s", picture, exc)
        if stage:
            stage(1)
