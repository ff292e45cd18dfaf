"""A generated field card: one day of survey photos as a camera leaves them, for the demo and the tests.

A team's card is a flat folder of ``IMG_0001.JPG``… with the capture time in each file's EXIF
``DateTimeOriginal``, no identities anywhere. :func:`generate_card` draws one: a few encounters of turtles the
catalogue knows (fresh poses and fresh scenery, as on a new day), two of them met within the same minute, one
turtle the catalogue has never seen met twice that day, plus what real cards also hold: a frame of open water
with no turtle, the same photo copied twice and a file cut short by a full card. What each photo truly shows is
returned (and never written into the card), so a test or a demo can check what ``wildtrack survey`` made of it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wildtrack.data.synth.common import JPEG_QUALITY, _rng
from wildtrack.data.synth.plan import _ImageSpec
from wildtrack.data.synth.render import _render_image
from wildtrack.data.synth.scene import _encounter_look
from wildtrack.data.synth.turtle import _render_template
from wildtrack.images import DATETIME_ORIGINAL, EXIF_IFD

__all__ = ["CardPhoto", "generate_card", "write_truth"]

CARD_ENCOUNTER = 1000  # encounter and image numbers far beyond a catalogue's: new scenery and poses
_S_CARD = 97  # the card's own random stream (open water)


@dataclass(frozen=True)
class CardPhoto:
    """One file of the card and what it truly shows: ``identity`` (the generator's name, e.g. ``t003``; empty
    for a photo without a turtle) and ``encounter`` (``E1``…, in time order; empty when none)."""

    file: str
    identity: str
    encounter: str
    taken: datetime | None
    kind: str = "turtle"  # turtle | no_turtle | duplicate | unreadable


def generate_card(out: str | Path, known: Sequence[int], unknown: Sequence[int] = (), *, seed: int = 0,
                  photos_per_encounter: int = 3, image_size: int = 128, day: date = date(2026, 7, 1),
                  extras: bool = True) -> list[CardPhoto]:
    """Write a card to ``out`` (created; must be empty) and return its truth, file by file in name order.

    ``known``: identity numbers of the catalogue's generator (same ``seed``), one encounter each, half an hour
    apart, except that the last two are met within one minute (their photos interleave in time). ``unknown``:
    identity numbers the catalogue does not hold, each met twice (morning and afternoon). ``extras``: add an
    open-water frame, a byte-for-byte duplicate and a truncated file.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: a card is generated into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    width = len(str(max(len(known), 1)))
    morning = datetime.combine(day, datetime.min.time()) + timedelta(hours=9)
    shots: list[tuple[datetime, int, int, str]] = []  # (time, identity, encounter number, encounter label)
    n = 0
    pair = len(known) - 2 if len(known) >= 2 else None  # known[pair] and known[pair + 1] share one minute
    for k, identity in enumerate(known):
        in_pair = pair is not None and k >= pair
        start = morning + timedelta(minutes=30 * (pair if in_pair else k), seconds=8 if in_pair and k > pair else 0)
        n += 1
        for j in range(photos_per_encounter):  # 20 s apart within the shared minute, so the photos interleave
            shots.append((start + timedelta(seconds=(20 if in_pair else 40) * j), identity, n, f"E{n}"))
    afternoon = morning + timedelta(hours=4)
    for u, identity in enumerate(unknown):
        for visit, base in enumerate((morning + timedelta(minutes=30 * len(known) + 15 * u),
                                      afternoon + timedelta(minutes=15 * u))):
            n += 1
            for j in range(photos_per_encounter):
                shots.append((base + timedelta(seconds=40 * j), identity, n + 10 * visit, f"E{n}"))
    shots.sort(key=lambda s: (s[0], s[1]))
    labels = {label: f"E{i + 1:0{width}d}" for i, label in enumerate(dict.fromkeys(s[3] for s in shots))}
    photos: list[CardPhoto] = []
    templates: dict[int, object] = {}
    for number, (taken, identity, encounter, label) in enumerate(shots, start=1):
        if identity not in templates:
            templates[identity] = _render_template(seed, identity, image_size * 2)
        look = _encounter_look(seed, identity, CARD_ENCOUNTER + encounter, image_size)
        spec = _ImageSpec(identity, f"t{identity:03d}", CARD_ENCOUNTER + number, encounter, day.isoformat(), "")
        name = f"IMG_{number:04d}.JPG"
        _write_jpeg(out / name, _render_image(seed, spec, templates[identity], look, image_size), taken)
        photos.append(CardPhoto(name, f"t{identity:03d}", labels[label], taken))
    if extras:
        last = len(shots)
        water_time = morning - timedelta(minutes=20)
        _write_jpeg(out / f"IMG_{last + 1:04d}.JPG", _open_water(seed, image_size), water_time)
        photos.append(CardPhoto(f"IMG_{last + 1:04d}.JPG", "", "", water_time, "no_turtle"))
        first = photos[0]
        (out / f"IMG_{last + 2:04d}.JPG").write_bytes((out / first.file).read_bytes())
        photos.append(CardPhoto(f"IMG_{last + 2:04d}.JPG", first.identity, first.encounter, first.taken,
                                "duplicate"))
        cut = (out / photos[1].file).read_bytes()
        (out / f"IMG_{last + 3:04d}.JPG").write_bytes(cut[: len(cut) // 3])
        photos.append(CardPhoto(f"IMG_{last + 3:04d}.JPG", "", "", None, "unreadable"))
    return sorted(photos, key=lambda p: p.file)


def write_truth(path: str | Path, photos: Sequence[CardPhoto]) -> Path:
    """The card's truth as CSV (``file,identity,encounter,taken,kind``), kept outside the card folder."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["file", "identity", "encounter", "taken", "kind"])
        for p in photos:
            w.writerow([p.file, p.identity, p.encounter, p.taken.isoformat() if p.taken else "", p.kind])
    return path


def _write_jpeg(path: Path, data: bytes, taken: datetime) -> None:
    """The rendered JPEG again, with ``DateTimeOriginal`` in its EXIF as a camera writes it."""
    img = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = taken.strftime("%Y:%m:%d %H:%M:%S")
    img.save(path, format="JPEG", quality=JPEG_QUALITY, exif=exif)


def _open_water(seed: int, size: int) -> bytes:
    """A frame of open water: a soft blue gradient with sensor noise, blurred, nothing to match."""
    rng = _rng(seed, _S_CARD, 0)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    top, bottom = np.array([40, 140, 190], np.float32), np.array([10, 60, 110], np.float32)
    img = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), 3)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return buf.tobytes()
