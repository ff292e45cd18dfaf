"""Capture histories: which turtle was seen on which occasion, as capture-recapture packages read them.

A capture history is a 0/1 matrix: one row per individual, one column per sampling occasion (a survey day, or
one applied survey), 1 when the individual was seen on it. It is built from the catalogue's
``INDEX/sightings.csv`` (every applied survey's sightings, see :mod:`wildtrack.survey.sightings`) and, on request,
the catalogue's own dated photos. Two CSV shapes (the format is stated in ``docs/survey.md``):

* ``wide``: a column ``id`` then one 0/1 column per occasion, named by the date (``2026-07-01``) or the survey
  id; what R's ``Rcapture`` (``closedp(X[, -1])``) and the pymc capture-recapture examples read;
* ``rmark``: columns ``ch`` (the history as one string of 0/1, e.g. ``0101``) and ``id``; RMark's input (read it
  with ``colClasses = c(ch = "character")`` so the leading zeros stay).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from wildtrack.atomic import atomic_write_bytes
from wildtrack.survey.files import SurveyError
from wildtrack.survey.sightings import read_catalogue_sightings

__all__ = ["FORMATS", "OCCASIONS", "capture_history", "write_history"]

log = logging.getLogger(__name__)

Occasion = Literal["day", "survey"]
Format = Literal["wide", "rmark"]
OCCASIONS: tuple[str, ...] = ("day", "survey")
FORMATS: tuple[str, ...] = ("wide", "rmark")


def capture_history(index_dir: str | Path, occasion: str = "day", include_catalogue: bool = False
                    ) -> tuple[list[str], list[str], np.ndarray]:
    """``(individuals, occasions, matrix)``: identities sorted, occasions in time order (days ascending; surveys by
    their first sighting), ``matrix[i, j]`` = 1 when individual ``i`` was seen on occasion ``j`` (uint8).

    ``occasion``: ``day`` (the sighting's date) or ``survey`` (the survey it was applied from).
    ``include_catalogue``: also count the catalogue's own photos on their dates (``day`` only; photos without a
    date are left out). SurveyError when there is nothing to build a history from.
    """
    if occasion not in OCCASIONS:
        raise SurveyError(f"occasion {occasion!r}: choose one of {', '.join(OCCASIONS)}")
    if include_catalogue and occasion != "day":
        raise SurveyError("the catalogue's own photos belong to no survey: --include-catalogue needs --occasion day")
    captures: set[tuple[str, str]] = set()  # (individual, occasion)
    first_seen: dict[str, str] = {}  # occasion -> its earliest "date time", for ordering surveys
    undated = 0
    for s in read_catalogue_sightings(index_dir):
        if occasion == "day":
            if not s.date:
                undated += 1
                continue
            captures.add((s.identity, s.date))
        else:
            captures.add((s.identity, s.survey_id))
            when = f"{s.date} {s.time}"
            first_seen[s.survey_id] = min(first_seen.get(s.survey_id, when), when)
    if undated:
        log.warning("%d sighting(s) have no date (no capture time in their photos): left out of the daily history",
                    undated)
    if include_catalogue:
        from wildtrack.index import GalleryIndex

        captures |= {(r.identity, r.date) for r in GalleryIndex.load(index_dir).rows if r.date}
    if not captures:
        raise SurveyError(f"{index_dir} holds no dated sightings yet: apply a survey to it first (wildtrack survey "
                          "apply)" + ("" if include_catalogue else ", or add --include-catalogue"))
    individuals = sorted({i for i, _ in captures})
    keys = {o for _, o in captures}
    occasions = sorted(keys) if occasion == "day" else sorted(keys, key=lambda o: (first_seen[o], o))
    row = {name: k for k, name in enumerate(individuals)}
    col = {name: k for k, name in enumerate(occasions)}
    matrix = np.zeros((len(individuals), len(occasions)), np.uint8)
    for i, o in captures:
        matrix[row[i], col[o]] = 1
    return individuals, occasions, matrix


def write_history(path: str | Path, individuals: list[str], occasions: list[str], matrix: np.ndarray,
                  format: str = "wide") -> Path:  # noqa: A002 - the option's name
    """Write the history as CSV in the ``wide`` or ``rmark`` shape (see the module docstring); atomically."""
    if format not in FORMATS:
        raise SurveyError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
    if matrix.shape != (len(individuals), len(occasions)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(individuals)} individuals × "
                         f"{len(occasions)} occasions")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if format == "wide":
        writer.writerow(["id", *occasions])
        writer.writerows([name, *(int(v) for v in values)] for name, values in zip(individuals, matrix, strict=True))
    else:
        writer.writerow(["ch", "id"])
        writer.writerows(["".join(str(int(v)) for v in values), name]
                         for name, values in zip(individuals, matrix, strict=True))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return path
