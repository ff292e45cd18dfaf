"""What a survey folder holds, and reading and writing its ``survey.json``.

A survey folder (``wildtrack survey run --out SURVEY``) is the unit a field team hands around: the machine
result (``survey.json``), the sheets a person reads or edits (``photos.csv``, ``decisions.csv``), the review page
and its pictures, and, after ``survey apply``, what was enrolled (``applied.json``) and the sightings. Every file
is written whole or not at all (:func:`~wildtrack.atomic.atomic_write_bytes`), so a killed run never leaves a
half-written sheet for ``apply`` to trust.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wildtrack.atomic import atomic_write_bytes

__all__ = ["APPLIED_FILE", "DECISIONS_FILE", "FORMAT", "PHOTOS_FILE", "PICTURES_DIR", "REVIEW_FILE",
           "SIGHTINGS_FILE", "SURVEY_FILE", "SurveyError", "THUMBS_DIR", "VERSION", "WORK_DIR", "load_survey",
           "save_survey"]

FORMAT = "wildtrack-survey"
VERSION = 1

SURVEY_FILE = "survey.json"
PHOTOS_FILE = "photos.csv"
DECISIONS_FILE = "decisions.csv"
REVIEW_FILE = "review.html"
APPLIED_FILE = "applied.json"
SIGHTINGS_FILE = "sightings.csv"
PICTURES_DIR = "pictures"
THUMBS_DIR = "thumbs"
WORK_DIR = ".work"  # resumable intermediate state of a run


class SurveyError(ValueError):
    """A survey folder, or what a person wrote into it, cannot be used as it is; the message says why and what
    to do."""


def load_survey(survey_dir: str | Path) -> dict[str, Any]:
    """The run's ``survey.json``; SurveyError when the folder holds no finished survey or another format."""
    path = Path(survey_dir) / SURVEY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SurveyError(f"{survey_dir} holds no {SURVEY_FILE}: run `wildtrack survey run PHOTOS --out "
                          f"{survey_dir}` first (or finish a killed run with --resume)") from None
    except (OSError, ValueError) as exc:
        raise SurveyError(f"{path} cannot be read ({exc}); run the survey again") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SurveyError(f"{path} is not a WildTrack survey file")
    if data.get("version") != VERSION:
        raise SurveyError(f"{path} is survey format {data.get('version')!r}; this wildtrack reads format {VERSION}: "
                          "run the survey again with this version")
    return data


def save_survey(survey_dir: str | Path, data: dict[str, Any]) -> Path:
    """Write ``survey.json`` atomically, keys sorted, so the same run gives the same bytes."""
    path = Path(survey_dir) / SURVEY_FILE
    body = {**data, "format": FORMAT, "version": VERSION}
    atomic_write_bytes(path, (json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return path
