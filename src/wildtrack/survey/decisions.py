"""``decisions.csv``: what a person decided about each encounter of a survey, in a sheet they can edit.

One row per encounter: ``encounter, photos, proposed_identity, score, verdict, decision, final_identity``.
``run`` writes it with confident verdicts pre-filled (``accept``, the proposed identity) and the others blank; a
person fills ``decision`` (``accept`` / ``reject`` / ``rename``) and, for ``rename``, ``final_identity``, in a
spreadsheet or on the service's page; ``apply`` enrols what was accepted or renamed.

Reading is strict about what identifies the run (encounters, their photos, the proposal: a sheet from another run
or an edited one is refused, since enrolling photos under a verdict about other photos would corrupt the
catalogue) and lenient about what spreadsheets do to a CSV (a BOM, ``;`` as separator, letter case of the
decision, extra columns, the score's number format).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wildtrack.atomic import atomic_write_bytes
from wildtrack.survey.files import DECISIONS_FILE, SurveyError

__all__ = ["ACCEPT", "COLUMNS", "CONFIDENT", "DECISIONS", "REJECT", "RENAME", "REVIEW", "UNDECIDED", "DecisionRow",
           "initial_decisions", "read_decisions", "set_decision", "write_decisions"]

COLUMNS = ("encounter", "photos", "proposed_identity", "score", "verdict", "decision", "final_identity")
ACCEPT, REJECT, RENAME, UNDECIDED = "accept", "reject", "rename", ""
DECISIONS = (ACCEPT, REJECT, RENAME, UNDECIDED)
CONFIDENT, REVIEW = "confident", "review"
PHOTO_SEPARATOR = ";"


@dataclass(frozen=True)
class DecisionRow:
    """One encounter's line. ``final_identity`` is what its photos are enrolled under (empty unless accepted or
    renamed)."""

    encounter: str
    photos: tuple[str, ...]
    proposed_identity: str
    score: float | None
    verdict: str
    decision: str = UNDECIDED
    final_identity: str = ""

    @property
    def decided(self) -> bool:
        return self.decision != UNDECIDED

    @property
    def enrols(self) -> bool:
        """Whether ``apply`` enrols this encounter's photos."""
        return self.decision in (ACCEPT, RENAME)

    def to_dict(self) -> dict[str, Any]:
        return {"encounter": self.encounter, "photos": list(self.photos), "proposed_identity": self.proposed_identity,
                "score": self.score, "verdict": self.verdict, "decision": self.decision,
                "final_identity": self.final_identity}


def initial_decisions(survey: dict[str, Any]) -> list[DecisionRow]:
    """The sheet a run writes: confident verdicts accepted as proposed, the rest undecided."""
    rows = []
    for e in survey["encounters"]:
        confident = e.get("verdict") == CONFIDENT
        rows.append(DecisionRow(e["encounter"], tuple(e["photos"]), e.get("proposed_identity") or "",
                                e.get("score"), e.get("verdict") or REVIEW, ACCEPT if confident else UNDECIDED,
                                (e.get("proposed_identity") or "") if confident else ""))
    return rows


