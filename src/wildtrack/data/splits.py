"""Query/gallery/train splits. Every split is deterministic given its seed and says what the data lacks.

* ``per-identity`` (the original design's): one random query image per identity with ≥ 2 images, the rest is
  gallery. Queries usually come from the same encounter as some gallery image, so figures are optimistic.
* ``time-aware``: for each identity seen on ≥ 2 dates, the images of its latest encounter are queries and the
  earlier encounters are the gallery: new encounters against the catalogue, as in the field.
* ``official``: the dataset's own ``split_closed`` (or ``split_open``) column: ``train`` rows are gallery and
  training data, ``valid`` (or ``test``) rows are queries.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from wildtrack.data.records import Record

SplitName = Literal["per-identity", "time-aware", "official"]
SPLIT_NAMES: tuple[str, ...] = ("per-identity", "time-aware", "official")


class SplitError(ValueError):
    """The data cannot support the requested split; the message says what is missing."""


@dataclass
class Split:
    """Explicit lists: ``train`` to fit on, ``gallery`` to search, ``query`` to evaluate."""

    name: str
    train: list[Record]
    gallery: list[Record]
    query: list[Record]

    def summary(self) -> dict[str, int | str]:
        return {
            "split": self.name,
            "train_images": len(self.train),
            "train_ids": len({r.identity for r in self.train}),
            "gallery_images": len(self.gallery),
            "query_images": len(self.query),
            "query_ids": len({r.identity for r in self.query}),
        }


def _by_identity(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.relpath):
        groups[r.identity].append(r)
    return dict(sorted(groups.items()))


def _validate(split: Split) -> Split:
    train_ids = {r.identity for r in split.train}
    if len(train_ids) < 2:
        raise SplitError(
            f"{split.name} split leaves {len(train_ids)} identity for training/gallery; at least 2 identities "
            "are needed (a 1-class softmax cannot learn, and retrieval needs someone to confuse)"
        )
    if not split.query:
        raise SplitError(f"{split.name} split has no query images: {_query_hint(split.name)}")
    return split


def _query_hint(name: str) -> str:
    return {
        "per-identity": "no identity has 2 or more images",
        "time-aware": "no identity was photographed on 2 or more dates (dates come from metadata or EXIF)",
        "official": "no rows are marked for evaluation in the split column",
    }.get(name, "")


def per_identity_split(records: list[Record], seed: int = 0) -> Split:
    """One seeded random query per identity with ≥ 2 images; identities with one image are gallery only."""
    rng = random.Random(seed)
    query, gallery = [], []
    for _identity, items in _by_identity(records).items():
        if len(items) >= 2:
            pick = rng.randrange(len(items))
            query.append(items[pick])
            gallery.extend(r for i, r in enumerate(items) if i != pick)
        else:
            gallery.extend(items)
    return _validate(Split("per-identity", train=list(gallery), gallery=gallery, query=query))


def time_aware_split(records: list[Record], seed: int = 0) -> Split:
    """Latest encounter of each multi-date identity as queries; all earlier encounters as gallery.

    ``seed`` is accepted for a uniform interface; the rule itself involves no chance.
    """
    del seed
    if not any(r.date for r in records):
        raise SplitError(
            "time-aware split needs encounter dates, and none were found (add a 'date' column to metadata.csv "
            "or use photos with EXIF DateTimeOriginal)"
        )
    query, gallery = [], []
    for _identity, items in _by_identity(records).items():
        dates = sorted({r.date for r in items if r.date is not None})
        if len(dates) < 2:
            gallery.extend(items)
            continue
        last = dates[-1]
        query.extend(r for r in items if r.date == last)
        gallery.extend(r for r in items if r.date != last)
    return _validate(Split("time-aware", train=list(gallery), gallery=gallery, query=query))


def official_split(records: list[Record], column: str = "split_closed", query_part: str | None = None) -> Split:
    """The dataset's own split: ``train`` rows → train + gallery, ``valid`` (else ``test``) rows → queries."""
    values = [r.meta.get(column) for r in records]
    if not any(values):
        raise SplitError(
            f"official split needs a '{column}' column in the metadata CSV (SeaTurtleID2022 layout); "
            "this dataset has none: use --split time-aware or per-identity"
        )
    present = set(values)
    part = query_part or ("valid" if "valid" in present else "test")
    train = [r for r in records if r.meta.get(column) == "train"]
    query = [r for r in records if r.meta.get(column) == part]
    split = Split("official", train=train, gallery=list(train), query=query)
    return _validate(split)


def make_split(records: list[Record], name: str, seed: int = 0, column: str = "split_closed") -> Split:
    if name == "per-identity":
        return per_identity_split(records, seed)
    if name == "time-aware":
        return time_aware_split(records, seed)
    if name == "official":
        return official_split(records, column=column)
    raise SplitError(f"unknown split {name!r}; choose one of {', '.join(SPLIT_NAMES)}")


def default_split_name(records: list[Record]) -> str:
    """The most honest split the data supports: official, else time-aware, else per-identity."""
    if any(r.meta.get("split_closed") for r in records):
        return "official"
    by_id = _by_identity(records)
    if any(len({r.date for r in items if r.date}) >= 2 for items in by_id.values()):
        return "time-aware"
    return "per-identity"


def validation_split(train: list[Record], seed: int = 0) -> Split:
    """Hold out part of the training data for per-epoch validation by retrieval.

    Time-aware when dates allow (the honest choice: random hold-outs overstate accuracy), else per-identity.
    The returned split's ``train`` is what remains to fit on: gallery images stay in training, queries do not.
    """
    try:
        split = time_aware_split(train, seed)
    except SplitError:
        split = per_identity_split(train, seed)
    held = {r.relpath for r in split.query}
    split.train = [r for r in train if r.relpath not in held]
    return split
