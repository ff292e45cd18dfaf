"""``survey apply``: enrol what a person accepted, in one crash-safe commit of the catalogue, and write sightings.

The decisions are trusted only for the photos and the catalogue they were made about: a photo whose bytes
changed since the run (or that is gone), a ``decisions.csv`` whose encounters or photos differ from the run's,
a catalogue that another process changed since, or another model, are refused before anything is written. The
one exception is the survey's own earlier apply: the generation it committed (recorded in ``applied.json``) is
accepted, so encounters decided later are applied by the next run of ``apply``.

Crash safety, in the order things are written (after every check above, so a refused apply writes nothing, not
even to a catalogue given by mistake):

1. interrupted enrolments of the catalogue are finished or undone (the enrolment core's recovery);
2. ``.apply-commit.json`` records what the commit is about to add (the generation it starts from and the new
   image ids), written just before the commit;
3. the enrolment core stages the photos, commits the index once (all identities together) and moves them in;
4. ``applied.json`` records the encounters applied and the generation after;
5. ``sightings.csv`` and the catalogue's ``sightings.csv`` are rewritten from ``applied.json``.

Killed before 3 commits, the catalogue is as before and a re-run does the whole job. Killed after it, the
catalogue holds exactly one more generation whose new rows are those recorded in step 2: a re-run recognises it
as this survey's own commit, enrols nothing again (photos are named by their content, so they are "already
there") and writes steps 4 and 5. Killed after 4, a re-run only rewrites the sightings, which are keyed by
(survey, encounter) and so never doubled.

Last, ``review.html`` is rendered again, so the page shows the decisions as they stand after the apply.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wildtrack.atomic import atomic_write_bytes
from wildtrack.embed import Embedder
from wildtrack.images import ImageError, prepare_photo
from wildtrack.index import GalleryIndex
from wildtrack.jobs import Engine
from wildtrack.progress import Advance, announce_total
from wildtrack.search import CatalogueSearch
from wildtrack.survey.decisions import ACCEPT, CONFIDENT, REJECT, DecisionRow, read_decisions
from wildtrack.survey.files import APPLIED_FILE, WORK_DIR, SurveyError, load_survey
from wildtrack.survey.review import write_review
from wildtrack.survey.sightings import AUTOMATIC, REVIEWED, Sighting, add_catalogue_sightings, write_sightings
from wildtrack.workflows import enrolment
from wildtrack.workflows.enrolment import EnrolmentError, EnrolPhoto

__all__ = ["APPLIED_FORMAT", "COMMIT_FILE", "ApplyReport", "apply_survey", "load_applied"]

log = logging.getLogger(__name__)

APPLIED_FORMAT = "wildtrack-survey-applied"
COMMIT_FILE = ".apply-commit.json"  # what the last apply was about to commit (step 2 of the module docstring)
EMBED_BATCH = 32
OK = "ok"


@dataclass(frozen=True)
class ApplyReport:
    """What one ``apply`` did, and what it left for a person to decide."""

    survey_id: str
    enrolled: dict[str, list[str]]  # identity -> image ids added to the catalogue by this apply
    new_identities: list[str]  # identities the catalogue did not have before
    applied: list[str]  # encounters recorded as applied by this apply
    already_applied: list[str]  # encounters an earlier apply of this survey recorded
    already_in_catalogue: dict[str, list[str]]  # identity -> image ids the catalogue already had (same bytes)
    undecided: list[str]
    rejected: list[str]
    generation_before: int | None
    generation_after: int | None
    changed_after_apply: list[str] = field(default_factory=list)  # applied, then their decision was edited
    finished_interrupted: bool = False  # the catalogue held this survey's commit already (an apply was killed)
    recovered: tuple[int, int] = (0, 0)  # interrupted enrolments: photos moved into place, orphans removed
    sightings: Path | None = None

    @property
    def photos_enrolled(self) -> int:
        return sum(len(ids) for ids in self.enrolled.values())

    def lines(self) -> list[str]:
        """What the command prints: one line per kind of thing that happened."""
        out: list[str] = []
        moved, removed = self.recovered
        if moved or removed:
            done = ([f"moved {moved} photo{_s(moved)} of an interrupted enrolment into place"] if moved else []) + (
                [f"removed {removed} orphan file{_s(removed)} (photos no catalogue row names)"] if removed else [])
            out.append(f"catalogue recovery first: {' and '.join(done)}")
        turtles = [i for i, ids in self.enrolled.items() if ids]
        if self.photos_enrolled:
            new = f" ({len(self.new_identities)} new: {', '.join(self.new_identities)})" if self.new_identities else ""
            out.append(f"enrolled {self.photos_enrolled} photo{_s(self.photos_enrolled)} of {len(turtles)} "
                       f"turtle{_s(len(turtles))}{new} from {len(self.applied)} encounter{_s(len(self.applied))}; "
                       f"catalogue generation {self.generation_before} → {self.generation_after}")
        elif self.applied:
            why = ("an earlier apply was interrupted after its commit" if self.finished_interrupted
                   else "the catalogue already had these photos")
            out.append(f"recorded {len(self.applied)} encounter{_s(len(self.applied))} as applied: {why}, so no "
                       "photo was enrolled again")
        else:
            out.append("nothing new to apply" + (f": {len(self.already_applied)} encounter"
                                                 f"{_s(len(self.already_applied))} applied before"
                                                 if self.already_applied else ""))
        present = sum(len(ids) for ids in self.already_in_catalogue.values())
        if present and self.photos_enrolled:
            out.append(f"{present} photo{_s(present)} already in the catalogue (same bytes): not added again")
        if self.rejected:
            out.append(f"{len(self.rejected)} encounter{_s(len(self.rejected))} rejected: "
                       f"{', '.join(self.rejected)}")
        if self.undecided:
            out.append(f"{len(self.undecided)} encounter{_s(len(self.undecided))} undecided: "
                       f"{', '.join(self.undecided)} — decide them in decisions.csv and run apply again")
        if self.changed_after_apply:
            out.append(f"decision changed after it was applied (not undone; correct the catalogue by hand): "
                       f"{', '.join(self.changed_after_apply)}")
        if self.sightings is not None:
            out.append(f"sightings: {self.sightings}")
        return out


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def load_applied(survey_dir: str | Path, survey_id: str) -> dict[str, Any] | None:
    """This survey's ``applied.json`` (None when nothing was applied yet); SurveyError when it cannot be trusted."""
    return _read_json(Path(survey_dir) / APPLIED_FILE, survey_id, "applied")


