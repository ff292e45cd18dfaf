"""The HTTP service a field team runs on a laptop: upload a photo, get the individual; enrol new ones.

The model and the index load once, in the lifespan, and the server refuses to start when the index was built
with another model. All inference, search and disk work runs in the thread pool so the event loop keeps
answering (health checks, thumbnails, the page) while a photo is being embedded. Every client mistake is a
4xx with a JSON ``{"detail": ...}``; anything unexpected is still JSON (500), never an HTML trace.

Access rules (Host, cross-site, API token) are :mod:`wildtrack.serve.security`'s; photo work is admitted by
:class:`~wildtrack.serve.limits.InferenceGate` (N at once, a bounded queue, then 503 + Retry-After). /health
runs on the event loop alone (no thread pool, no lock), so it answers while inference is saturated. Every request
first checks (one ``stat``) whether another process committed a new index generation, and reloads it.

Run it with :func:`run_server`, or with uvicorn's factory mode (configured by environment variables)::

    WILDTRACK_INDEX=idx WILDTRACK_ARTIFACTS=art python -m uvicorn --factory wildtrack.serve.app:app_from_env
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from wildtrack import __version__
from wildtrack.config import MAX_SEARCH_K, ServeConfig
from wildtrack.index import GalleryIndexError, Hit, IndexConflictError, IndexLockedError
from wildtrack.progress import Advance
from wildtrack.serve.docs import add_offline_docs, offline_docs_assets
from wildtrack.serve.evidence import MATCH_RESPONSE, evidence_picture, matching_info, operating_point_info
from wildtrack.serve.limits import InferenceGate
from wildtrack.serve.reload import ManifestWatch
from wildtrack.serve.schemas import (
    Candidate,
    EncounterCandidate,
    EncounterPhoto,
    EncounterResponse,
    EnrollResponse,
    ErrorResponse,
    Health,
    IdentityDetail,
    IdentityImage,
    IdentityList,
    IdentitySummary,
    Match,
    PredictResponse,
    SearchResponse,
)
from wildtrack.serve.security import (
    TOKEN_ENV,
    AccessMiddleware,
    check_bind,
    check_token,
    trusts_other_machines,
    uvicorn_bind,
)
from wildtrack.serve.service import ENROL_RETRY_AFTER_S, Catalogue, Timer, Upload
from wildtrack.serve.survey_api import router as survey_router
from wildtrack.serve.survey_jobs import SurveyJob, SurveyJobs
from wildtrack.serve.uploads import UploadError, UploadLimitMiddleware
from wildtrack.survey.run import run_survey
from wildtrack.visualize.report import looks_synthetic

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_ENROL_FILES = 50
MAX_ENCOUNTER_FILES = 20
ENV_INDEX, ENV_ARTIFACTS, ENV_THRESHOLD, ENV_CONFIG = (
    "WILDTRACK_INDEX", "WILDTRACK_ARTIFACTS", "WILDTRACK_THRESHOLD", "WILDTRACK_SERVE_CONFIG",
)
ERRORS = {code: {"model": ErrorResponse} for code in (400, 403, 404, 408, 413, 415, 422, 500, 503)}


def create_app(
    index_dir: str | os.PathLike[str],
    artifacts: str | os.PathLike[str],
    config: ServeConfig | None = None,
    threshold: float | None = None,
    proxied: bool = False,
) -> FastAPI:
    """The WildTrack web app; nothing is loaded until the server starts (the lifespan does it).

    ``threshold`` overrides the unknown threshold stored with the index; with neither, every photo is
    assigned its best candidate. ``proxied``: uvicorn trusts a reverse proxy's forwarded headers from other
    machines (``--forwarded-allow-ips``), so a token is required as for a network interface.
    """
    cfg = config or ServeConfig()
    check_bind(cfg, proxied)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            catalogue = await run_in_threadpool(Catalogue.open, index_dir, artifacts, threshold, cfg.max_pixels,
                                                cfg.rerank)
        except Exception as exc:  # e.g. IndexMismatchError: say why in one line before uvicorn's traceback
            log.error("WildTrack cannot start: %s", exc)
            app.state.startup_error = exc  # run_server re-raises it for the CLI's error reporting
            raise
        app.state.catalogue = catalogue
        app.state.manifest_watch = ManifestWatch(catalogue.index_dir)
        app.state.reloader = ThreadPoolExecutor(1, thread_name_prefix="wildtrack-reload")
        app.state.reloading = asyncio.Lock()
        app.state.reloader.submit(catalogue.scan_files)  # missing photos show in /health; never delays start-up
        app.state.surveys = await run_in_threadpool(open_surveys, cfg, catalogue)
        log.info("WildTrack serving %d images of %d individuals (model %s, threshold %s)", len(catalogue.index),
                 len(catalogue.index.identities()), catalogue.embedder.fingerprint,
                 catalogue.policy.photo_threshold)
        yield
        app.state.reloader.shutdown(wait=False)

    docs_assets = offline_docs_assets()
    app = FastAPI(
        title="WildTrack",
        version=__version__,
        summary="Which sea turtle is this? Photo identification and enrolment against a local catalogue.",
        lifespan=lifespan,
        docs_url=None if docs_assets else "/docs",
        redoc_url=None if docs_assets else "/redoc",
    )
    app.state.config = cfg
    app.state.gate = InferenceGate(cfg.max_concurrent_inference, cfg.max_queued_requests, cfg.retry_after_s,
                                   cfg.max_wait_s)
    app.add_middleware(UploadLimitMiddleware, max_bytes=cfg.max_upload_bytes, max_uploads=cfg.max_concurrent_uploads,
                       max_spooled_bytes=cfg.max_spooled_bytes, timeout_s=cfg.upload_timeout_s,
                       retry_after_s=cfg.retry_after_s,
                       large={"/surveys": (cfg.max_survey_bytes, cfg.survey_upload_timeout_s)})
    app.add_middleware(AccessMiddleware, config=cfg)  # outermost: refused requests never send their body
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if docs_assets:
        add_offline_docs(app, docs_assets)
    app.include_router(router)
    app.include_router(survey_router)
    return app


def open_surveys(cfg: ServeConfig, catalogue: Catalogue) -> SurveyJobs:
    """The surveys folder (``surveys/`` in the index folder unless configured) and the run a survey job does:
    ``wildtrack survey run`` on the uploaded card against the served catalogue."""
    root = Path(cfg.surveys_dir) if cfg.surveys_dir is not None else catalogue.index_dir / "surveys"

    def run(job: SurveyJob, progress: Advance) -> None:
        # the served model, already loaded (the local engine embeds in this process): no second copy per survey
        run_survey(job.photos_dir, catalogue.index_dir, catalogue.embedder, job.survey_dir,
                   progress=progress)

    return SurveyJobs(root, run, public=lambda text: text.replace(str(root), "SURVEYS").replace(
        str(catalogue.index_dir), "INDEX"))


# ------------------------------------------------------------------------------------------- endpoints

router = APIRouter()


async def get_catalogue(request: Request) -> Catalogue:
    """The loaded catalogue, reloaded first if another process committed (async: never waits for a thread)."""
    state = request.app.state
    if state.manifest_watch.changed() and not state.reloading.locked():
        async with state.reloading:
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(state.reloader, state.catalogue.reload_if_committed_elsewhere) is None:
                state.manifest_watch.forget()
    return state.catalogue


CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/health", response_model=Health, tags=["service"])
async def health(cat: CatalogueDep, request: Request) -> Health:
    """Liveness plus what is loaded: model fingerprint, index size, threshold, and catalogue files known to be
    unreadable."""
    ids, policy, damage = cat.index.identities(), cat.policy, cat.damage()
    return Health(version=__version__, model_fingerprint=cat.embedder.fingerprint, backend=cat.backend,
                  index_count=sum(ids.values()), identities_count=len(ids), dim=cat.index.dim,
                  index_kind=cat.index.kind, generation=cat.index.generation, threshold=policy.photo_threshold,
                  score_kind=policy.score, operating_point=operating_point_info(policy),
                  encounter_threshold=policy.encounter_threshold,
                  max_upload_bytes=request.app.state.config.max_upload_bytes, matching=matching_info(cat),
                  synthetic=looks_synthetic(cat.data_root), unreadable_photos=len(damage.photos),
                  unreadable_examples=sorted(damage.photos)[:5], damaged_feature_files=damage.shards)


@router.post("/predict", response_model=PredictResponse, responses=ERRORS, tags=["identify"])
async def predict(
    cat: CatalogueDep,
    request: Request,
    file: Annotated[UploadFile, File(description="a photo of the turtle's head")],
    topk: Annotated[int | None, Form(ge=1, le=50, description="candidates to return")] = None,
) -> PredictResponse:
    """Which individual is this? The best candidate, or ``identity: null`` when it looks like a new one."""
    timer = Timer()
    await _single_file(request, "file")
    k = topk or request.app.state.config.topk
    async with request.app.state.gate.slot():
        upload = await _read(file)
        result = await run_in_threadpool(cat.predict, upload, k)
    d = result.decision  # decided by result.policy: never the catalogue's, which a reload may have swapped since
    return PredictResponse(
        identity=d.identity, score=d.score, score_kind=result.score_kind, is_unknown=d.is_unknown,
        threshold=result.threshold,
        candidates=[
            Candidate(**asdict(c), thumbnail_url=_thumb_url(request, c.best_image_id))
            for c in d.candidates[:k]
        ],
        matches=[_match(request, h) for h in result.hits[:k]],
        warnings=cat.warnings(result.ranked),
        elapsed_ms=timer.ms,
    )


@router.post("/identify-encounter", response_model=EncounterResponse, responses=ERRORS, tags=["identify"])
async def identify_encounter(
    cat: CatalogueDep,
    request: Request,
    files: Annotated[list[UploadFile], File(description="photos of one turtle taken during one sighting")],
    topk: Annotated[int | None, Form(ge=1, le=50, description="candidates and matches per photo to return")] = None,
) -> EncounterResponse:
    """Which individual, from several photos of one encounter: each photo is identified, and the most confident
    one decides (one good view of the head settles it even when the other photos show an unseen side)."""
    if len(files) > MAX_ENCOUNTER_FILES:
        raise UploadError(400, f"at most {MAX_ENCOUNTER_FILES} photos per encounter, got {len(files)}")
    timer = Timer()
    k = topk or request.app.state.config.topk
    async with request.app.state.gate.slot(photos=len(files)):  # each photo is a prediction's work
        uploads = [await _read(f) for f in files]
        result = await run_in_threadpool(cat.predict_encounter, uploads, k)
    d = result.decision
    return EncounterResponse(
        identity=d.identity, score=d.score, score_kind=result.score_kind, is_unknown=d.is_unknown,
        threshold=result.threshold,
        candidates=[
            EncounterCandidate(**asdict(c), thumbnail_url=_thumb_url(request, c.best_image_id))
            for c in d.candidates[:k]
        ],
        photos=[
            EncounterPhoto(filename=f.filename, identity=p.decision.identity, score=p.decision.score,
                           is_unknown=p.decision.is_unknown, threshold=p.threshold,
                           matches=[_match(request, h) for h in p.hits[:k]])
            for f, p in zip(files, result.photos, strict=True)
        ],
        warnings=cat.warnings([h for p in result.photos for h in p.ranked]),
        elapsed_ms=timer.ms,
    )


@router.post("/match", response_class=Response, tags=["identify"], responses={**ERRORS, 200: MATCH_RESPONSE})
async def match(
    cat: CatalogueDep, request: Request,
    file: Annotated[UploadFile, File(description="the photo that was identified (again: uploads are not kept)")],
    image_id: Annotated[str, Form(description="a catalogued image, e.g. a candidate's best_image_id")],
) -> Response:
    """Match evidence: the photo beside a catalogued one, the keypoint pairs ``/predict`` counted drawn between."""
    await _single_file(request, "file")
    async with request.app.state.gate.slot():
        picture = await run_in_threadpool(evidence_picture, cat, await _read(file), image_id)
    return Response(picture.png, media_type="image/png", headers=picture.headers)


@router.post("/search", response_model=SearchResponse, responses=ERRORS, tags=["identify"])
async def search(
    cat: CatalogueDep,
    request: Request,
    file: Annotated[UploadFile, File(description="a photo to search the gallery with")],
    k: Annotated[int | None, Form(ge=1, le=MAX_SEARCH_K, description="gallery images to return")] = None,
) -> SearchResponse:
    """The ``k`` most similar gallery images, best first."""
    timer = Timer()
    await _single_file(request, "file")
    async with request.app.state.gate.slot():
        upload = await _read(file)
        found = await run_in_threadpool(cat.search, upload, k or request.app.state.config.topk)
    return SearchResponse(hits=[_match(request, h) for h in found.hits], warnings=cat.warnings(found.ranked),
                          elapsed_ms=timer.ms)


@router.post("/enroll", response_model=EnrollResponse, responses={**ERRORS, 409: {"model": ErrorResponse}},
             tags=["catalogue"])
async def enroll(
    cat: CatalogueDep,
    request: Request,
    identity: Annotated[str, Form(description="an existing identity, or a new name to create one")],
    files: Annotated[list[UploadFile], File(description="one or more photos of this individual")],
    date: Annotated[str | None, Form(description="encounter date YYYY-MM-DD (default: the photo's EXIF)")] = None,
) -> EnrollResponse:
    """Add photos of a known or new individual to the catalogue, on disk, at once.

    Identities are stored NFKC-normalised (full-width ``ｔ００１`` is ``t001``). A photo this individual already
    has (the same bytes) is not added twice: it is listed in ``already_enrolled``, so a retry is harmless."""
    if len(files) > MAX_ENROL_FILES:
        raise UploadError(400, f"at most {MAX_ENROL_FILES} photos per request, got {len(files)}")
    async with request.app.state.gate.slot(photos=len(files)):
        uploads = [await _read(f) for f in files]
        done = await run_in_threadpool(cat.enroll, identity, uploads, date)
    ids = cat.index.identities()
    return EnrollResponse(identity=done.identity, new_identity=done.new_identity, image_ids=done.image_ids,
                          already_enrolled=done.already_enrolled, identity_images=ids.get(done.identity, 0),
                          index_count=sum(ids.values()), identities_count=len(ids))


@router.get("/identities", response_model=IdentityList, tags=["catalogue"])
async def identities(cat: CatalogueDep, request: Request) -> IdentityList:
    """Every catalogued individual with its image count and one thumbnail."""
    first: dict[str, str] = {}
    for row in cat.index.rows:
        first.setdefault(row.identity, row.image_id)
    counts = cat.index.identities()
    return IdentityList(count=len(counts), identities=[
        IdentitySummary(identity=name, images=n, thumbnail_url=_thumb_url(request, first[name]))
        for name, n in counts.items() if name in first
    ])


@router.get("/identities/{identity}", response_model=IdentityDetail, responses={404: {"model": ErrorResponse}},
            tags=["catalogue"])
async def identity_detail(identity: str, cat: CatalogueDep, request: Request) -> IdentityDetail:
    """All catalogued images of one individual."""
    images = [
        IdentityImage(image_id=r.image_id, date=r.date, thumbnail_url=_thumb_url(request, r.image_id))
        for r in cat.index.rows if r.identity == identity
    ]
    if not images:
        raise UploadError(404, f"no catalogued individual named {identity!r}")
    return IdentityDetail(identity=identity, count=len(images), images=images)


@router.get("/thumbnails/{image_id}", name="thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse}}, tags=["catalogue"])
async def thumbnail(image_id: str, cat: CatalogueDep) -> Response:
    """A JPEG of at most 256 px of a catalogued image, looked up by id (never by a client path)."""
    data = await run_in_threadpool(cat.thumbnail, image_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})


# ------------------------------------------------------------------------------------------- helpers


async def _single_file(request: Request, field: str) -> None:
    """One photo per request: a second ``file`` part would otherwise be silently dropped."""
    count = len((await request.form()).getlist(field))
    if count > 1:
        raise UploadError(422, f"send exactly one '{field}' part, got {count} (several photos of one sighting: "
                          "POST /identify-encounter)")


async def _read(file: UploadFile) -> Upload:
    name = (file.filename or "upload")[:120]
    return Upload(await file.read(), name)


def _thumb_url(request: Request, image_id: str) -> str:
    return request.scope.get("root_path", "") + request.app.url_path_for("thumbnail", image_id=image_id)


def _match(request: Request, h: Hit) -> Match:
    return Match(image_id=h.image_id, identity=h.identity, date=h.date, score=h.order_score, cosine=h.score,
                 rank=h.rank,
                 thumbnail_url=_thumb_url(request, h.image_id), inliers=h.inliers,
                 match_probability=h.match_probability)


def _add_error_handlers(app: FastAPI) -> None:
    """Map domain errors to statuses; a last-resort handler keeps even bugs in JSON."""

    def error(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(UploadError)
    async def _upload(_: Request, exc: UploadError) -> JSONResponse:
        response = error(exc.status_code, exc.detail)
        response.headers.update(exc.headers)
        return response

    # Answers never carry server paths (they would tell a caller the layout of this machine): the log has them.
    @app.exception_handler(GalleryIndexError)
    async def _index(_: Request, exc: GalleryIndexError) -> JSONResponse:
        log.error("index error: %s", exc)
        if isinstance(exc, IndexLockedError):
            response = error(503, f"another process is writing the catalogue; retry in {ENROL_RETRY_AFTER_S} s")
            response.headers["Retry-After"] = str(ENROL_RETRY_AFTER_S)
            return response
        if isinstance(exc, IndexConflictError):
            return error(409, "the catalogue changed on disk while this request ran; send it again")
        return error(500, "the catalogue on disk cannot be read; the server log says why, and `wildtrack index "
                     "check` what to repair")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")


# ------------------------------------------------------------------------------------------- running


def run_server(
    index_dir: str | os.PathLike[str],
    artifacts: str | os.PathLike[str],
    config: ServeConfig | None = None,
    threshold: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve until Ctrl-C on ``config.host:config.port`` (127.0.0.1 by default: enrolment has no login).

    A start-up failure (e.g. IndexMismatchError: the index was built with another model) is raised here
    after uvicorn has shut down, so a caller such as the CLI can report it. ``on_ready`` runs once the model
    and index are loaded and the port is listening (so "serving on" is never said of a server that failed).
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:
                on_ready()

    cfg = config or ServeConfig()
    app = create_app(index_dir, artifacts, cfg, threshold,
                     proxied=trusts_other_machines(os.environ.get("FORWARDED_ALLOW_IPS")))  # uvicorn reads it too
    server = Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="info",
                                   timeout_graceful_shutdown=5))
    try:
        server.run()
    except SystemExit:  # uvicorn exits the process when start-up fails: turn it back into the real error
        error = getattr(app.state, "startup_error", None)
        if error is not None:
            raise error from None
        raise


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: ``WILDTRACK_INDEX``, ``WILDTRACK_ARTIFACTS``, optional
    ``WILDTRACK_THRESHOLD``, ``WILDTRACK_SERVE_CONFIG`` (ServeConfig as JSON) and ``WILDTRACK_API_TOKEN``."""
    missing = [k for k in (ENV_INDEX, ENV_ARTIFACTS) if not os.environ.get(k)]
    if missing:
        raise RuntimeError(f"set {' and '.join(missing)} to the index directory and model artifacts")
    settings = json.loads(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else {}
    if os.environ.get(TOKEN_ENV) and not settings.get("api_token"):
        settings["api_token"] = os.environ[TOKEN_ENV]
    check_token(settings.get("api_token"))
    bind = uvicorn_bind()
    if bind.host is not None:  # the address uvicorn listens on, not the config's default, decides the rule
        settings["host"] = bind.host
    cfg = ServeConfig(**settings)
    threshold = float(os.environ[ENV_THRESHOLD]) if os.environ.get(ENV_THRESHOLD) else None
    return create_app(os.environ[ENV_INDEX], os.environ[ENV_ARTIFACTS], cfg, threshold, proxied=bind.proxied)
