"""The data layer reads both layouts, survives bad files, and splits deterministically and honestly."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wildtrack.data import (
    DatasetError,
    SkippedFilesWarning,
    SplitError,
    load_dataset,
    make_split,
    official_split,
    per_identity_split,
    time_aware_split,
    validation_split,
)
from wildtrack.images import ImageError, load_image, open_image


def _photo(path: Path, colour=(200, 120, 40), size=(64, 48), **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **save)
    return path


def _plain(root: Path, ids: int = 3, per_id: int = 4) -> Path:
    for i in range(ids):
        for k in range(per_id):
            _photo(root / f"id{i}" / f"img{k}.jpg", colour=(40 * i, 20 * k, 90))
    return root


def _kaggle(root: Path) -> Path:
    rows = []
    for i in range(3):
        for k in range(4):
            rel = f"images/t{i:03d}/p{k}.JPG"
            _photo(root / rel)
            day = 1 + k // 2  # two encounters per identity
            rows.append({"id": len(rows), "file_name": rel, "identity": f"t{i:03d}", "date": f"2020-07-0{day}",
                         "timestamp": f"2020-07-0{day} 10:00:00", "split_closed": "train" if day == 1 else "valid",
                         "split_open": "train"})
    with open(root / "metadata_splits.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


# --- layouts ---------------------------------------------------------------------------------------------------

def test_plain_layout_is_detected_and_read(tmp_path):
    ds = load_dataset(_plain(tmp_path / "d"))
    assert ds.layout == "plain"
    assert ds.identities == ["id0", "id1", "id2"]
    assert len(ds.records) == 12
    assert all(r.relpath.startswith(r.identity + "/") for r in ds.records)


def test_seaturtle_layout_reads_metadata_dates_and_split_columns(tmp_path):
    ds = load_dataset(_kaggle(tmp_path / "k"))
    assert ds.layout == "seaturtleid2022"
    assert len(ds.records) == 12
    assert {r.date.isoformat() for r in ds.records} == {"2020-07-01", "2020-07-02"}
    assert {r.meta["split_closed"] for r in ds.records} == {"train", "valid"}


def test_synthetic_output_reads_as_plain_layout_with_dates(synth_data):
    ds = load_dataset(synth_data)
    assert ds.layout == "plain" and len(ds.identities) == 12 and len(ds.records) == 120
    assert all(r.date is not None for r in ds.records)


def test_exif_dates_are_used_when_no_metadata(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2019:06:15 11:22:33"
    for ident in ("a", "b"):
        _photo(tmp_path / ident / "x.jpg", exif=exif.tobytes())
    ds = load_dataset(tmp_path)
    assert {r.date.isoformat() for r in ds.records} == {"2019-06-15"}


# --- bad input ---------------------------------------------------------------------------------------------------

def _bad_files(root: Path) -> dict[str, Path]:
    good = _plain(root, ids=2, per_id=2)
    files = {
        "corrupt": good / "id0" / "corrupt.jpg",
        "zero": good / "id0" / "zero.jpg",
        "text": good / "id1" / "notes.jpg",
        "other": good / "id1" / "readme.txt",
    }
    data = (good / "id0" / "img0.jpg").read_bytes()
    files["corrupt"].write_bytes(data[: len(data) // 3])
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not a photo")
    files["other"].write_text("notes")
    return files


def test_unusable_files_are_skipped_with_one_warning_naming_each(tmp_path):
    files = _bad_files(tmp_path)
    with pytest.warns(SkippedFilesWarning) as caught:
        ds = load_dataset(tmp_path)
    assert len(caught) == 1
    message = str(caught[0].message)
    for path in files.values():
        assert str(path) in message
    assert len(ds.records) == 4
    assert {p for p, _ in ds.skipped} == set(files.values())


def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("hi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match="no usable images"):
            load_dataset(tmp_path)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    ext = "jpg" if mode in ("L", "CMYK") else "png"
    path = tmp_path / f"x.{ext}"
    Image.new(mode, (40, 30)).save(path)
    arr = load_image(path, 32)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(values).save(path)
    arr = load_image(path, 64)
    assert arr.shape == (64, 64, 3)
    assert arr.min() == 0 and arr.max() >= 250  # the full 16-bit range maps onto 0..255


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90° clockwise
    Image.new("RGB", (80, 40), (10, 200, 10)).save(path, exif=exif.tobytes())
    assert open_image(path).size == (40, 80)


def test_uppercase_extensions_and_webp_bmp_are_images(tmp_path):
    for name in ("a/one.JPG", "a/two.PnG", "b/three.webp", "b/four.BMP"):
        _photo(tmp_path / name, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}[
            name.rsplit(".", 1)[1].lower()])
    assert len(load_dataset(tmp_path).records) == 4


def test_large_jpeg_is_draft_decoded_below_full_size(tmp_path):
    path = _photo(tmp_path / "big.jpg", size=(2000, 1333))
    assert open_image(path, size=(224, 224)).size[0] < 2000  # DCT scaling happened
    assert load_image(path, 224).shape == (224, 224, 3)


def test_decompression_bombs_are_refused(tmp_path):
    path = _photo(tmp_path / "wide.png", size=(4000, 3000))
    with pytest.raises(ImageError, match="exceeds"):
        open_image(path, max_pixels=1_000_000)


# --- splits -----------------------------------------------------------------------------------------------------

def _ids(records):
    return {r.relpath for r in records}


@pytest.mark.parametrize("name", ["per-identity", "time-aware"])
def test_splits_are_disjoint_and_deterministic(synth_data, name):
    records = load_dataset(synth_data).records
    a, b = make_split(records, name, seed=3), make_split(records, name, seed=3)
    assert _ids(a.query) == _ids(b.query)
    assert not _ids(a.query) & _ids(a.gallery)
    assert _ids(a.query) | _ids(a.gallery) == _ids(records)


def test_per_identity_split_has_one_query_per_identity(synth_data):
    split = per_identity_split(load_dataset(synth_data).records, seed=0)
    assert len(split.query) == 12 and len({r.identity for r in split.query}) == 12
    assert _ids(per_identity_split(load_dataset(synth_data).records, seed=1).query) != _ids(split.query)


def test_time_aware_queries_are_encounters_the_gallery_does_not_contain(synth_data):
    split = time_aware_split(load_dataset(synth_data).records)
    gallery_encounters = {r.encounter for r in split.gallery}
    assert split.query
    for q in split.query:
        assert q.encounter not in gallery_encounters
        assert q.date > max(g.date for g in split.gallery if g.identity == q.identity)


def test_time_aware_identities_seen_once_stay_in_gallery(tmp_path):
    root = _kaggle(tmp_path / "k")
    with open(root / "metadata_splits.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["identity"] == "t000":
            row["date"] = "2020-07-01"
    with open(root / "metadata_splits.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    split = time_aware_split(load_dataset(root).records)
    assert "t000" not in {r.identity for r in split.query}
    assert sum(r.identity == "t000" for r in split.gallery) == 4


def test_official_split_uses_the_dataset_columns(tmp_path):
    split = official_split(load_dataset(_kaggle(tmp_path / "k")).records)
    assert all(r.meta["split_closed"] == "valid" for r in split.query)
    assert all(r.meta["split_closed"] == "train" for r in split.gallery)
    assert split.train == split.gallery


def test_official_split_without_columns_says_what_is_missing(synth_data):
    with pytest.raises(SplitError, match="split_closed"):
        official_split(load_dataset(synth_data).records)


def test_time_aware_split_without_dates_says_so(tmp_path):
    with pytest.raises(SplitError, match="dates"):
        time_aware_split(load_dataset(_plain(tmp_path)).records)


def test_single_identity_folder_cannot_be_split(tmp_path):
    for k in range(4):
        _photo(tmp_path / "only" / f"{k}.jpg")
    records = load_dataset(tmp_path).records
    with pytest.raises(SplitError, match="at least 2 identities"):
        per_identity_split(records)


def test_one_image_per_identity_gives_no_queries(tmp_path):
    for i in range(3):
        _photo(tmp_path / f"id{i}" / "a.jpg")
    with pytest.raises(SplitError, match="no query"):
        per_identity_split(load_dataset(tmp_path).records)


def test_validation_split_holds_out_new_encounters_from_training(synth_data):
    records = load_dataset(synth_data).records
    val = validation_split(records)
    held = _ids(val.query)
    assert held and not held & _ids(val.train)
    assert _ids(val.gallery) <= _ids(val.train)


# --- the real SeaTurtleID2022 sample (skipped when ../shared is absent) -----------------------------------------

@pytest.mark.realdata
def test_real_seaturtle_sample(real_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no file of the real sample may be skipped
        ds = load_dataset(real_data, verify=False)
    assert ds.layout == "seaturtleid2022"
    assert len(ds.identities) == 22 and len(ds.records) == 388
    assert all(r.date for r in ds.records)
    split = official_split(ds.records)
    assert len(split.query) == 114 and len(split.gallery) == 274
    assert load_image(ds.records[0].path, 224).shape == (224, 224, 3)


def test_copy_of_dataset_gives_same_fingerprint(tmp_path):
    a = _plain(tmp_path / "a")
    shutil.copytree(a, tmp_path / "b")
    assert load_dataset(a).fingerprint() == load_dataset(tmp_path / "b").fingerprint()