def apply_survey(survey_dir: str | Path, index_dir: str | Path, artifacts: str | Path | Embedder,
                 backend: str = "auto", engine: Engine | None = None, progress: Advance | None = None,
                 lock_timeout: float = enrolment.ENROL_LOCK_TIMEOUT) -> ApplyReport:
    """Enrol the accepted and renamed encounters of ``survey_dir`` into the catalogue at ``index_dir`` in ONE
    commit (``artifacts``: the model the catalogue was built with, its folder or loaded), and write
    ``applied.json`` and the sightings.

    Encounters an earlier apply recorded are skipped; undecided ones are listed and left out; rejected ones are
    recorded in the report. SurveyError (nothing written) when the photos, the sheet, the catalogue or the model
    are not the ones the run decided about. ``engine``: the job engine that extracts the photos' local features;
    ``progress``: counts the photos embedded.
    """
    survey_dir, index_dir = Path(survey_dir), Path(index_dir)
    survey = load_survey(survey_dir)
    survey_id = str(survey["survey_id"])
    rows = read_decisions(survey_dir, survey)
    applied = load_applied(survey_dir, survey_id)
    done: dict[str, dict[str, Any]] = dict(applied["encounters"]) if applied else {}
    encounters = {e["encounter"]: e for e in survey["encounters"]}
    todo = [r for r in rows if r.enrols and r.encounter not in done]
    changed = [r.encounter for r in rows if r.encounter in done and r.final_identity != done[r.encounter]["identity"]]

    photos = _checked_photos(survey, todo)  # before anything heavy: edited photos are refused at once
    index = GalleryIndex.load(index_dir)
    commit = _read_json(survey_dir / COMMIT_FILE, survey_id, "commit")
    interrupted = _check_catalogue(survey, applied, commit, index, enrolling=bool(todo))
    embedder = _model(artifacts, backend, index) if todo else None
    # every check passed: only now may the catalogue be written to, starting with its interrupted enrolments
    recovery = enrolment.recover_enrolments(index_dir, CatalogueSearch(index, index_dir, rerank=False).data_root,
                                            index)
    before = commit["generation_before"] if interrupted and commit else index.generation
    report_args: dict[str, Any] = {"survey_id": survey_id, "undecided": [r.encounter for r in rows if not r.decided],
                                   "rejected": [r.encounter for r in rows if r.decision == REJECT],
                                   "changed_after_apply": changed, "recovered": (recovery.moved_in, recovery.removed)}
    if embedder is None:
        sightings = _write_sightings(survey_dir, index_dir, survey, done, lock_timeout)
        _rerender_review(survey_dir)
        return ApplyReport(enrolled={}, new_identities=[], applied=[], already_applied=list(done),
                           already_in_catalogue={}, generation_before=index.generation,
                           generation_after=index.generation, sightings=sightings, **report_args)

    searcher = CatalogueSearch(index, index_dir)
    vectors = _run_vectors(survey_dir, survey_id)  # what the verdicts were made on, when the run kept them
    vectors.update(_embed(embedder, {name: data for name, (_, data) in photos.items() if name not in vectors},
                          progress))
    batches, slots = _batches(survey, todo, photos, vectors)
    try:
        results = enrolment.enrol_batches(searcher, batches, lock_timeout=lock_timeout, engine=engine,
                                          before_commit=_commit_recorder(survey_dir, survey_id, index))
    except EnrolmentError as exc:
        named = getattr(exc, "identity", None)
        which = [r.encounter for r in todo if named is None or r.final_identity == named]
        raise SurveyError(f"cannot enrol {', '.join(which)}: {exc}; change final_identity in decisions.csv"
                          ) from exc
    after = searcher.index
    for r in todo:
        identity, first, names = slots[r.encounter]
        result = results.get(identity)
        e = encounters[r.encounter]
        done[r.encounter] = {"identity": result.identity if result else identity, "decision": r.decision,
                             "decided": AUTOMATIC if r.verdict == CONFIDENT and r.decision == ACCEPT else REVIEWED,
                             "date": e.get("date") or "", "time": _time_of(e.get("start")), "photos": names,
                             "image_ids": list(result.photo_ids[first:first + len(names)]) if result else []}
    _save_applied(survey_dir, survey_id, after, done)
    sightings = _write_sightings(survey_dir, index_dir, survey, done, lock_timeout)
    _rerender_review(survey_dir)
    enrolled = {res.identity: list(res.image_ids) for res in results.values() if res.image_ids}
    present = {res.identity: list(res.already_enrolled) for res in results.values() if res.already_enrolled}
    return ApplyReport(enrolled=enrolled, new_identities=[res.identity for res in results.values() if res.new_identity],
                       applied=[r.encounter for r in todo], already_applied=[k for k in done if k not in
                                                                            {r.encounter for r in todo}],
                       already_in_catalogue=present, generation_before=before, generation_after=after.generation,
                       finished_interrupted=interrupted, sightings=sightings, **report_args)


