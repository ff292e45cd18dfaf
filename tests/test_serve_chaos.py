"""Chaos on a real server: catalogue photos and feature files removed, truncated and corrupted between queries.
Every answer stays a 200 or a clear 4xx/503 (never a 500), and /health names what is damaged."""

from __future__ import annotations

import random
import shutil

import httpx
import pytest
from _serve_helpers import Server

OK = {200, 400, 404, 409, 413, 415, 422, 503}


@pytest.fixture
def catalogue(synth_data, tiny_artifacts, tmp_path):
    from wildtrack.config import MatchingConfig
    from wildtrack.workflows.indexing import build_index

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    build_index(data, tiny_artifacts, tmp_path / "index", matching=MatchingConfig(rerank_k=10))
    return tmp_path


def _damage(rng: random.Random, path) -> str:
    how = rng.choice(["remove", "truncate", "corrupt"])
    if how == "remove":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: rng.randint(0, 200)])
    else:
        data = bytearray(path.read_bytes())
        data[:64] = rng.randbytes(64)
        path.write_bytes(bytes(data))
    return how


def test_damage_between_queries_never_gives_a_500(catalogue, tiny_artifacts):
    from wildtrack.features.store import open_store
    from wildtrack.index import GalleryIndex

    rng = random.Random(25)
    index_dir = catalogue / "index"
    index = GalleryIndex.load(index_dir)
    store = open_store(index_dir, index.shards)
    shards = sorted(n for n in index.shards if n.endswith(".wtfs"))
    photos = {r.image_id: (catalogue / "data" / r.path).read_bytes() for r in index.rows}
    damaged_photos: set[str] = set()
    damaged_shards: set[str] = set()
    statuses: list[tuple[str, int, str]] = []
    srv = Server(index_dir, tiny_artifacts, catalogue / "server.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for _round in range(6):
                victim = rng.choice(sorted(set(photos) - damaged_photos))
                _damage(rng, catalogue / "data" / index.row(victim).path)
                damaged_photos.add(victim)
                if shards and rng.random() < 0.5:
                    shard = rng.choice(shards)
                    if (index_dir / shard).exists():
                        _damage(rng, index_dir / shard)
                        damaged_shards.add(shard)
                query = photos[victim]  # its own photo: the damaged one is on the shortlist
                for name, r in [
                    ("predict", c.post("/predict", files={"file": ("q.jpg", query)})),
                    ("search", c.post("/search", files={"file": ("q.jpg", query)})),
                    ("encounter", c.post("/identify-encounter", files=[("files", ("q.jpg", query)),
                                                                       ("files", ("r.jpg", query))])),
                    ("match", c.post("/match", data={"image_id": victim}, files={"file": ("q.jpg", query)})),
                    ("thumbnail", c.get(f"/thumbnails/{victim}")),
                ]:
                    statuses.append((name, r.status_code, r.text[:300]))
            for shard in damaged_shards:  # a query from each damaged shard's photos reaches it
                held = [i for i, n in store.shard_of.items() if n == shard and i not in damaged_photos]
                if held:
                    r = c.post("/predict", files={"file": ("q.jpg", photos[held[0]])})
                    statuses.append(("predict", r.status_code, r.text[:300]))
            health = c.get("/health").json()
    finally:
        srv.stop()
    assert all(code in OK for _, code, _ in statuses), [s for s in statuses if s[1] not in OK]
    assert all("Traceback" not in text and str(catalogue) not in text for _, _, text in statuses)
    assert {name for name, code, _ in statuses if code == 200} >= {"predict", "search", "encounter"}
    assert health["unreadable_photos"] == len(damaged_photos)
    assert set(health["unreadable_examples"]) <= damaged_photos
    assert set(health["damaged_feature_files"]) <= damaged_shards
    if damaged_shards:
        assert health["damaged_feature_files"]
