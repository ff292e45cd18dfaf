"""Sightings: which turtle was met when, one row per applied encounter, for the population analysis.

``SURVEY/sightings.csv`` lists a survey's applied encounters (``identity, encounter, date, time, photos,
photo_files, decided``); the catalogue keeps every survey's in ``INDEX/sightings.csv`` (the same columns after
``survey_id``), from which :mod:`wildtrack.survey.history` builds a capture history. Both are rewritten whole
(atomically) from what was applied, so a re-run, or a run killed half-way and run again, writes the same rows:
the catalogue's file is keyed by (survey_id, encounter) and never holds a sighting twice.

``decided`` says how much a person looked at it: ``automatic`` for a confident verdict accepted as the run
pre-filled it, ``reviewed`` for everything a person decided. An analysis may leave the automatic ones out, or
weigh them, knowing the confident operating point's false-accept rate.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wildtrack.atomic import atomic_write_bytes
from wildtrack.index import DEFAULT_LOCK_TIMEOUT, writer_lock
from wildtrack.index.files import csv_cell, csv_value
from wildtrack.survey.files import SIGHTINGS_FILE, SurveyError

__all__ = ["AUTOMATIC", "CATALOGUE_COLUMNS", "COLUMNS", "REVIEWED", "Sighting", "add_catalogue_sightings",
           "read_catalogue_sightings", "write_sightings"]

COLUMNS = ("identity", "encounter", "date", "time", "photos", "photo_files", "decided")
CATALOGUE_COLUMNS = ("survey_id", *COLUMNS)
AUTOMATIC, REVIEWED = "automatic", "reviewed"
PHOTO_SEPARATOR = ";"


@dataclass(frozen=True)
class Sighting:
    """One applied encounter: the turtle (its final identity), when (the encounter's start: date and time of
    day), the photos enrolled from it (paths relative to the survey's PHOTOS) and how it was decided."""

    identity: str
    encounter: str
    date: str  # YYYY-MM-DD, empty when no photo had a capture time
    time: str  # HH:MM:SS, empty likewise
    photo_files: tuple[str, ...]
    decided: str  # AUTOMATIC | REVIEWED
    survey_id: str = ""

    def cells(self) -> list[str]:
        return [csv_cell(self.identity), self.encounter, self.date, self.time, str(len(self.photo_files)),
                csv_cell(PHOTO_SEPARATOR.join(self.photo_files)), self.decided]

    @property
    def key(self) -> tuple[str, str]:
        return self.survey_id, self.encounter


def _order(rows: Iterable[Sighting]) -> list[Sighting]:
    return sorted(rows, key=lambda s: (s.date, s.time, s.survey_id, s.encounter))


def write_sightings(survey_dir: str | Path, rows: Iterable[Sighting]) -> Path:
    """Replace ``SURVEY/sightings.csv`` with ``rows`` (in order of date and time)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(s.cells() for s in _order(rows))
    path = Path(survey_dir) / SIGHTINGS_FILE
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return path


def read_catalogue_sightings(index_dir: str | Path) -> list[Sighting]:
    """Every survey's sightings the catalogue holds (none when no survey was applied to it yet)."""
    path = Path(index_dir) / SIGHTINGS_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise SurveyError(f"{path} cannot be read ({exc}); restore it from a backup, or apply the surveys "
                          "again (wildtrack survey apply adds back what is missing)") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CATALOGUE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SurveyError(f"{path}: the columns {', '.join(missing)} are missing; restore the file, or move it "
                          "away and apply the surveys again")
    rows = []
    for raw in reader:
        files = csv_value(raw["photo_files"] or "")
        rows.append(Sighting(csv_value(raw["identity"] or ""), raw["encounter"] or "", raw["date"] or "",
                             raw["time"] or "", tuple(p for p in files.split(PHOTO_SEPARATOR) if p),
                             raw["decided"] or "", raw["survey_id"] or ""))
    return rows


def add_catalogue_sightings(index_dir: str | Path, survey_id: str, rows: Iterable[Sighting],
                            lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> int:
    """Add a survey's sightings to ``INDEX/sightings.csv``; returns how many were not there yet.

    Keyed by (survey_id, encounter): a sighting already recorded is kept as it is, so applying a survey again
    (or finishing a killed apply) adds nothing twice. The file is read and rewritten under the index's writer
    lock, so two surveys applied at once do not lose each other's rows.
    """
    path = Path(index_dir) / SIGHTINGS_FILE
    new = [Sighting(s.identity, s.encounter, s.date, s.time, s.photo_files, s.decided, survey_id) for s in rows]
    with writer_lock(Path(index_dir), lock_timeout):
        existing = read_catalogue_sightings(index_dir)
        known = {s.key for s in existing}
        added = [s for s in new if s.key not in known]
        if not added and path.exists():
            return 0
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CATALOGUE_COLUMNS)
        writer.writerows([s.survey_id, *s.cells()] for s in _order([*existing, *added]))
        atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return len(added)