# ------------------------------------------------------------------------------------------------ checks


def _ok_photos(survey: dict[str, Any], encounter: str) -> list[str]:
    status = {p["photo"]: p.get("status") for p in survey["photos"]}
    e = next(e for e in survey["encounters"] if e["encounter"] == encounter)
    return [p for p in e["photos"] if status.get(p) == OK]


def _checked_photos(survey: dict[str, Any], todo: Sequence[DecisionRow]) -> dict[str, tuple[str, bytes]]:
    """The bytes (and decoded format) of every photo to enrol, each checked against the sha256 the run recorded;
    SurveyError naming every photo that changed or is gone."""
    root = Path(survey["photos_root"])
    sha = {p["photo"]: p.get("sha256") for p in survey["photos"]}
    out: dict[str, tuple[str, bytes]] = {}
    problems = []
    for r in todo:
        for name in _ok_photos(survey, r.encounter):
            path = root / name
            try:
                data = path.read_bytes()
            except OSError:
                problems.append(f"{name} ({r.encounter}) is missing from {root}")
                continue
            if hashlib.sha256(data).hexdigest() != sha.get(name):
                problems.append(f"{name} ({r.encounter}) was changed since the survey ran")
                continue
            out[name] = (_format(data, name), data)
    if problems:
        raise SurveyError("the photos are not the ones the survey decided about; restore them, or run the survey "
                          "again on the card as it is now:\n  - " + "\n  - ".join(problems))
    return out


