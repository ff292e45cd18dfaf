"""Catalogue jobs on either engine, and the feature store they commit with the index (docs/scale.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wildtrack.config import MatchingConfig
from wildtrack.features.store import STORE_DIR, FeatureStore, StoreFeatureCache
from wildtrack.index import GalleryIndex
from wildtrack.jobs import LocalEngine, RayEngine
from wildtrack.search import CatalogueSearch
from wildtrack.workflows.indexing import add_folder, build_index

SRC = Path(__file__).resolve().parents[1] / "src"


def _store(index_dir: Path) -> FeatureStore:
    return FeatureStore(index_dir, GalleryIndex.load(index_dir).shards)


def _same_index(a: Path, b: Path) -> None:
    """Same photos, same embeddings (to 1e-5) and the same local features, photo by photo."""
    ia, ib = GalleryIndex.load(a), GalleryIndex.load(b)
    assert len(ia) == len(ib) and json.loads((a / "manifest.json").read_text())["count"] == len(ib)
    order = {r.image_id: n for n, r in enumerate(ib.rows)}
    assert set(order) == {r.image_id for r in ia.rows}
    assert np.abs(ia.embeddings - ib.embeddings[[order[r.image_id] for r in ia.rows]]).max() <= 1e-5
    sa, sb = _store(a), _store(b)
    assert set(sa.shard_of) == set(sb.shard_of) == set(order)
    for image_id in order:
        xa, da, ka, oa = sa.raw(image_id)
        xb, db, kb, ob = sb.raw(image_id)
        assert np.array_equal(xa, xb) and np.array_equal(da, db) and (ka, oa) == (kb, ob)


@pytest.fixture(scope="module")
def local_index(synth_data, tiny_artifacts, tmp_path_factory) -> Path:
    """The synthetic catalogue built with re-ranking by the local engine, small shards so it has several."""
    out = tmp_path_factory.mktemp("local") / "index"
    build_index(synth_data, tiny_artifacts, out,
                matching=MatchingConfig(rerank_k=10, local_focus="frame"), engine=LocalEngine(shard_size=32))
    return out


def test_local_build_commits_a_feature_store_that_search_reads(local_index, synth_data, tiny_artifacts):
    index = GalleryIndex.load(local_index)
    shards = index.shards
    assert len([n for n in shards if n.endswith(".wtfs")]) == 4  # 120 photos in shards of 32
    assert all(n.startswith(f"{STORE_DIR}/") and (local_index / n).stat().st_size == e["bytes"]
               for n, e in shards.items())
    searcher = CatalogueSearch(index, local_index)
    photo = synth_data / index.rows[5].path
    from wildtrack.embed import embed_image, load_embedder

    hits = searcher.search(embed_image(load_embedder(tiny_artifacts), photo), photo, 5)
    cache = searcher.pipeline.cache
    assert isinstance(cache, StoreFeatureCache)
    # the shortlist and the query (a catalogue photo itself) read from the store: nothing extracted
    assert cache.store_hits == 11 and cache.misses == 0
    assert hits[0].identity == index.rows[5].identity


def test_damaged_shard_is_detected_and_its_photos_extracted_instead(local_index, synth_data, tiny_artifacts,
                                                                    tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(local_index, copy)
    index = GalleryIndex.load(copy)
    store = _store(copy)
    victim = index.rows[5].image_id
    shard = copy / store.shard_of[victim]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # one descriptor byte: same size, different sha256
    shard.write_bytes(bytes(data))
    searcher = CatalogueSearch(index, copy)
    photo = synth_data / index.rows[5].path
    from wildtrack.embed import embed_image, load_embedder

    damaged = searcher.search(embed_image(load_embedder(tiny_artifacts), photo), photo, 5)
    clean = CatalogueSearch(GalleryIndex.load(local_index), local_index)
    expected = clean.search(embed_image(load_embedder(tiny_artifacts), photo), photo, 5)
    assert [(h.image_id, h.inliers) for h in damaged] == [(h.image_id, h.inliers) for h in expected]
    assert searcher.pipeline.cache.misses > 1  # the damaged shard's photos were extracted from their files


def test_index_add_grows_the_store_by_new_shards(synth_data, tiny_artifacts, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    (data / "metadata.csv").unlink()  # a plain folder per turtle, where new photos are simply dropped in
    moved = sorted((data / "t000").iterdir())[:3]
    aside = tmp_path / "aside"
    aside.mkdir()
    for p in moved:
        shutil.move(p, aside / p.name)
    out = tmp_path / "index"
    build_index(data, tiny_artifacts, out,
                matching=MatchingConfig(rerank_k=10, local_focus="frame"), engine=LocalEngine(shard_size=64))
    before = GalleryIndex.load(out).shards
    for p in moved:
        shutil.move(aside / p.name, p)
    report = add_folder(out, tiny_artifacts, engine=LocalEngine(shard_size=64))
    index = GalleryIndex.load(out)
    assert report.added == 3 and len(index) == 120
    after = index.shards
    old_shards = {n for n in before if n.endswith(".wtfs")}
    assert old_shards < set(after) and len([n for n in after if n.endswith(".wtfs")]) == len(old_shards) + 1
    assert set(_store(out).shard_of) == {r.image_id for r in index.rows}


# ------------------------------------------------------------------------------------------------- Ray


def test_ray_without_an_address_follows_ray_inits_convention():
    """RAY_ADDRESS when set, else the cluster `ray start` left on this machine, else a local runtime; the line
    that says which is what the CLI prints."""
    from wildtrack.jobs import resolve_ray_address

    assert resolve_ray_address({"RAY_ADDRESS": "ray://head:10001"}, cluster_running=True) == (
        "ray://head:10001", "Ray: the cluster at ray://head:10001 (from RAY_ADDRESS)")
    assert resolve_ray_address({"RAY_ADDRESS": " "}, cluster_running=True)[0] == "auto"
    assert resolve_ray_address({}, cluster_running=True) == (
        "auto", "Ray: the cluster running on this machine (no RAY_ADDRESS; started by `ray start`)")
    assert resolve_ray_address({}, cluster_running=False) == (
        "local", "Ray: local runtime started (no RAY_ADDRESS, no running cluster)")


def test_the_cli_leaves_the_ray_address_to_the_convention():
    from wildtrack.cli.model_cmds import RAY_ADDRESS_HELP
    from wildtrack.jobs import make_engine

    engine = make_engine("ray")
    assert isinstance(engine, RayEngine) and engine.address is None and engine.description is None
    assert "RAY_ADDRESS" in RAY_ADDRESS_HELP and "local Ray runtime" in RAY_ADDRESS_HELP


@pytest.mark.ray
def test_a_ray_engine_without_an_address_uses_the_runtime_already_started(ray_address):
    lines: list[str] = []
    engine = RayEngine(announce=lines.append)
    engine.connect()
    assert lines == ["Ray: the runtime already started in this process"] == [engine.description]


@pytest.mark.ray
def test_ray_engine_builds_the_same_index_as_the_local_engine(ray_address, local_index, synth_data, tiny_artifacts,
                                                               tmp_path):
    from typer.testing import CliRunner

    from wildtrack.cli import app

    out = tmp_path / "index"
    result = CliRunner().invoke(app, ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts),
                                      "--out", str(out), "--local-focus", "frame", "--rerank-k", "10",
                                      "--engine", "ray", "--ray-address", ray_address])
    assert result.exit_code == 0, result.output
    _same_index(out, local_index)
    assert not (out / ".staging").exists()  # staged embedding shards are dropped once committed


@pytest.mark.ray
def test_a_killed_ray_job_rerun_redoes_only_missing_shards(ray_address, local_index, synth_data, tiny_artifacts,
                                                           tmp_path):
    out = tmp_path / "index"
    script = (f"from wildtrack.jobs import RayEngine\nfrom wildtrack.workflows.indexing import build_index\n"
              f"from wildtrack.config import MatchingConfig\n"
              f"build_index({str(synth_data)!r}, {str(tiny_artifacts)!r}, {str(out)!r}, "
              f"matching=MatchingConfig(rerank_k=10, local_focus='frame'), "
              f"engine=RayEngine({ray_address!r}, shard_size=4, workers=1))\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    job = subprocess.Popen([sys.executable, "-c", script], env=env)
    store_dir = out / STORE_DIR
    deadline = time.monotonic() + 300
    while not (store_dir.is_dir() and len(list(store_dir.glob("*.wtfs"))) >= 2) and job.poll() is None:
        assert time.monotonic() < deadline, "the job wrote no feature shard in 5 minutes"
        time.sleep(0.02)
    job.kill()
    job.wait()
    assert not (out / "manifest.json").exists(), "the job finished before it could be killed"
    written = {p.name: p.stat().st_mtime_ns for p in store_dir.glob("*.wtfs")}
    staged = {p.name: p.stat().st_mtime_ns for p in (out / ".staging" / "embeddings").glob("*.npz")}
    assert 2 <= len(written) < 30 and len(staged) == 30  # killed while extracting features

    build_index(synth_data, tiny_artifacts, out, matching=MatchingConfig(rerank_k=10, local_focus="frame"),
                engine=RayEngine(ray_address, shard_size=4))
    _same_index(out, local_index)
    kept = {n for n, t in written.items() if (store_dir / n).stat().st_mtime_ns == t}
    assert kept == set(written)  # shards written before the kill were reused, not redone
    assert len(list(store_dir.glob("*.wtfs"))) == 30


@pytest.mark.ray
def test_a_survey_on_ray_gives_the_files_of_a_local_survey(ray_address, reranked_index, tiny_artifacts, tmp_path):
    from wildtrack.data.synth.card import generate_card
    from wildtrack.survey.run import SurveySettings, run_survey

    card = tmp_path / "card"
    generate_card(card, known=[0, 3, 7], photos_per_encounter=2, image_size=96, seed=1, extras=False)
    settings = SurveySettings(pictures=0)
    local = run_survey(card, reranked_index, tiny_artifacts, tmp_path / "local", settings)
    ray = run_survey(card, reranked_index, tiny_artifacts, tmp_path / "ray", settings,
                     engine=RayEngine(ray_address, shard_size=2))
    for name in ("survey.json", "photos.csv", "decisions.csv"):
        assert (local.survey_dir / name).read_bytes() == (ray.survey_dir / name).read_bytes(), name
    assert local.counts["ok"] == 6 and local.counts["encounters"] >= 1
