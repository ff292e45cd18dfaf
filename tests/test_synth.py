"""The synthetic dataset generator: layout, metadata, determinism, validation and never clobbering a folder."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wildtrack.data.synth import METADATA_COLUMNS, generate_synthetic

SMALL = {"identities": 3, "images_per_id": 5, "image_size": 64, "encounters_per_id": 2, "seed": 7}


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root (relative posix path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "metadata.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == METADATA_COLUMNS
        return list(reader)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", workers=2, **SMALL)


def test_layout_and_counts(small: Path) -> None:
    assert sorted(p.name for p in small.iterdir()) == ["metadata.csv", "t000", "t001", "t002"]
    for ident in ("t000", "t001", "t002"):
        names = sorted(p.name for p in (small / ident).iterdir())
        assert names == [f"{ident}_{k:03d}.jpg" for k in range(5)]


def test_metadata_rows_match_files(small: Path) -> None:
    rows = _rows(small)
    assert len(rows) == 15
    assert sorted(r["file_name"] for r in rows) == sorted(
        p.relative_to(small).as_posix() for p in small.rglob("*.jpg")
    )
    for r in rows:
        assert re.fullmatch(r"t\d{3}/t\d{3}_\d{3}\.jpg", r["file_name"])
        assert r["file_name"].split("/")[0] == r["identity"]
        date.fromisoformat(r["date"])  # raises if not ISO YYYY-MM-DD
        assert r["encounter"].startswith(r["identity"] + "_e")


def test_encounters_have_distinct_dates_in_file_order(small: Path) -> None:
    by_id: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in _rows(small):
        by_id[r["identity"]].append(r)
    for rows in by_id.values():
        rows.sort(key=lambda r: r["file_name"])
        dates = [r["date"] for r in rows]
        assert len(set(dates)) == 2, "every encounter should get at least one image"
        assert dates == sorted(dates), "image index increases with time"
        # One encounter label per date, and vice versa.
        assert len({(r["encounter"], r["date"]) for r in rows}) == len({r["encounter"] for r in rows}) == 2
    spans = {min(r["date"] for r in rows) for rows in by_id.values()}
    assert len(spans) > 1, "identities should not share the same first date"


def test_images_decode_to_requested_size_and_are_not_blank(small: Path) -> None:
    for path in sorted(small.rglob("*.jpg")):
        with Image.open(path) as img:
            assert img.format == "JPEG"
            assert img.size == (64, 64)
            arr = np.asarray(img.convert("RGB"), dtype=np.float32)
        assert arr.std() > 10, f"{path} looks blank"


@pytest.mark.parametrize("size", [32, 96])
def test_other_image_sizes(tmp_path: Path, size: int) -> None:
    out = generate_synthetic(tmp_path / "d", identities=1, images_per_id=2, image_size=size, workers=1)
    for path in out.rglob("*.jpg"):
        with Image.open(path) as img:
            assert img.size == (size, size)


def test_same_seed_is_byte_identical_and_worker_count_does_not_matter(small: Path, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path / "again", workers=1, **SMALL)
    assert _files(again) == _files(small)


def test_different_seed_changes_images(small: Path, tmp_path: Path) -> None:
    other = generate_synthetic(tmp_path / "other", workers=1, **{**SMALL, "seed": 8})
    a, b = _files(small), _files(other)
    assert a.keys() == b.keys()
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != b[k] for k in jpgs)


def test_identities_and_images_differ(small: Path) -> None:
    data = _files(small)
    jpgs = [v for k, v in data.items() if k.endswith(".jpg")]
    assert len(set(jpgs)) == len(jpgs)


def test_fewer_images_than_encounters(tmp_path: Path) -> None:
    out = generate_synthetic(tmp_path / "d", identities=2, images_per_id=2, encounters_per_id=5, image_size=32)
    rows = _rows(out)
    assert len(rows) == 4
    for ident in ("t000", "t001"):
        assert len({r["date"] for r in rows if r["identity"] == ident}) == 2


def test_progress_counts_every_image(tmp_path: Path) -> None:
    seen: list[int] = []
    generate_synthetic(tmp_path / "d", identities=3, images_per_id=2, image_size=32, workers=2,
                       progress=seen.append)
    assert sum(seen) == 6
    assert all(n > 0 for n in seen)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"identities": 0}, "identities"),
        ({"images_per_id": 0}, "images_per_id"),
        ({"image_size": 31}, "image_size"),
        ({"image_size": 100_000}, "image_size"),
        ({"encounters_per_id": 0}, "encounters_per_id"),
        ({"encounters_per_id": 10_000}, "encounters_per_id"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
        ({"identities": 2.5}, "integer"),
        ({"identities": True}, "integer"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_synthetic(tmp_path / "d", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists(), "nothing should be written when the arguments are invalid"


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="refusing"):
        generate_synthetic(tmp_path, identities=1, images_per_id=1, image_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_refuses_a_folder_whose_metadata_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("file_name,identity\nphotos/a.jpg,kira\n")
    with pytest.raises(ValueError, match="refusing"):
        generate_synthetic(tmp_path, identities=1, images_per_id=1, image_size=32)
    assert (tmp_path / "metadata.csv").read_text().startswith("file_name,identity\n")


def test_refuses_a_file_path(tmp_path: Path) -> None:
    target = tmp_path / "file.jpg"
    target.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a directory"):
        generate_synthetic(target, identities=1, images_per_id=1, image_size=32)


def test_overwrites_previous_output_without_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "d"
    generate_synthetic(out, identities=3, images_per_id=2, image_size=32)
    (out / "README.txt").write_text("user note")
    generate_synthetic(out, identities=2, images_per_id=1, image_size=32, seed=1)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.txt", "metadata.csv", "t000/t000_000.jpg", "t001/t001_000.jpg",
    ]
    assert len(_rows(out)) == 2


def test_empty_existing_folder_is_fine(tmp_path: Path) -> None:
    out = generate_synthetic(tmp_path, identities=1, images_per_id=1, image_size=32)
    assert out == tmp_path
    assert len(_rows(out)) == 1
