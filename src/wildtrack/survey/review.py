"""``review.html``: the page a person reads to decide each encounter of a survey, before editing ``decisions.csv``.

One card per encounter (its photos, the top catalogue candidates with their match pictures, the verdict, the
operating point that made it, the decision the sheet holds now), the cards a person must look at first: every
verdict *to review* before the confident ones, and among them the hardest calls first. Confident cards are
collapsed (a closed ``<details>``): they are pre-filled ``accept`` and need a glance at most.

It is built like ``report.html`` (:mod:`wildtrack.visualize.report`): plain HTML with inline CSS, no scripts and
nothing fetched from the network, so it opens from a zipped or copied survey folder, on a laptop in the field or
on a phone. Pictures are relative links into the folder (``thumbs/``, ``pictures/``) and, for the full-size photo,
to the card's folder. Everything that comes from the card or a person (file names, identities, the sheet's
contents) is escaped: a file name is user data and must never become markup.

The page is a file, rendered from ``survey.json`` and ``decisions.csv`` by :func:`write_review`: by ``survey run``,
again at the end of ``survey apply``, by the service after each decision set on its page, and by
``wildtrack survey review SURVEY`` after a person edited the sheet by hand (until then it shows the sheet as it
was when last rendered). A sheet that no longer matches the run (edited by hand into something ``apply`` will
refuse) does not stop the page: it falls back to the run's own proposals and says, on top, what is wrong with the
sheet.
"""

from __future__ import annotations

import html
import math
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wildtrack.atomic import atomic_write_bytes
from wildtrack.decide.policy import SCORE_NAMES
from wildtrack.survey.decisions import ACCEPT, CONFIDENT, REJECT, RENAME, DecisionRow, initial_decisions, read_decisions
from wildtrack.survey.files import DECISIONS_FILE, REVIEW_FILE, SurveyError, load_survey
from wildtrack.visualize.report import CSS as REPORT_CSS
from wildtrack.visualize.report import SYNTHETIC_BANNER

__all__ = ["ORDER_SENTENCE", "card_order", "render_review", "write_review"]

ORDER_SENTENCE = ("Cards to review come first, the hardest calls first: those whose score is closest to the "
                  "new-individual threshold (where “a known turtle” and “a new one” are nearly a coin toss). "
                  "Confident cards follow, collapsed, lowest score first.")
UNUSABLE = {"unreadable": "Unreadable files", "duplicate": "Duplicates (the same bytes as another photo)",
            "no_turtle": "No turtle found"}
TIME_SOURCES = {"exif": "EXIF", "file": "file time"}

CSS = REPORT_CSS + """
.enc{margin:10px 0;border:1px solid #d0d7de;border-radius:8px;background:#fff}
.enc>details>summary{cursor:pointer;padding:8px 12px;list-style-position:inside}
.enc>details>summary h3{display:inline;font-size:1.05em;margin:0}
.enc[data-verdict=review]{border-left:6px solid #e0a800}.enc[data-verdict=confident]{border-left:6px solid #2e7d32}
.enc .body{padding:0 12px 12px}.enc h4{margin:.9em 0 .3em;font-size:.98em}
.photos{display:flex;flex-wrap:wrap;gap:8px}
.photo{margin:0;width:150px;font-size:.85em;overflow-wrap:anywhere}
.photo img{width:150px;height:auto;border:1px solid #ddd;display:block}
.nothumb{width:150px;height:80px;background:#eee;display:flex;align-items:center;justify-content:center;color:#666}
.tag{display:inline-block;border-radius:4px;padding:0 6px;font-size:.85em;font-weight:600}
.tag.review{background:#fff3cd}.tag.confident{background:#d8f0da}.tag.new{background:#e3e9ff}
.decision{background:#f3f6f9;border-radius:6px;padding:6px 10px}
.banner.error{background:#fde2e1;border-color:#c62828;white-space:pre-wrap;font-weight:400}
.next{background:#eef6ff;border-radius:8px;padding:8px 12px}
"""


# ---------------------------------------------------------------------------------------------------- helpers

