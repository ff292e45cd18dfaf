"""The enrolment core (``workflows/enrolment.py``) without the service: several identities go into the catalogue in
one commit, a second enrolment of the same photos adds nothing, and a refused name writes nothing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def searcher(tmp_path):
    """A committed global-only catalogue of two photos of ``t001`` (random unit vectors: no model needed)."""
    from wildtrack.index import GalleryIndex
    from wildtrack.search import CatalogueSearch

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"path": f"t001/{n}.jpg", "identity": "t001"} for n in range(2)]
    GalleryIndex.build(np.stack([_unit(0), _unit(1)]), rows, "test-model", data_root=data).save(tmp_path / "index")
    return CatalogueSearch(GalleryIndex.load(tmp_path / "index"), tmp_path / "index")


def _photo(seed: int, day: str | None = "2026-07-01"):
    from wildtrack.workflows.enrolment import EnrolPhoto

    return EnrolPhoto(_jpeg(seed), "JPEG", _unit(seed), day)


def test_several_identities_are_enrolled_in_one_commit(searcher):
    from wildtrack.index import GalleryIndex, committed_generation
    from wildtrack.workflows.enrolment import enrol_batches

    before = committed_generation(searcher.index_dir)[1]
    done = enrol_batches(searcher, {"t001": [_photo(10)], "new-001": [_photo(11), _photo(12, None)]})
    assert committed_generation(searcher.index_dir)[1] == before + 1
    assert done["t001"].identity == "t001" and not done["t001"].new_identity and len(done["t001"].image_ids) == 1
    assert done["new-001"].new_identity and len(done["new-001"].image_ids) == 2
    on_disk = GalleryIndex.load(searcher.index_dir)
    assert on_disk.identities() == {"t001": 3, "new-001": 2}
    for row in on_disk.rows[2:]:
        assert (searcher.data_root / row.path).is_file()
    assert {r.date for r in on_disk.rows[2:]} == {"2026-07-01", None}
    assert not list((searcher.index_dir / "enrolled" / ".staging").rglob("*.jpg"))


def test_enrolling_the_same_photos_again_adds_nothing(searcher):
    from wildtrack.index import committed_generation
    from wildtrack.workflows.enrolment import enrol_photos

    first = enrol_photos(searcher, "t002", [_photo(20), _photo(20)])
    generation = committed_generation(searcher.index_dir)[1]
    again = enrol_photos(searcher, "ｔ００２", [_photo(20)])  # full-width: the same catalogued name
    assert len(first.image_ids) == 1 and first.new_identity
    assert again.identity == "t002" and again.image_ids == [] and again.already_enrolled == first.image_ids
    assert not again.new_identity
    assert committed_generation(searcher.index_dir)[1] == generation


@pytest.mark.parametrize(("batches", "error", "says"), [
    ({"T001": [1]}, "LookAlikeIdentityError", "catalogued individual 't001'"),
    ({"t002": [1], "Т002": [2]}, "LookAlikeIdentityError", "new individual"),  # Cyrillic Т
    ({"t\u034f003": [1]}, "InvalidIdentityError", "show nothing"),
    ({"a/b": [1]}, "InvalidIdentityError", "slashes"),
])
def test_a_refused_name_writes_nothing(searcher, batches, error, says):
    from wildtrack.index import committed_generation
    from wildtrack.workflows import enrolment

    generation = committed_generation(searcher.index_dir)[1]
    with pytest.raises(getattr(enrolment, error), match=says) as caught:
        enrolment.enrol_batches(searcher, {name: [_photo(s) for s in seeds] for name, seeds in batches.items()})
    assert isinstance(caught.value, enrolment.EnrolmentError) and isinstance(caught.value, ValueError)
    assert committed_generation(searcher.index_dir)[1] == generation
    assert not Path(searcher.index_dir / "enrolled").exists()


def test_a_reranking_catalogue_gets_the_photos_local_features_in_the_same_commit(reranked_index, tiny_artifacts,
                                                                                  synth_data, tmp_path):
    import shutil

    from wildtrack.features.store import open_store
    from wildtrack.index import GalleryIndex, committed_generation
    from wildtrack.search import open_catalogue
    from wildtrack.workflows.enrolment import EnrolPhoto, enrol_batches

    index_dir = tmp_path / "index"
    shutil.copytree(reranked_index, index_dir)
    embedder, searcher = open_catalogue(index_dir, tiny_artifacts)
    photos = [sorted((synth_data / name).glob("*.jpg"))[0].read_bytes() + b"\0" for name in ("t001", "t002")]
    vectors = embedder.embed_pixels(np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("RGB").resize(
        embedder.image_size)) for p in photos]))
    counted: list[int] = []
    before = committed_generation(index_dir)[1]
    done = enrol_batches(searcher, {"Nalu": [EnrolPhoto(photos[0], "JPEG", vectors[0])],
                                    "Kai": [EnrolPhoto(photos[1], "JPEG", vectors[1])]},
                         progress=counted.append)
    assert committed_generation(index_dir)[1] == before + 1 and sum(counted) == 2
    store = open_store(index_dir, GalleryIndex.load(index_dir).shards)
    added = done["Nalu"].image_ids + done["Kai"].image_ids
    assert len(added) == 2 and all(i in store for i in added)
    hits = searcher.identify(vectors[0], photos[0]).hits  # matched locally, from the grown store
    assert done["Nalu"].image_ids[0] in {h.image_id for h in hits if h.inliers}
