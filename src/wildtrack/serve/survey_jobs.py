"""Surveys started on the page: one folder each, run one at a time in a background thread, found again after a
restart.

``<surveys>/<id>/photos/`` holds the uploaded card and ``<surveys>/<id>/survey/`` the survey folder
(``wildtrack survey run --out``), so everything a person did on the page is also there for the CLI
(``survey apply``, a spreadsheet on ``decisions.csv``). ``job.json`` records the state, written atomically at each
change of state; progress (stage, done/total) lives in memory, reported by the run through the
:mod:`wildtrack.progress` conventions.

One survey runs at a time: a card is minutes of embedding and matching on a laptop's cores, and two at once
would only make both slower while starving the identify requests. The run is a daemon thread, never the event
loop; a server stopped mid-run leaves ``job.json`` saying "running", which the next start reports as interrupted.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wildtrack.atomic import atomic_write_bytes
from wildtrack.progress import Advance
from wildtrack.serve.uploads import UploadError
from wildtrack.survey.files import SURVEY_FILE

__all__ = ["JobProgress", "QUEUED", "RUNNING", "DONE", "FAILED", "SurveyJob", "SurveyJobs"]

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
JOB_FILE = "job.json"
PHOTOS, SURVEY = "photos", "survey"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
INTERRUPTED = "the server stopped while this survey ran: upload the card again"


@dataclass
class SurveyJob:
    id: str
    folder: Path
    state: str = QUEUED
    stage: str | None = None
    done: int = 0
    total: int | None = None
    error: str | None = None
    photos: int = 0
    ignored: list[str] = field(default_factory=list)
    created: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # decisions and apply, one at a time

    @property
    def photos_dir(self) -> Path:
        return self.folder / PHOTOS

    @property
    def survey_dir(self) -> Path:
        return self.folder / SURVEY

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "error": self.error, "photos": self.photos,
                "ignored": self.ignored, "created": self.created}

    def save(self) -> None:
        atomic_write_bytes(self.folder / JOB_FILE, (json.dumps(self.record(), indent=1) + "\n").encode())


class JobProgress:
    """The :data:`~wildtrack.progress.Advance` a run reports to: ``stage(name)`` starts a stage (its counts from
    zero), ``set_total(n)`` sizes it, calling it counts work done."""

    def __init__(self, job: SurveyJob) -> None:
        self.job = job

    def __call__(self, n: int = 1) -> None:
        self.job.done += n

    def set_total(self, total: int) -> None:
        self.job.total = total

    def stage(self, description: str) -> Advance:
        self.job.stage, self.job.done, self.job.total = description, 0, None
        return self


Runner = Callable[[SurveyJob, Advance], None]


class SurveyJobs:
    """The surveys under ``root``; ``runner(job, progress)`` turns ``job.photos_dir`` into ``job.survey_dir``."""

    def __init__(self, root: Path, runner: Runner, public: Callable[[str], str] = str) -> None:
        self.root = root
        self.runner = runner
        self.public = public  # error text as a client may read it (no server paths)
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, SurveyJob] = {job.id: job for job in self._scan()}

    def _scan(self) -> list[SurveyJob]:
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.is_symlink() or not folder.is_dir() or not _ID.fullmatch(folder.name):
                continue
            job = SurveyJob(folder.name, folder)
            try:
                record = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = {}
            if isinstance(record, dict):
                job.state = str(record.get("state") or "")
                job.error, job.photos = record.get("error"), int(record.get("photos") or 0)
                job.ignored, job.created = list(record.get("ignored") or []), str(record.get("created") or "")
            finished = (job.survey_dir / SURVEY_FILE).is_file()
            if finished and job.state != FAILED:
                job.state = DONE  # a finished survey folder (also one copied in by hand)
            elif job.state in (QUEUED, RUNNING):
                job.state, job.error = FAILED, INTERRUPTED
                job.save()
            elif job.state != FAILED:
                continue  # not a survey of ours
            found.append(job)
        return found

    # ------------------------------------------------------------------------------------------ lifecycle

    def reserve(self) -> SurveyJob:
        """A new job's folder, or 409 while another survey is queued or running."""
        with self._lock:
            busy = next((j for j in self.jobs.values() if j.active), None)
            if busy is not None:
                where = f" ({busy.stage}, {busy.done}/{busy.total})" if busy.stage and busy.total else ""
                raise UploadError(409, f"survey {busy.id} is still running{where}: one survey runs at a time; wait "
                                  f"for it to finish (GET /surveys/{busy.id}) and send this card again")
            job_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
            job = SurveyJob(job_id, self.root / job_id, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            job.folder.mkdir()
            job.save()
            self.jobs[job_id] = job
            return job

    def discard(self, job: SurveyJob) -> None:
        """Forget a reserved job whose upload was refused, and remove the folder it was given."""
        with self._lock:
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def start(self, job: SurveyJob) -> None:
        threading.Thread(target=self._run, args=(job,), name=f"wildtrack-survey-{job.id}", daemon=True).start()

    def _run(self, job: SurveyJob) -> None:
        job.state = RUNNING
        job.save()
        log.info("survey %s: %d photos, started", job.id, job.photos)
        try:
            self.runner(job, JobProgress(job))
            if not (job.survey_dir / SURVEY_FILE).is_file():
                raise RuntimeError(f"the run ended without writing {SURVEY_FILE}")
        except Exception as exc:
            log.exception("survey %s failed", job.id)
            job.state, job.error = FAILED, self.public(_message(exc))
        else:
            job.state, job.stage = DONE, None
            log.info("survey %s: done", job.id)
        job.save()

    # ------------------------------------------------------------------------------------------ lookups

    def get(self, job_id: str) -> SurveyJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise UploadError(404, f"no survey {job_id!r} on this server (GET /surveys lists them)")
        return job

    def finished(self, job_id: str) -> SurveyJob:
        """The job, if its survey folder is complete; 409 while it runs, 409 when it failed."""
        job = self.get(job_id)
        if job.active:
            raise UploadError(409, f"survey {job_id} is still {job.state}: its result comes when GET /surveys/{job_id} "
                              "says done")
        if job.state == FAILED:
            raise UploadError(409, f"survey {job_id} failed ({job.error}); upload the card again")
        return job

    def listing(self) -> list[SurveyJob]:
        return sorted(self.jobs.values(), key=lambda j: (j.created, j.id), reverse=True)


def _message(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"