def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _href(rel: str) -> str:
    """A relative URL for a path inside the survey folder (or relative to it), percent-encoded then escaped for
    an attribute: a ``#`` or ``?`` in a file name stays part of the name."""
    return _esc(quote(rel, safe="/"))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _score(value: Any, kind: str | None) -> str:
    number = _number(value)
    name = SCORE_NAMES.get(kind or "", kind or "score")
    return f"{name} —" if number is None else f"{name} {number:.3f}"


def _plain(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.3f}"


def _count(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else str(int(number))


def _exists(survey_dir: Path, rel: str | None) -> bool:
    return bool(rel) and (survey_dir / str(rel)).is_file()


def _photo_link(survey_dir: Path, photos_root: str | None, photo: str) -> str | None:
    """The full-size photo, relative to the survey folder (it moves with the card's folder when both are copied
    together); None when it is not there now or sits on another drive."""
    if not photos_root:
        return None
    target = Path(photos_root) / photo
    if not target.is_file():
        return None
    try:
        return Path(os.path.relpath(target, survey_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return None


# ---------------------------------------------------------------------------------------------------- ordering

def _uncertainty_key(encounter: Mapping[str, Any]) -> tuple[Any, ...]:
    """Review verdicts first, closest to the new-individual threshold first (no score or no threshold: lowest
    score first, no score before any); then confident ones, lowest score first; the encounter id breaks ties."""
    score = _number(encounter.get("score"))
    threshold = _number(encounter.get("threshold"))
    if encounter.get("verdict") == CONFIDENT:
        return (1, -math.inf if score is None else score, 0.0, encounter.get("encounter", ""))
    if score is None:
        return (0, -math.inf, 0.0, encounter.get("encounter", ""))
    distance = abs(score - threshold) if threshold is not None else score
    return (0, distance, score, encounter.get("encounter", ""))


def card_order(encounters: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The encounters in the order the page shows them (:data:`ORDER_SENTENCE`)."""
    return sorted(encounters, key=_uncertainty_key)


# ---------------------------------------------------------------------------------------------------- sections

def _counts(survey: Mapping[str, Any]) -> dict[str, int]:
    """The header's figures: the run's own ``counts`` where it wrote them, else counted from its lists."""
    photos = survey.get("photos") or []
    encounters = survey.get("encounters") or []
    given = survey.get("counts") or {}
    status = {k: sum(1 for p in photos if p.get("status") == k) for k in UNUSABLE}
    computed = {"photos": len(photos), "encounters": len(encounters),
                "confident": sum(1 for e in encounters if e.get("verdict") == CONFIDENT),
                "review": sum(1 for e in encounters if e.get("verdict") != CONFIDENT),
                "new_turtles": len({(e.get("new_group") or {}).get("id") or e.get("proposed_identity")
                                    for e in encounters if e.get("new")}),
                **status}
    counts = {k: int(given.get(k, v)) for k, v in computed.items()}
    counts["unusable"] = sum(counts[k] for k in UNUSABLE)
    return counts


def _header(survey: Mapping[str, Any], rows: Sequence[DecisionRow], survey_dir: Path, banner: str | None) -> str:
    counts = _counts(survey)
    labels = (("photos", "photos"), ("encounters", "encounters"), ("confident", "confident"),
              ("review", "to review"), ("new_turtles", "new turtles"), ("unusable", "unusable photos"))
    cards = "".join(f"<div class='card' data-count='{key}'><div class='v'>{counts[key]}</div><div class='k'>"
                    f"{label}</div></div>" for key, label in labels)
    undecided = sum(1 for r in rows if not r.decided)
    catalogue = survey.get("catalogue") or {}
    parts = ["<header>", "<h1>WildTrack survey: review</h1>"]
    if banner:
        parts.append(f"<p class='banner error' id='sheet-error' role='alert'><b>{_esc(DECISIONS_FILE)} cannot be "
                     f"used as it is, so this page shows the run's own proposals instead.</b>\n{_esc(banner)}</p>")
    if catalogue.get("synthetic"):
        parts.append(f"<p class='banner' id='synthetic'>{SYNTHETIC_BANNER}</p>")
    parts += [f"<p>Survey <code>{_esc(survey.get('survey_id', '?'))}</code> of "
              f"<code>{_esc(survey.get('photos_root', '?'))}</code> against the catalogue "
              f"<code>{_esc(catalogue.get('index_dir', '?'))}</code> (generation "
              f"{_esc(catalogue.get('generation', '?'))}, {_esc(catalogue.get('identities', '?'))} turtles)</p>",
              f"<div class='cards' id='counts'>{cards}</div>",
              f"<p id='decided'>{len(rows) - undecided} of {len(rows)} encounters decided in "
              f"<code>{_esc(DECISIONS_FILE)}</code>; {undecided} still undecided.</p>",
              _operating_point(survey.get("policy") or {}),
              _next_step(survey, survey_dir),
              f"<p class='note' id='order'>{_esc(ORDER_SENTENCE)}</p>",
              "</header>"]
    return "\n".join(parts)


def _operating_point(policy: Mapping[str, Any]) -> str:
    """The policy's own sentence (the one ``search``, the report and the service say), and the confident point
    spelled out beside it, since that one decides which cards are pre-filled."""
    name = SCORE_NAMES.get(str(policy.get("score", "")), str(policy.get("score") or "score"))
    confident = _number(policy.get("confident_encounter_threshold"))
    if confident is None:
        point = ("<p id='confident-point'>No confident operating point: this catalogue's index was built before "
                 "it existed, so every verdict is to review. Rebuild the index (<code>wildtrack index build</code>) "
                 "to fit it.</p>")
    else:
        far = _number(policy.get("confident_far"))
        photo = _number(policy.get("confident_photo_threshold"))
        point = (f"<p id='confident-point'>Confident (named automatically, pre-filled <code>accept</code>): an "
                 f"encounter at {_esc(name)} ≥ {confident:.3f}"
                 + (f" (a photo at ≥ {photo:.3f})" if photo is not None else "")
                 + (f", fitted on the catalogue at ≤ {100 * far:g} % false accepts" if far is not None else "")
                 + ". A new individual is never confident.</p>")
    sentence = policy.get("sentence") or "no operating point recorded"
    return (f"<h2>Operating point</h2><p id='operating-point'><b>{_esc(sentence)}.</b></p>{point}")


def _next_step(survey: Mapping[str, Any], survey_dir: Path) -> str:
    catalogue = survey.get("catalogue") or {}
    settings = survey.get("settings") or {}
    index = catalogue.get("index_dir")
    artifacts = settings.get("artifacts")
    command = (f"wildtrack survey apply {shlex.quote(str(survey_dir.resolve()))} --index "
               f"{shlex.quote(str(index)) if index else 'INDEX'} --artifacts "
               f"{shlex.quote(str(artifacts)) if artifacts else 'ARTIFACTS'}")
    return ("<h2>Next step</h2><div class='next' id='next-step'><p>Open <code>"
            f"{_esc(DECISIONS_FILE)}</code> in a spreadsheet and fill <code>decision</code> for each encounter: "
            "<code>accept</code> (enrol its photos under the proposed identity), <code>reject</code> (enrol "
            "nothing) or <code>rename</code> (write the right identity in <code>final_identity</code>). Blank "
            "rows are left out. Then enrol what you accepted:</p>"
            f"<p><code>{_esc(command)}</code></p></div>")


def _photo_figure(photo: Mapping[str, Any], survey_dir: Path, photos_root: str | None, extra: str = "") -> str:
    name = str(photo.get("photo", ""))
    thumb = photo.get("thumb")
    link = _photo_link(survey_dir, photos_root, name)
    if _exists(survey_dir, thumb):
        image = f"<img src='{_href(str(thumb))}' alt='Photo {_esc(name)}' loading='lazy'>"
        image = f"<a href='{_href(link)}'>{image}</a>" if link else image
    else:
        image = "<div class='nothumb' role='img' aria-label='no thumbnail'>no thumbnail</div>"
    taken = photo.get("taken")
    source = TIME_SOURCES.get(str(photo.get("time_source")), "")
    when = f"{_esc(str(taken).replace('T', ' '))}" + (f" ({_esc(source)})" if source else "") if taken else \
        "no capture time"
    return (f"<figure class='photo' data-photo='{_esc(name)}'>{image}<figcaption><code>{_esc(name)}</code><br>"
            f"<time>{when}</time>{extra}</figcaption></figure>")


def _candidates(encounter: Mapping[str, Any], survey_dir: Path) -> str:
    candidates = encounter.get("candidates") or []
    if not candidates:
        return "<h4>Candidates</h4><p class='note'>No catalogue candidates.</p>"
    kind = encounter.get("score_kind")
    name = SCORE_NAMES.get(str(kind), str(kind or "score"))
    rows, figures = [], []
    size = len(encounter.get("photos") or [])
    for rank, c in enumerate(candidates, start=1):
        rows.append(f"<tr><td class='n'>{rank}</td><td>{_esc(c.get('identity'))}</td>"
                    f"<td class='n'>{_plain(c.get('score'))}</td><td class='n'>{_count(c.get('inliers'))}</td>"
                    f"<td class='n'>{_plain(c.get('cosine'))}</td>"
                    f"<td class='n'>{_count(c.get('support'))} of {size}</td>"
                    f"<td><code>{_esc(c.get('survey_photo') or '—')}</code></td>"
                    f"<td><code>{_esc(c.get('catalogue_photo') or '—')}</code></td></tr>")
        picture = c.get("picture")
        if _exists(survey_dir, picture):
            alt = (f"Match picture: survey photo {c.get('survey_photo') or '?'} beside catalogue photo "
                   f"{c.get('catalogue_photo') or '?'} of {c.get('identity')}")
            figures.append(f"<figure><a href='{_href(str(picture))}'><img src='{_href(str(picture))}' "
                           f"alt='{_esc(alt)}' loading='lazy'></a><figcaption>{rank}. {_esc(c.get('identity'))}: "
                           f"{_esc(_score(c.get('score'), kind))}, {_count(c.get('inliers'))} inliers</figcaption>"
                           "</figure>")
    table = ("<div class='scroll'><table class='candidates'><tr><th class='n'>#</th><th>turtle</th>"
             f"<th class='n'>{_esc(name)}</th><th class='n'>inliers</th><th class='n'>cosine</th>"
             "<th class='n' title='in how many of the encounter&#x27;s photos this turtle was the closest'>"
             "closest in</th><th>survey photo</th><th>catalogue photo</th></tr>"
             + "".join(rows) + "</table></div>")
    return ("<h4>Candidates</h4>" + table + "".join(figures) +
            "<p class='note'>Match pictures join the keypoint pairs that agree on one geometric transform: many "
            "lines on the head's scales mean the same turtle; a few scattered ones are chance.</p>")


def _verdict(encounter: Mapping[str, Any]) -> str:
    kind = encounter.get("score_kind")
    proposed = encounter.get("proposed_identity") or ""
    score = _esc(_score(encounter.get("score"), kind))
    threshold, confident = _number(encounter.get("threshold")), _number(encounter.get("confident_threshold"))
    line = [f"new individual below {threshold:.3f}" if threshold is not None else "no new-individual threshold",
            f"confident from {confident:.3f}" if confident is not None else "no confident point"]
    point = f"<p class='note point'>Operating point for an encounter: {_esc('; '.join(line))}.</p>"
    if encounter.get("new"):
        best = (encounter.get("candidates") or [{}])[0]
        closest = (f" The closest catalogue turtle is {_esc(best.get('identity'))} at "
                   f"{_esc(_score(best.get('score'), kind))}." if best.get("identity") else "")
        head = (f"<p class='verdict'><span class='tag new'>new individual</span> provisional id "
                f"<b>{_esc(proposed)}</b> ({score}).{closest}</p>")
    else:
        tag = ("<span class='tag confident'>confident</span>" if encounter.get("verdict") == CONFIDENT
               else "<span class='tag review'>to review</span>")
        head = f"<p class='verdict'>{tag} proposed <b>{_esc(proposed)}</b>: {score}.</p>"
    return "<h4>Verdict</h4>" + head + point


def _new_group(encounter: Mapping[str, Any], survey_dir: Path) -> str:
    if not encounter.get("new"):
        return ""
    group = encounter.get("new_group") or {}
    key = encounter.get("encounter")
    others = [e for e in group.get("encounters") or [] if e != key]
    ident = group.get("id") or encounter.get("proposed_identity")
    if not others:
        return (f"<h4>New turtle {_esc(ident)}</h4><p class='new-group'>Seen in this encounter only on this "
                "survey.</p>")
    links = ", ".join(f"<a href='#card-{_esc(e)}'>{_esc(e)}</a>" for e in others)
    evidence = [v for v in group.get("evidence") or [] if key in (v.get("a"), v.get("b"))] \
        or list(group.get("evidence") or [])
    items = []
    for v in evidence:
        picture = v.get("picture")
        image = ""
        if _exists(survey_dir, picture):
            alt = f"Evidence that {v.get('a')} and {v.get('b')} show the same new turtle {ident}"
            image = (f"<a href='{_href(str(picture))}'><img src='{_href(str(picture))}' alt='{_esc(alt)}' "
                     "loading='lazy'></a>")
        items.append(f"<figure class='evidence'>{image}<figcaption>{_esc(v.get('a'))} ↔ {_esc(v.get('b'))}: "
                     f"{_esc(_score(v.get('score'), encounter.get('score_kind')))}, {_count(v.get('inliers'))} "
                     "inliers</figcaption></figure>")
    return (f"<h4>New turtle {_esc(ident)}</h4><p class='new-group'>The same new turtle as encounter(s) {links} "
            "(one provisional id for all; accept them alike, or rename them to one name).</p>" + "".join(items))


def _decision(row: DecisionRow | None) -> str:
    if row is None:
        return "<p class='decision'>No row in the sheet.</p>"
    if row.decision == ACCEPT:
        text = f"<b>accept</b>: its photos will be enrolled as <b>{_esc(row.final_identity)}</b>"
    elif row.decision == RENAME:
        text = f"<b>rename</b>: its photos will be enrolled as <b>{_esc(row.final_identity)}</b>"
    elif row.decision == REJECT:
        text = "<b>reject</b>: nothing will be enrolled"
    else:
        text = ("<b>undecided</b>: write <code>accept</code>, <code>reject</code> or <code>rename</code> in "
                f"<code>{_esc(DECISIONS_FILE)}</code> (left out of <code>apply</code> until then)")
    return f"<p class='decision' data-decision='{_esc(row.decision or 'undecided')}'>Decision: {text}.</p>"


def _card(encounter: Mapping[str, Any], row: DecisionRow | None, photos: Mapping[str, Mapping[str, Any]],
          others: Sequence[Mapping[str, Any]], survey_dir: Path, photos_root: str | None) -> str:
    key = str(encounter.get("encounter", ""))
    verdict = CONFIDENT if encounter.get("verdict") == CONFIDENT else "review"
    kind = encounter.get("score_kind")
    summary_bits = [
        "confident" if verdict == CONFIDENT else "to review",
        f"new turtle {encounter.get('proposed_identity') or ''}" if encounter.get("new")
        else f"proposed {encounter.get('proposed_identity') or '—'}",
        _score(encounter.get("score"), kind),
        f"{len(encounter.get('photos') or [])} photos",
        "decision: " + ((row.decision or "undecided") if row else "no row"),
    ]
    times = dict.fromkeys(str(t).replace("T", " ") for t in (encounter.get("start"), encounter.get("end")) if t)
    when = " to ".join(_esc(t) for t in times)
    figures = []
    for name in encounter.get("photos") or []:
        photo = photos.get(name, {"photo": name})
        score = f"<br>{_esc(_score(photo.get('score'), kind))}" if _number(photo.get("score")) is not None else ""
        figures.append(_photo_figure(photo, survey_dir, photos_root, score))
    unusable = ""
    if others:
        unusable = ("<h4>Unusable photos of this encounter</h4><ul>" + "".join(
            f"<li><code>{_esc(p.get('photo'))}</code>: {_esc(_unusable_reason(p))}</li>" for p in others) + "</ul>")
    body = (f"<p class='note'>{when or 'no capture time'}</p><h4>Photos</h4><div class='photos'>{''.join(figures)}"
            f"</div>{unusable}{_verdict(encounter)}{_new_group(encounter, survey_dir)}"
            f"{_candidates(encounter, survey_dir)}<h4>Decision</h4>{_decision(row)}")
    opened = "" if verdict == CONFIDENT else " open"
    return (f"<section class='enc' id='card-{_esc(key)}' data-encounter='{_esc(key)}' data-verdict='{verdict}' "
            f"aria-labelledby='title-{_esc(key)}'><details{opened}><summary><h3 id='title-{_esc(key)}'>"
            f"{_esc(key)} · {_esc(' · '.join(summary_bits))}</h3></summary><div class='body'>{body}</div>"
            "</details></section>")


def _unusable_reason(photo: Mapping[str, Any]) -> str:
    status = photo.get("status")
    if status == "duplicate":
        return f"the same bytes as {photo.get('duplicate_of') or 'another photo'}"
    if status == "unreadable":
        return f"unreadable ({photo.get('reason')})" if photo.get("reason") else "unreadable"
    if status == "no_turtle":
        return f"no turtle found ({photo.get('reason')})" if photo.get("reason") else "no turtle found"
    return str(status)


def _unusable_section(photos: Sequence[Mapping[str, Any]], survey_dir: Path, photos_root: str | None) -> str:
    parts = ["<h2 id='unusable'>Unusable photos</h2>"]
    if not any(p.get("status") in UNUSABLE for p in photos):
        return parts[0] + "<p class='note'>None: every photo of the card was used.</p>"
    parts.append("<p class='note'>Listed so that nothing is dropped silently; these photos are in no encounter's "
                 "verdict and are never enrolled.</p>")
    for status, title in UNUSABLE.items():
        members = [p for p in photos if p.get("status") == status]
        if not members:
            continue
        figures = []
        for p in members:
            extra = f"<br>{_esc(_unusable_reason(p))}"
            figures.append(_photo_figure(p, survey_dir, photos_root, extra))
        parts.append(f"<h3 id='unusable-{status}'>{_esc(title)} ({len(members)})</h3><div class='photos' "
                     f"data-status='{status}'>{''.join(figures)}</div>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------- the page

def render_review(survey_dir: str | Path, survey: Mapping[str, Any], rows: Sequence[DecisionRow],
                  banner: str | None = None) -> str:
    """The page for ``survey`` (its ``survey.json``) with the sheet's ``rows``; ``banner``: what is wrong with the
    sheet, when ``rows`` are the run's own proposals instead."""
    survey_dir = Path(survey_dir)
    photos_root = survey.get("photos_root")
    photos = list(survey.get("photos") or [])
    by_name = {str(p.get("photo")): p for p in photos}
    by_key = {r.encounter: r for r in rows}
    ordered = card_order(survey.get("encounters") or [])
    review = [e for e in ordered if e.get("verdict") != CONFIDENT]
    confident = [e for e in ordered if e.get("verdict") == CONFIDENT]

    def cards(group: Sequence[Mapping[str, Any]]) -> str:
        return "".join(_card(e, by_key.get(str(e.get("encounter"))), by_name,
                             [p for p in photos if p.get("encounter") == e.get("encounter")
                              and p.get("status") in UNUSABLE], survey_dir, photos_root) for e in group)

    sections = [
        _header(survey, rows, survey_dir, banner),
        "<main>",
        f"<h2 id='to-review'>To review ({len(review)})</h2>"
        + (cards(review) or "<p class='note'>Nothing to review.</p>"),
        f"<h2 id='confident'>Confident ({len(confident)})</h2>"
        + (cards(confident) or "<p class='note'>No confident verdicts.</p>"),
        _unusable_section(photos, survey_dir, photos_root),
        "</main>",
    ]
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>WildTrack survey review {_esc(survey.get('survey_id', ''))}</title><style>{CSS}</style></head>"
            "<body>\n" + "\n".join(sections) + "\n</body></html>\n")


def write_review(survey_dir: str | Path) -> Path:
    """Render ``SURVEY/review.html`` from ``survey.json`` and ``decisions.csv`` (atomically); a sheet that cannot
    be used is shown as a banner over the run's own proposals. SurveyError when the folder holds no survey."""
    survey_dir = Path(survey_dir)
    survey = load_survey(survey_dir)
    banner = None
    try:
        rows = read_decisions(survey_dir, survey)
    except SurveyError as exc:
        rows, banner = initial_decisions(survey), str(exc)
    path = survey_dir / REVIEW_FILE
    atomic_write_bytes(path, render_review(survey_dir, survey, rows, banner).encode("utf-8"))
    return path
