"""``wildtrack index check [--repair]`` on a real re-ranking catalogue: it finds missing and damaged photos and
feature files, says what a repair would do without changing anything, and ``--repair`` leaves a catalogue that
checks clean."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture
def catalogue(synth_data, tiny_artifacts, tmp_path):
    from wildtrack.config import MatchingConfig
    from wildtrack.workflows.indexing import build_index

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    build_index(data, tiny_artifacts, tmp_path / "index", matching=MatchingConfig(rerank_k=10))
    return tmp_path


def _check(index_dir, *args: str):
    from typer.testing import CliRunner

    from wildtrack.cli import app

    result = CliRunner().invoke(app, ["index", "check", "--index", str(index_dir), *args], env={"COLUMNS": "300"})
    return result.exit_code, " ".join(result.output.split())


def test_a_sound_catalogue_checks_clean(catalogue):
    code, output = _check(catalogue / "index")
    assert code == 0, output
    assert "no problems found" in output


def test_damage_is_reported_then_repaired(catalogue):
    from wildtrack.features.store import open_store
    from wildtrack.index import GalleryIndex

    index_dir = catalogue / "index"
    index = GalleryIndex.load(index_dir)
    gone, truncated = index.rows[0], index.rows[5]
    (catalogue / "data" / gone.path).unlink()
    photo = catalogue / "data" / truncated.path
    photo.write_bytes(photo.read_bytes()[:300])
    store = open_store(index_dir, index.shards)
    shard = next(name for name in index.shards if name.endswith(".wtfs"))
    (index_dir / shard).write_bytes(b"\0" * (index_dir / shard).stat().st_size)  # same size, other bytes
    held = [i for i, name in store.shard_of.items() if name == shard]
    manifest_before = (index_dir / "manifest.json").read_bytes()

    code, output = _check(index_dir)
    assert code == 1, output
    assert gone.image_id in output and "missing" in output
    assert truncated.image_id in output and "cannot be read" in output
    assert shard in output and "sha256" in output
    assert "--repair would: drop its row" in output and "re-extract" in output
    assert (index_dir / "manifest.json").read_bytes() == manifest_before  # a check changes nothing

    code, output = _check(index_dir, "--repair")
    assert code == 0, output
    assert f"dropped row {gone.image_id}" in output and f"dropped row {truncated.image_id}" in output
    repaired = GalleryIndex.load(index_dir)
    assert len(repaired) == len(index) - 2
    assert json.loads((index_dir / "manifest.json").read_text())["generation"] > index.generation
    fresh = open_store(index_dir, repaired.shards)
    for image_id in held:
        if image_id in repaired:
            fresh.raw(image_id)  # its shard verifies again (StoreError otherwise)
    code, output = _check(index_dir)
    assert code == 0 and "no problems found" in output, output
