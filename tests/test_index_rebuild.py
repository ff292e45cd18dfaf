"""`wildtrack index build` over an existing index: photos enrolled by the service survive the rebuild."""

from __future__ import annotations

import shutil
import warnings

import pytest
from typer.testing import CliRunner

from wildtrack.cli import app
from wildtrack.index import GalleryIndex

runner = CliRunner()


def build(data, artifacts, out, *extra: str):
    return runner.invoke(app, ["index", "build", "--data", str(data), "--artifacts", str(artifacts), "--out", str(out),
                               "--rerank", "none", *extra])


def enrol(index_dir, artifacts, photo, identity: str = "newcomer") -> str:
    """Enrol one photo as the web service's /enroll does (stored under <index>/enrolled/, then added)."""
    from wildtrack.serve.service import Catalogue, Upload

    catalogue = Catalogue.open(index_dir, artifacts)
    return catalogue.enroll(identity, [Upload(photo.read_bytes(), photo.name)], day="2024-07-01").image_ids[0]


@pytest.fixture
def plain(synth_data, tmp_path):
    """A small plain-layout catalogue: 4 turtles x 3 photos."""
    out = tmp_path / "plain"
    for ident in sorted(p.name for p in synth_data.iterdir() if p.is_dir())[:4]:
        (out / ident).mkdir(parents=True)
        for photo in sorted((synth_data / ident).glob("*.jpg"))[:3]:
            shutil.copy(photo, out / ident / photo.name)
    return out


def test_rebuild_keeps_enrolled_photos(plain, synth_data, tiny_artifacts, tmp_path):
    index_dir = tmp_path / "pi"
    assert build(plain, tiny_artifacts, index_dir).exit_code == 0
    photo = next((synth_data / "t010").glob("*.jpg"))  # a turtle the catalogue folder does not hold
    enrolled_id = enrol(index_dir, tiny_artifacts, photo)
    before = GalleryIndex.load(index_dir)
    assert len(before) == 13 and "newcomer" in before.identities()

    result = build(plain, tiny_artifacts, index_dir)
    assert result.exit_code == 0, result.output
    after = GalleryIndex.load(index_dir)
    assert len(after) == 13 and after.identities()["newcomer"] == 1
    row = after.row(enrolled_id)
    assert (row.identity, row.date) == ("newcomer", "2024-07-01") and (after.data_root / row.path).is_file()
    from wildtrack.embed import embed_image, load_embedder

    top = after.search(embed_image(load_embedder(tiny_artifacts), photo), 1)[0][0]
    assert top.image_id == enrolled_id and top.score > 0.999  # re-embedded from its file, not left stale


def test_rebuild_refuses_to_drop_enrolled_photos_whose_files_are_gone_unless_forced(plain, synth_data, tiny_artifacts,
                                                                                    tmp_path):
    index_dir = tmp_path / "pi"
    assert build(plain, tiny_artifacts, index_dir).exit_code == 0
    enrol(index_dir, tiny_artifacts, next((synth_data / "t010").glob("*.jpg")))
    shutil.rmtree(index_dir / "enrolled")

    refused = build(plain, tiny_artifacts, index_dir)
    assert refused.exit_code != 0
    assert "1 enrolled photo" in refused.output and "--force" in refused.output
    assert len(GalleryIndex.load(index_dir)) == 13  # nothing was committed

    forced = build(plain, tiny_artifacts, index_dir, "--force")
    assert forced.exit_code == 0, forced.output
    assert len(GalleryIndex.load(index_dir)) == 12


def test_build_checks_the_model_before_reading_the_photos(plain, tmp_path):
    from wildtrack.data import SkippedFilesWarning
    from wildtrack.workflows.indexing import build_index

    (plain / "t000" / "broken.jpg").write_bytes(b"not a photo")  # reading the folder would warn about it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception, match="no-such-model") as err:
            build_index(plain, tmp_path / "no-such-model", tmp_path / "pi")
    assert not [w for w in caught if issubclass(w.category, SkippedFilesWarning)], "the photos were read first"
    assert "Traceback" not in str(err.value)
    result = build(plain, tmp_path / "no-such-model", tmp_path / "pi")
    assert result.exit_code != 0 and "no-such-model" in result.output
