"""Start-up recovery of interrupted enrolments never reaches outside the catalogue: it follows no symbolic link,
deletes only files it could have written (content-hash names in real folders under the index) and logs each."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

HASH_NAME = "0123456789abcdef0123456789abcdef.jpg"
OTHER_HASH = "fedcba9876543210fedcba9876543210.jpg"


@pytest.fixture
def index(tmp_path):
    """A committed catalogue of two photos under ``tmp_path/data`` (no model needed: random unit vectors)."""
    from wildtrack.index import GalleryIndex

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"path": f"t001/{n}.jpg", "identity": "t001"} for n in range(2)]
    gallery = GalleryIndex.build(np.random.default_rng(0).standard_normal((2, 8)), rows, "test-model",
                                 data_root=data)
    gallery.save(tmp_path / "index")
    return gallery, tmp_path


def _recover(index, caplog):
    from wildtrack.workflows.enrolment import recover_enrolments

    gallery, base = index
    with caplog.at_level(logging.INFO, logger="wildtrack.workflows.enrolment"):
        return recover_enrolments(base / "index", base / "data", gallery)


def _outside(base: Path) -> list[Path]:
    outside = base / "elsewhere"
    outside.mkdir()
    files = [outside / name for name in ("notes.txt", "IMG_0001.jpg", HASH_NAME)]
    (outside / "sub").mkdir()
    files.append(outside / "sub" / OTHER_HASH)
    for f in files:
        f.write_bytes(b"precious")
    return files


def test_a_linked_staging_folder_is_not_followed(index, caplog):
    _, base = index
    files = _outside(base)
    staging = base / "index" / "enrolled" / ".staging"
    staging.mkdir(parents=True)
    (staging / "99999").symlink_to(base / "elsewhere", target_is_directory=True)
    result = _recover(index, caplog)
    assert all(f.read_bytes() == b"precious" for f in files)
    assert result.removed == 0
    assert "99999" in caplog.text and "left alone" in caplog.text


def test_a_linked_identity_folder_is_not_followed(index, caplog):
    _, base = index
    files = _outside(base)
    enrolled = base / "index" / "enrolled"
    enrolled.mkdir()
    (enrolled / "t001").symlink_to(base / "elsewhere", target_is_directory=True)
    _recover(index, caplog)
    assert all(f.read_bytes() == b"precious" for f in files)


def test_an_enrolled_folder_on_another_disk_loses_nothing(index, caplog):
    """``enrolled/`` linked to a bigger disk: files there that the index does not name are not deleted."""
    _, base = index
    files = _outside(base)
    (base / "index" / "enrolled").symlink_to(base / "elsewhere", target_is_directory=True)
    result = _recover(index, caplog)
    assert all(f.read_bytes() == b"precious" for f in files)
    assert result.removed == 0 and "symbolic link" in caplog.text


def test_only_own_orphans_are_removed_and_each_is_logged(index, caplog):
    _, base = index
    folder = base / "index" / "enrolled" / "t002"
    folder.mkdir(parents=True)
    orphan, foreign = folder / HASH_NAME, folder / "field-notes.txt"
    orphan.write_bytes(b"orphan")
    foreign.write_bytes(b"keep me")
    staged = base / "index" / "enrolled" / ".staging" / "99999" / "t002" / OTHER_HASH
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"never committed")
    result = _recover(index, caplog)
    assert not orphan.exists() and not staged.exists()
    assert foreign.read_bytes() == b"keep me"
    assert result.removed == 2
    assert HASH_NAME in caplog.text and OTHER_HASH in caplog.text


def test_a_copied_index_keeps_its_enrolled_photos(tmp_path, caplog):
    """``cp -r index index2``: the copy's rows still name the original's ``enrolled/`` (relative to the data root),
    but the copy's files are the same photos (named by identity and content): recovery on the copy removes none,
    and moves in the copy's committed staged photos."""
    import io
    import shutil

    from PIL import Image

    from wildtrack.index import GalleryIndex
    from wildtrack.search import CatalogueSearch
    from wildtrack.workflows.enrolment import EnrolPhoto, enrol_batches, recover_enrolments

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = [{"path": f"t001/{n}.jpg", "identity": "t001"} for n in range(2)]
    GalleryIndex.build(rng.standard_normal((2, 8)), rows, "test-model", data_root=data).save(tmp_path / "index")
    searcher = CatalogueSearch(GalleryIndex.load(tmp_path / "index"), tmp_path / "index")

    def photo(seed: int) -> EnrolPhoto:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
        v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
        return EnrolPhoto(buf.getvalue(), "JPEG", v / np.linalg.norm(v), "2026-07-01")

    enrol_batches(searcher, {"t001": [photo(1)], "new-001": [photo(2), photo(3)]})
    copy = tmp_path / "copies" / "index2"
    shutil.copytree(tmp_path / "index", copy)
    files = sorted(p for p in (copy / "enrolled").rglob("*.jpg") if ".staging" not in p.parts)
    assert len(files) == 3
    # a commit interrupted before its photos moved in, in the copy: one photo still staged
    staged = copy / "enrolled" / ".staging" / "99999" / files[0].relative_to(copy / "enrolled")
    staged.parent.mkdir(parents=True)
    files[0].rename(staged)
    copied = GalleryIndex.load(copy)
    assert all(row.path.startswith("../") for row in copied.rows[2:])  # the original's folder, as the brief says
    with caplog.at_level(logging.INFO, logger="wildtrack.workflows.enrolment"):
        result = recover_enrolments(copy, data, copied)
    assert (result.moved_in, result.removed) == (1, 0)
    assert all(f.is_file() for f in files) and not staged.exists()
    assert "recovery: removed" not in caplog.text
