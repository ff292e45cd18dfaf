"""Checking a catalogue on disk, and repairing what can be repaired: ``wildtrack index check [--repair]``.

A catalogue is rows (meta.csv, embeddings), the photos they name, and the photos' local features (the feature
store's shards). The server copes with a damaged photo or shard one query at a time (it skips it and says so);
this finds all of them at once: every shard's sha256 against the manifest, every photo opened and decoded, and
the rows, the stored features and the files compared. A repair re-extracts the features of readable photos whose
features are missing or damaged, and drops the rows whose photos are gone or unreadable; it commits one new
generation (a running server picks it up) and logs what it did. Nothing is changed without ``repair``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wildtrack.data import storage
from wildtrack.features.store import TABLE_PREFIX, FeatureStore, StoreError
from wildtrack.images import ImageError, open_image
from wildtrack.index import GalleryIndex
from wildtrack.jobs import LocalEngine
from wildtrack.jobs.catalogue import extract_shards, store_files

__all__ = ["CheckReport", "Problem", "check_index"]

log = logging.getLogger(__name__)

CHECK_SIDE = 64  # photos are decoded (JPEG draft) at about this size: enough to find a truncated or broken file


@dataclass(frozen=True)
class Problem:
    """One thing wrong: what (naming the file or image id, relative to the index or data root) and the repair."""

    what: str
    repair: str


@dataclass
class CheckReport:
    index_dir: Path
    rows: int
    photos_checked: int
    shards_checked: int
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # what --repair did

    @property
    def ok(self) -> bool:
        return not self.problems


def check_index(index_dir: str | Path, repair: bool = False,
                progress: Callable[[int], None] | None = None) -> CheckReport:
    """Check the committed catalogue at ``index_dir``; with ``repair``, fix what can be fixed (see the module)."""
    index_dir = Path(index_dir)
    index = GalleryIndex.load(index_dir)  # the data files verify against the manifest, or this raises
    report = CheckReport(index_dir, len(index), 0, 0)
    for note in index.recovery_notes:
        report.problems.append(Problem(f"index files: {note}", "none needed: the next commit rewrites them"))
    root = index.data_root if index.data_root is not None else index_dir
    unreadable = _unreadable_photos(index, root, progress)
    report.photos_checked = len(index)
    for image_id, why in unreadable.items():
        row = index.row(image_id)
        report.problems.append(Problem(f"photo {image_id} ({row.identity}, {row.path}): {why}",
                                       "drop its row (restore the file instead to keep it)"))
    damaged, store = _check_shards(index, index_dir)
    report.shards_checked = len(index.shards)
    for name, why in damaged.items():
        report.problems.append(Problem(f"feature file {name}: {why}", "re-extract its photos' features"))
    pipeline = _pipeline(index, index_dir)
    missing_features: list[str] = []
    if pipeline is not None:
        stored = set(store.shard_of) if store is not None else set()
        damaged_ids = {i for i, name in (store.shard_of.items() if store is not None else ()) if name in damaged}
        missing_features = [r.image_id for r in index.rows if r.image_id not in unreadable
                            and (r.image_id not in stored or r.image_id in damaged_ids)]
        undamaged_missing = [i for i in missing_features if i not in damaged_ids]
        if undamaged_missing:
            report.problems.append(Problem(
                f"{len(undamaged_missing)} photo(s) have no stored local features (e.g. {undamaged_missing[0]}): "
                "searches extract them from the files each time", "extract them into the feature store"))
    if repair and report.problems:
        _repair(index, index_dir, root, pipeline, store, damaged, unreadable, missing_features, report)
    return report


def _unreadable_photos(index: GalleryIndex, root: Path | str,
                       progress: Callable[[int], None] | None) -> dict[str, str]:
    bad: dict[str, str] = {}
    for row in index.rows:
        path = storage.join(root, row.path)
        try:
            if not storage.is_url(path) and not Path(path).is_file():
                bad[row.image_id] = "its file is missing"
            else:
                open_image(storage.photo_source(path), size=(CHECK_SIDE, CHECK_SIDE)).load()
        except (ImageError, OSError) as exc:
            bad[row.image_id] = f"its file cannot be read ({type(exc).__name__})"
        if progress:
            progress(1)
    return bad


def _check_shards(index: GalleryIndex, index_dir: Path) -> tuple[dict[str, str], FeatureStore | None]:
    """Damaged store files (name -> why), and the store when its table is usable."""
    damaged: dict[str, str] = {}
    for name, expect in index.shards.items():
        path = index_dir / name
        if not path.is_file():
            damaged[name] = "missing"
            continue
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if path.stat().st_size != expect.get("bytes") or digest != expect.get("sha256"):
            damaged[name] = "does not match the sha256 its manifest records (changed or damaged)"
    table = [n for n in index.shards if Path(n).name.startswith(TABLE_PREFIX)]
    if not index.shards or any(n in damaged for n in table):
        return damaged, None
    try:
        return damaged, FeatureStore(index_dir, index.shards)
    except (StoreError, OSError, ValueError, KeyError) as exc:
        damaged.setdefault(table[0] if table else "features/", f"unusable ({exc})")
        return damaged, None


def _pipeline(index: GalleryIndex, index_dir: Path):
    """The index's fitted matching pipeline (its extractor re-extracts damaged features), or None."""
    from wildtrack.matching.pipeline import committed_pipeline

    return committed_pipeline(index, index_dir)


def _repair(index: GalleryIndex, index_dir: Path, root: Path | str, pipeline, store: FeatureStore | None,
            damaged: dict[str, str], unreadable: dict[str, str], missing_features: list[str],
            report: CheckReport) -> None:
    repaired = index.without(unreadable) if unreadable else index
    for image_id in unreadable:
        line = f"dropped row {image_id} ({index.row(image_id).path}): {unreadable[image_id]}"
        log.warning("index check --repair: %s", line)
        report.repaired.append(line)
    shards = None
    if pipeline is not None and (damaged or missing_features):
        extractor = pipeline.extractor
        items = [(i, storage.join(root, index.row(i).path)) for i in missing_features]
        new = extract_shards(LocalEngine(), extractor, items, index_dir) if items else {}
        keep = {n: e for n, e in index.shards.items() if n not in damaged} if store is not None else {}
        shards = store_files(index_dir, extractor, new, keep)
        line = f"re-extracted the local features of {len(items)} photo(s)"
        log.warning("index check --repair: %s", line)
        report.repaired.append(line)
    repaired.save(index_dir, shards=shards)