def _format(data: bytes, name: str) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.format)
    except (OSError, UnidentifiedImageError) as exc:
        raise SurveyError(f"{name} cannot be read as an image ({exc})") from exc


def _check_catalogue(survey: dict[str, Any], applied: dict[str, Any] | None, commit: dict[str, Any] | None,
                     index: GalleryIndex, enrolling: bool) -> bool:
    """Refuse a catalogue other than the one the decisions were made against; True when it holds this survey's
    own commit from an apply that was killed before it wrote ``applied.json``."""
    run = survey["catalogue"]
    if index.catalogue_id != run.get("catalogue_id"):
        raise SurveyError(f"--index holds another catalogue ({index.catalogue_id}) than the one this survey "
                          f"identified against ({run.get('catalogue_id')}, {run.get('index_dir')}): apply it to "
                          "that catalogue, or run the survey again against this one")
    if run.get("model_fingerprint") and index.model_fingerprint != run["model_fingerprint"]:
        raise SurveyError("the catalogue's model is not the one this survey ran with: run the survey again")
    allowed = {run.get("generation")} | ({applied["generation"]} if applied else set())
    if index.generation in allowed:
        return False
    if commit is not None and _is_own_commit(commit, index):
        log.warning("the catalogue holds this survey's commit from an apply that was interrupted: finishing it")
        return True
    if not enrolling:
        return False  # nothing to enrol: a catalogue that moved on since cannot make a verdict stale
    mine = f", or {applied['generation']} after this survey's last apply" if applied else ""
    raise SurveyError(f"the catalogue changed since the survey ran (generation {index.generation}; the survey "
                      f"identified against generation {run.get('generation')}{mine}): someone enrolled or added "
                      "photos in between, so the verdicts may no longer hold. Run the survey again against the "
                      "catalogue as it is now (into a new --out) and enter the decisions again in the new run's "
                      "decisions.csv: this sheet belongs to the old run and is refused there")


def _is_own_commit(commit: dict[str, Any], index: GalleryIndex) -> bool:
    """The catalogue is exactly one generation after the recorded start, and its new rows are the recorded ones."""
    new = commit.get("new_image_ids") or []
    return (commit.get("catalogue_id") == index.catalogue_id and index.generation is not None
            and commit.get("generation_before") is not None and index.generation == commit["generation_before"] + 1
            and len(index) == commit.get("images_before", -1) + len(new) and all(i in index for i in new))


# ------------------------------------------------------------------------------------------- enrolment


def _model(artifacts: str | Path | Embedder, backend: str, index: GalleryIndex) -> Embedder:
    """The model (its folder, or one already loaded, as the service has it), checked against the catalogue."""
    from wildtrack.embed import load_embedder

    embedder = load_embedder(artifacts, backend=backend) if isinstance(artifacts, str | os.PathLike) else artifacts
    if embedder.fingerprint != index.model_fingerprint or embedder.dim != index.dim:
        raise SurveyError(f"the model in {artifacts} is not the one the catalogue was built with: give the "
                          "--artifacts of the survey's run")
    return embedder


def _run_vectors(survey_dir: Path, survey_id: str) -> dict[str, np.ndarray]:
    """The unit vectors ``survey run`` computed for its photos (``SURVEY/.work``), when they are this run's: the
    photos were checked unchanged and the model the same, so embedding them again would only repeat that work."""
    work = survey_dir / WORK_DIR
    try:
        run = json.loads((work / "run.json").read_text(encoding="utf-8"))
        listed = json.loads((work / "embeddings.json").read_text(encoding="utf-8"))
        vectors = np.load(work / "embeddings.npy")
    except (OSError, ValueError):
        return {}  # e.g. a survey folder copied without its .work
    names = listed.get("ok") if isinstance(listed, dict) else None
    if not isinstance(run, dict) or run.get("survey_id") != survey_id or not isinstance(names, list) \
            or len(names) != len(vectors):
        return {}
    return dict(zip(names, vectors, strict=True))


def _embed(embedder: Embedder, photos: dict[str, bytes], progress: Advance | None) -> dict[str, np.ndarray]:
    """Unit vectors of the photos, prepared as a search prepares them, in batches; the progress display hears of
    the work only when there is some (the command's bar appears with its total, or not at all)."""
    if photos:
        announce_total(progress, len(photos))
    names = list(photos)
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(names), EMBED_BATCH):
        chunk = names[start:start + EMBED_BATCH]
        try:
            pixels = np.stack([prepare_photo(photos[n], embedder.image_size).pixels for n in chunk])
        except ImageError as exc:
            raise SurveyError(f"a photo of {', '.join(chunk)} cannot be decoded ({exc})") from exc
        out.update(zip(chunk, embedder.embed_pixels(pixels), strict=True))
        if progress is not None:
            progress(len(chunk))
    return out