def write_decisions(survey_dir: str | Path, rows: Iterable[DecisionRow]) -> Path:
    """Replace ``decisions.csv`` whole (atomically)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.encounter, PHOTO_SEPARATOR.join(r.photos), r.proposed_identity,
                         "" if r.score is None else f"{r.score:.6f}", r.verdict, r.decision, r.final_identity])
    path = Path(survey_dir) / DECISIONS_FILE
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return path


def read_decisions(survey_dir: str | Path, survey: dict[str, Any]) -> list[DecisionRow]:
    """The sheet as a person left it, checked against the run it belongs to (``survey``: its ``survey.json``),
    in the run's encounter order; SurveyError naming each problem (with its line) otherwise."""
    path = Path(survey_dir) / DECISIONS_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SurveyError(f"{path} is missing: run the survey again, or restore the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SurveyError(f"{path} cannot be read as UTF-8 text ({exc}); save it as CSV (UTF-8)") from exc
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = max(",;\t", key=first.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise SurveyError(f"{path}: the columns {', '.join(missing)} are missing (the sheet needs "
                          f"{', '.join(COLUMNS)}); restore them or run the survey again")
    reader.fieldnames = header
    expected = {e["encounter"]: e for e in survey["encounters"]}
    found: dict[str, DecisionRow] = {}
    present: set[str] = set()  # encounters with a row, usable or not: a bad row is one problem, not two
    problems: list[str] = []
    for line, raw in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in raw.items() if k is not None and isinstance(v, str | type(None))}
        if not any(values.values()):
            continue  # a blank line a spreadsheet left
        row, problem = _parse(values, expected, line)
        present.add(values.get("encounter", ""))
        if problem:
            problems.append(problem)
        elif row is not None:
            if row.encounter in found:
                problems.append(f"line {line}: encounter {row.encounter} appears twice")
            found[row.encounter] = row
    absent = [key for key in expected if key not in present]
    if absent:
        problems.append(f"encounter(s) {', '.join(absent)} have no row")
    if problems:
        raise SurveyError(f"{path} does not match this survey's run or has invalid decisions:\n  - "
                          + "\n  - ".join(problems))
    return [found[key] for key in expected]


def _parse(values: dict[str, str], expected: dict[str, dict[str, Any]], line: int
           ) -> tuple[DecisionRow | None, str | None]:
    key = values.get("encounter", "")
    run = expected.get(key)
    if run is None:
        return None, f"line {line}: encounter {key!r} is not one of this survey's (a sheet from another run?)"
    photos = tuple(p for p in values.get("photos", "").split(PHOTO_SEPARATOR) if p)
    if photos != tuple(run["photos"]):
        return None, f"line {line}: {key}'s photos differ from the run's (edited, or a sheet from another run)"
    proposed = run.get("proposed_identity") or ""
    if values.get("proposed_identity", "") != proposed:
        return None, (f"line {line}: {key}'s proposed identity was changed from {proposed!r}; leave it, and write "
                      "the identity you choose in final_identity with decision rename")
    decision = values.get("decision", "").lower()
    final = values.get("final_identity", "")
    if decision not in DECISIONS:
        return None, f"line {line}: {key}: decision {decision!r} is not one of accept, reject, rename (or empty)"
    if decision == ACCEPT:
        if final and final != proposed:
            return None, (f"line {line}: {key}: accept keeps the proposed identity {proposed!r}; to enrol under "
                          f"{final!r} write rename")
        if not proposed:
            return None, f"line {line}: {key} has no proposed identity to accept: write rename and a final_identity"
        final = proposed
    elif decision == RENAME and not final:
        return None, f"line {line}: {key}: rename needs the identity in final_identity"
    elif decision in (REJECT, UNDECIDED):
        final = ""
    return DecisionRow(key, photos, proposed, run.get("score"), run.get("verdict") or REVIEW, decision, final), None


def set_decision(survey_dir: str | Path, survey: dict[str, Any], encounter: str, decision: str,
                 final_identity: str = "") -> DecisionRow:
    """Change one encounter's decision (the service's page does this) and rewrite the sheet; the same rules as a
    person editing the file."""
    rows = read_decisions(survey_dir, survey)
    by_key = {r.encounter: r for r in rows}
    if encounter not in by_key:
        raise SurveyError(f"encounter {encounter!r} is not one of this survey's")
    decision = decision.strip().lower()
    final_identity = final_identity.strip()
    old = by_key[encounter]
    values = {"encounter": encounter, "photos": PHOTO_SEPARATOR.join(old.photos),
              "proposed_identity": old.proposed_identity, "decision": decision, "final_identity": final_identity}
    row, problem = _parse(values, {e["encounter"]: e for e in survey["encounters"]}, 0)
    if problem or row is None:
        raise SurveyError((problem or "invalid decision").removeprefix("line 0: "))
    rows = [replace(row) if r.encounter == encounter else r for r in rows]
    write_decisions(survey_dir, rows)
    return row
