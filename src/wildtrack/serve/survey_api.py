"""The survey endpoints: upload a card, follow its run, read the result, decide, apply.

They are the HTTP face of ``wildtrack survey run`` / ``survey apply`` on the server's own catalogue: a run writes
the same survey folder as the CLI (under the server's surveys folder, :mod:`wildtrack.serve.survey_jobs`), a
decision here is a line of the same ``decisions.csv`` (:func:`wildtrack.survey.decisions.set_decision`, the same
rules as a spreadsheet edit, after which the folder's ``review.html`` is rendered again), and apply is the same
crash-safe commit (which renders the page again too), after which the served catalogue reloads.
Starting a survey, deciding and applying are writes (the API token, :mod:`wildtrack.serve.security`); reading
is not. Everything that touches the disk runs in the thread pool; the run itself in its own thread.
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from wildtrack.data import names
from wildtrack.serve.schemas import (
    ApplyResponse,
    DecisionRequest,
    DecisionResponse,
    ErrorResponse,
    SurveyDecision,
    SurveyList,
    SurveyResult,
    SurveyRun,
    SurveyStarted,
    SurveyStatus,
)
from wildtrack.serve.survey_jobs import SurveyJob, SurveyJobs
from wildtrack.serve.survey_uploads import CardLimits, Unpacked, is_zip, save_photos, unpack_zip
from wildtrack.serve.uploads import UploadError
from wildtrack.survey.apply import apply_survey
from wildtrack.survey.decisions import RENAME, UNDECIDED, read_decisions, set_decision
from wildtrack.survey.files import APPLIED_FILE, PICTURES_DIR, THUMBS_DIR, SurveyError, load_survey
from wildtrack.survey.review import card_order, write_review
from wildtrack.workflows import enrolment

__all__ = ["router"]

router = APIRouter(prefix="/surveys", tags=["surveys"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse}
                                           for code in (400, 401, 403, 404, 409, 413, 422, 500)}
FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.(jpg|jpeg|png)$"
RELOAD_TRIES = 20  # the served catalogue catches up after an apply (an enrolment may hold its lock a moment)


def _jobs(request: Request) -> SurveyJobs:
    return request.app.state.surveys


def _url(request: Request, name: str, **params: str) -> str:
    return request.scope.get("root_path", "") + request.app.url_path_for(name, **params)


def _status(request: Request, job: SurveyJob) -> SurveyStatus:
    return SurveyStatus(id=job.id, state=job.state, stage=job.stage, done=job.done, total=job.total,  # type: ignore[arg-type]
                        error=job.error, photos=job.photos, created=job.created,
                        status_url=_url(request, "survey_status", survey_id=job.id),
                        result_url=_url(request, "survey_result", survey_id=job.id))


@router.post("", status_code=202, response_model=SurveyStarted, responses=ERRORS)
async def start_survey(
    request: Request,
    response: Response,
    files: Annotated[list[UploadFile], File(description="one zip of the card (sub-folders are kept: a card "
                                            "organised by sighting is grouped by them), or its photos")],
) -> SurveyStarted:
    """Start a survey of a card of photos against the served catalogue: a background job (one at a time; 409
    while another runs). Poll ``status_url``; when it says done, ``result_url`` has the encounters."""
    jobs = _jobs(request)
    cfg = request.app.state.config
    limits = CardLimits(cfg.max_survey_files, cfg.max_survey_unpacked_bytes)
    job = jobs.reserve()
    try:
        unpacked = await run_in_threadpool(_receive, files, job.photos_dir, limits)
    except BaseException:
        jobs.discard(job)
        raise
    job.photos, job.ignored = len(unpacked.photos), unpacked.ignored
    job.save()
    jobs.start(job)
    status = _status(request, job)
    response.headers["Location"] = status.status_url
    return SurveyStarted(id=job.id, state=job.state, photos=job.photos,  # type: ignore[arg-type]
                         ignored=job.ignored, status_url=status.status_url, result_url=status.result_url)


def _receive(files: list[UploadFile], dest: Path, limits: CardLimits) -> Unpacked:
    heads = []
    for f in files:
        heads.append(f.file.read(4))
        f.file.seek(0)
    zips = [is_zip(f.filename or "", head) for f, head in zip(files, heads, strict=True)]
    if any(zips):
        if len(files) > 1:
            raise UploadError(400, "send one zip of the card, or its photos, not both (nor several zips)")
        return unpack_zip(files[0].file, dest, limits)  # type: ignore[arg-type]
    return save_photos([(f.filename or "photo", f.file) for f in files], dest, limits)  # type: ignore[misc]


@router.get("", response_model=SurveyList)
async def list_surveys(request: Request) -> SurveyList:
    """The surveys this server holds, newest first."""
    return SurveyList(surveys=[_status(request, job) for job in _jobs(request).listing()])


@router.get("/{survey_id}", name="survey_status", response_model=SurveyStatus, responses=ERRORS)
async def survey_status(survey_id: str, request: Request) -> SurveyStatus:
    """queued, running (with its stage and done/total), done, or failed (with why)."""
    return _status(request, _jobs(request).get(survey_id))


@router.get("/{survey_id}/result", name="survey_result", response_model=SurveyResult, responses=ERRORS)
async def survey_result(survey_id: str, request: Request) -> SurveyResult:
    """survey.json (without server paths) and the current decisions."""
    job = _jobs(request).finished(survey_id)
    survey, rows, applied = await run_in_threadpool(_read, request, job)
    index_dir = request.app.state.catalogue.index_dir
    return SurveyResult(id=job.id, survey=SurveyRun.model_validate(_without_paths(survey, job, index_dir)),
                        decisions=[SurveyDecision(**r.to_dict()) for r in rows],
                        undecided=sum(not r.decided for r in rows),
                        review_order=[e["encounter"] for e in card_order(survey["encounters"])],
                        files_url=_url(request, "survey_status", survey_id=job.id) + "/files/", applied=applied)


def _read(request: Request, job: SurveyJob) -> tuple[dict[str, Any], list[Any], dict[str, Any] | None]:
    with job.lock, _public_errors(request, job, 400):
        survey = load_survey(job.survey_dir)
        rows = read_decisions(job.survey_dir, survey)
        applied = _json_or_none(job.survey_dir / APPLIED_FILE)
    return survey, rows, applied


@router.get("/{survey_id}/files/{folder}/{name}", name="survey_file", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse}})
async def survey_file(
    survey_id: str, request: Request,
    folder: Annotated[str, PathParam(pattern=f"^({THUMBS_DIR}|{PICTURES_DIR})$")],
    name: Annotated[str, PathParam(pattern=FILE_NAME)],
) -> FileResponse:
    """A thumbnail (thumbs/) or match picture (pictures/) of a survey; nothing else of its folder is served."""
    job = _jobs(request).finished(survey_id)
    base = job.survey_dir / folder
    path = base / name
    if base.is_symlink() or path.is_symlink() or not path.is_file() or path.resolve().parent != base.resolve():
        raise UploadError(404, f"survey {survey_id} has no {folder}/{name}")
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


@router.post("/{survey_id}/decisions", response_model=DecisionResponse, responses=ERRORS)
async def decide(survey_id: str, body: DecisionRequest, request: Request) -> DecisionResponse:
    """Accept, reject or rename one encounter (or undo with an empty decision): the same rules as editing
    ``decisions.csv``; a refused decision is a 400 saying why."""
    job = _jobs(request).finished(survey_id)
    return await run_in_threadpool(_decide, request, job, body)


def _decide(request: Request, job: SurveyJob, body: DecisionRequest) -> DecisionResponse:
    final = body.final_identity if body.decision != UNDECIDED else ""
    if body.decision == RENAME and final.strip():
        final = _checked_name(request.app.state.catalogue.index.identities(), final)
    with job.lock, _public_errors(request, job, 400):
        survey = load_survey(job.survey_dir)
        row = set_decision(job.survey_dir, survey, body.encounter, body.decision, final)
        rows = read_decisions(job.survey_dir, survey)
        write_review(job.survey_dir)  # the folder's review.html shows the sheet as it now stands
    return DecisionResponse(decision=SurveyDecision(**row.to_dict()), undecided=sum(not r.decided for r in rows))


def _checked_name(catalogued: dict[str, int], name: str) -> str:
    """The name as apply will enrol it (NFKC; a catalogued one as it is spelt there), or a 400 saying why apply
    would refuse it: now, beside the card, rather than after the whole survey is decided."""
    try:
        name = enrolment.canonical_identity(enrolment.validate_identity(name), catalogued)
    except enrolment.InvalidIdentityError as exc:
        raise UploadError(400, str(exc)) from exc
    similar = names.drawn_alike(name, catalogued) if name not in catalogued else None
    if similar is not None:
        raise UploadError(400, f"{name!r} looks like the catalogued individual {similar!r} (they differ only in letter "
                          "case or in look-alike letters of another script): rename to that name, or choose a "
                          "clearly different one")
    return name


@router.post("/{survey_id}/apply", response_model=ApplyResponse, responses=ERRORS)
async def apply(survey_id: str, request: Request) -> ApplyResponse:
    """Enrol the accepted and renamed encounters' photos in one crash-safe commit of the served catalogue
    (undecided ones are listed and left out; applying again adds nothing), then serve the grown catalogue."""
    job = _jobs(request).finished(survey_id)
    report = await run_in_threadpool(_apply, request, job)
    cat = request.app.state.catalogue
    ids = cat.index.identities()
    return ApplyResponse(id=job.id, report=_plain(report), summary=_summary(report), index_count=sum(ids.values()),
                         identities_count=len(ids), generation=cat.index.generation)


def _apply(request: Request, job: SurveyJob) -> Any:
    cat = request.app.state.catalogue
    # the served model (no second copy per apply); the write lock: one enrolment of this process at a time
    with job.lock, _public_errors(request, job, 409), cat.write_lock:
        report = apply_survey(job.survey_dir, cat.index_dir, cat.embedder)
    for _ in range(RELOAD_TRIES):  # serve what was just committed before answering
        if cat.reload_if_committed_elsewhere() is not None:
            break
        time.sleep(0.1)
    return report


# ------------------------------------------------------------------------------------------------ helpers


@contextmanager
def _public_errors(request: Request, job: SurveyJob, status: int) -> Iterator[None]:
    """A SurveyError (a refused decision, a stale survey) becomes a 4xx whose text names no server path."""
    try:
        yield
    except SurveyError as exc:
        raise UploadError(status, public_text(str(exc), job, request.app.state.catalogue.index_dir)) from exc


def public_text(text: str, job: SurveyJob, index_dir: Path) -> str:
    """``text`` with this machine's paths replaced by the names the docs use (SURVEY, PHOTOS, INDEX)."""
    for path, name in ((job.survey_dir, "SURVEY"), (job.photos_dir, "PHOTOS"), (index_dir, "INDEX")):
        for form in {str(path), str(Path(path).resolve())}:
            text = text.replace(form, name)
    return text


def _without_paths(survey: dict[str, Any], job: SurveyJob, index_dir: Path) -> dict[str, Any]:
    """survey.json without the keys that hold this machine's paths, and with paths in messages (why a photo is
    unreadable) named as the docs name them."""
    survey = {k: v for k, v in survey.items() if k not in ("photos_root", "format", "version")}
    survey["catalogue"] = {k: v for k, v in (survey.get("catalogue") or {}).items() if k != "index_dir"}
    return json.loads(public_text(json.dumps(survey), job, index_dir))


def _json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _plain(report: Any) -> dict[str, Any]:
    """The apply report as JSON (a dataclass, or anything with to_dict())."""
    if hasattr(report, "to_dict"):
        return dict(report.to_dict())
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(report).items()
                if not isinstance(v, Path)}
    return dict(report) if isinstance(report, dict) else {"result": str(report)}


def _summary(report: Any) -> list[str]:
    lines = getattr(report, "lines", None)
    if callable(lines):
        return [str(line) for line in lines()]
    return []