Slot = tuple[str, int, list[str]]  # an encounter's final identity, its first photo's position in that batch, photos


def _batches(survey: dict[str, Any], todo: Sequence[DecisionRow], photos: dict[str, tuple[str, bytes]],
             vectors: dict[str, np.ndarray]) -> tuple[dict[str, list[EnrolPhoto]], dict[str, Slot]]:
    """The photos to enrol per final identity (several encounters of one turtle share its batch), and where each
    encounter's photos sit in its batch (identity, first position, photo names), to read back their image ids."""
    encounters = {e["encounter"]: e for e in survey["encounters"]}
    batches: dict[str, list[EnrolPhoto]] = {}
    slots: dict[str, Slot] = {}
    for r in todo:
        try:
            enrolment.validate_identity(r.final_identity)
        except EnrolmentError as exc:
            raise SurveyError(f"{r.encounter}: final identity {r.final_identity!r}: {exc}; change it in "
                              "decisions.csv") from exc
        names = _ok_photos(survey, r.encounter)
        batch = batches.setdefault(r.final_identity, [])
        slots[r.encounter] = (r.final_identity, len(batch), names)
        day = encounters[r.encounter].get("date") or None
        batch.extend(EnrolPhoto(photos[n][1], photos[n][0], vectors[n], day) for n in names)
    return {identity: batch for identity, batch in batches.items() if batch}, slots


def _commit_recorder(survey_dir: Path, survey_id: str, index: GalleryIndex) -> Callable[[Iterable[str]], None]:
    """The enrolment core calls it with the image ids it is about to commit, before it writes anything."""

    def record(new_ids: Iterable[str]) -> None:
        body = {"survey_id": survey_id, "catalogue_id": index.catalogue_id, "generation_before": index.generation,
                "images_before": len(index), "new_image_ids": sorted(new_ids)}
        _write_json(survey_dir / COMMIT_FILE, body)

    return record


# ------------------------------------------------------------------------------------------- records


def _time_of(start: str | None) -> str:
    return start[11:19] if isinstance(start, str) and len(start) >= 19 else ""


def _save_applied(survey_dir: Path, survey_id: str, index: GalleryIndex, done: dict[str, dict[str, Any]]) -> None:
    body = {"format": APPLIED_FORMAT, "version": 1, "survey_id": survey_id, "catalogue_id": index.catalogue_id,
            "generation": index.generation, "images": len(index), "encounters": dict(sorted(done.items()))}
    _write_json(survey_dir / APPLIED_FILE, body)


def _write_sightings(survey_dir: Path, index_dir: Path, survey: dict[str, Any], done: dict[str, dict[str, Any]],
                     lock_timeout: float) -> Path:
    rows = [Sighting(d["identity"], key, d.get("date", ""), d.get("time", ""), tuple(d.get("photos", ())),
                     d.get("decided", REVIEWED)) for key, d in done.items()]
    path = write_sightings(survey_dir, rows)
    add_catalogue_sightings(index_dir, str(survey["survey_id"]), rows, lock_timeout)
    return path


def _rerender_review(survey_dir: Path) -> None:
    """``review.html`` again, showing the sheet as it stands; a page that cannot be written does not undo an apply
    that succeeded (``wildtrack survey review`` renders it later)."""
    try:
        write_review(survey_dir)
    except (OSError, SurveyError) as exc:
        log.warning("review.html was not rendered again (%s): run `wildtrack survey review %s`", exc, survey_dir)


def _write_json(path: Path, body: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())


def _read_json(path: Path, survey_id: str, what: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SurveyError(f"{path} cannot be read ({exc}); restore it (it records what apply enrolled)") from exc
    if not isinstance(data, dict) or data.get("survey_id") != survey_id:
        log.warning("%s belongs to another run of this folder: ignored", path)
        return None
    if what == "applied" and data.get("format") != APPLIED_FORMAT:
        raise SurveyError(f"{path} is not a WildTrack apply record; move it away and run apply again")
    return data
