"""Procedural synthetic sea-turtle heads: a stand-in dataset for demos and tests (real photos can't ship).

Each identity is a head silhouette tiled with polygonal "scales" (a Voronoi tessellation, like the facial
scutes that real re-identification relies on) whose layout, colours and seams are fixed per individual.
Every image re-renders that template with a random pose, crop, blur, colour cast, noise and background.

The generator deliberately reproduces the trap of real field data: one encounter (one turtle, one day) shares
its scenery and lighting, and every encounter draws these independently. A model that learns the
scenery instead of the scales looks great on random splits and fails on time-aware ones, exactly as with
real photos.

Every random draw is seeded from ``(seed, stream, identity, encounter/image)``, so the output is
byte-identical whatever the worker count or scheduling.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from wildtrack.data.synth.common import (
    _FILE_RE,
    _SPAN_DAYS,
    MAX_IMAGE_SIZE,
    METADATA_COLUMNS,
    METADATA_NAME,
    MIN_IMAGE_SIZE,
    Progress,
)
from wildtrack.data.synth.plan import _ImageSpec, _plan
from wildtrack.data.synth.render import _render_identity

__all__ = ["METADATA_COLUMNS", "METADATA_NAME", "generate_synthetic"]



def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _previous_files(out_dir: Path) -> list[str] | None:
    """Files listed by a previous synth run's metadata.csv, or None if the folder is not one."""
    meta = out_dir / METADATA_NAME
    if not meta.is_file():
        return None
    try:
        with meta.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            if tuple(next(reader, ())) != METADATA_COLUMNS:
                return None
            names = [row[0] for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return names if all(_FILE_RE.match(n) for n in names) else None


def _prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir``, or clear a previous synth output from it; never touch anyone else's files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        out_dir.mkdir(parents=True, exist_ok=True)
        return
    previous = _previous_files(out_dir)
    if previous is None:
        raise ValueError(
            f"{out_dir} is not empty and is not a previous synthetic dataset (no {METADATA_NAME} with columns "
            f"{','.join(METADATA_COLUMNS)}); refusing to write into it. Choose an empty or new folder."
        )
    # Remove only what the previous run wrote, so a smaller new dataset leaves no stale identities behind.
    for name in previous:
        (out_dir / name).unlink(missing_ok=True)
    for name in sorted({n.split("/")[0] for n in previous}):
        folder = out_dir / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (out_dir / METADATA_NAME).unlink()


def _write_metadata(out_dir: Path, plan: list[list[_ImageSpec]]) -> None:
    """Written before the images, so an interrupted run is still recognised (and overwritten) next time."""
    tmp = out_dir / (METADATA_NAME + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(METADATA_COLUMNS)
        for specs in plan:
            for s in specs:
                writer.writerow([s.file_name, s.name, s.date, f"{s.name}_e{s.encounter}"])
    os.replace(tmp, out_dir / METADATA_NAME)


def generate_synthetic(
    out_dir: str | Path,
    identities: int = 20,
    images_per_id: int = 8,
    image_size: int = 128,
    encounters_per_id: int = 3,
    seed: int = 0,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write a synthetic re-identification dataset and return its folder.

    Layout: ``out_dir/<identity>/<identity>_<k>.jpg`` plus ``out_dir/metadata.csv`` with columns
    ``file_name,identity,date,encounter`` (``file_name`` relative to ``out_dir``, ``date`` ISO, ``encounter`` a
    label like ``t000_e1`` unique across the dataset). Image indices increase with the encounter date.
    Each identity gets ``min(encounters_per_id, images_per_id)`` encounters on distinct dates, each with at
    least one image. ``progress(n)`` is called with the number of images *just* finished (an increment, as
    ``tqdm.update`` expects), once per identity. The output is byte-identical for the same arguments and
    seed whatever ``workers`` is. A non-empty folder that is not a previous synthetic output is refused.
    """
    identities = _check_int("identities", identities, 1)
    images_per_id = _check_int("images_per_id", images_per_id, 1)
    image_size = _check_int("image_size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    encounters_per_id = _check_int("encounters_per_id", encounters_per_id, 1, _SPAN_DAYS)
    seed = _check_int("seed", seed, 0)
    if workers is not None:
        workers = _check_int("workers", workers, 1)
    workers = workers or os.cpu_count() or 1

    out = Path(out_dir)
    _prepare_out_dir(out)
    plan = _plan(identities, images_per_id, encounters_per_id, seed)
    _write_metadata(out, plan)

    if workers == 1:
        for specs in plan:
            n = _render_identity(seed, specs, image_size, out)
            if progress is not None:
                progress(n)
        return out
    # Threads, not processes: OpenCV and numpy release the GIL for the heavy work, and threads are safe to
    # start from a process that has already loaded TensorFlow (fork is not).
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_render_identity, seed, specs, image_size, out) for specs in plan]
        try:
            for fut in as_completed(futures):
                n = fut.result()
                if progress is not None:
                    progress(n)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return out
