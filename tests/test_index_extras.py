"""Files the search reads beside the index (``fusion.json``) belong to the committed generation."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wildtrack.index import GalleryIndex, IndexCorruptError
from wildtrack.matching.pipeline import FUSION_FILE, load_pipeline
from wildtrack.search import CatalogueSearch


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rows(n: int, prefix: str = "T", start: int = 0) -> list[dict[str, str]]:
    return [{"path": f"{prefix}{i % 3}/{i}.jpg", "identity": f"{prefix}{i % 3}"} for i in range(start, start + n)]


def manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


# ------------------------------------------------------------------------------------------- the store


def test_extras_are_committed_verified_and_carried_by_adds(tmp_path):
    idx = GalleryIndex.build(unit(6, 8, 0), rows(6), "fp")
    idx.save(tmp_path, extras={"notes.json": b'{"a": 1}'})
    m = manifest(tmp_path)
    assert m["extras"]["notes.json"]["bytes"] == 8 and len(m["extras"]["notes.json"]["sha256"]) == 64
    back = GalleryIndex.load(tmp_path, "fp")
    assert back.read_extra("notes.json") == b'{"a": 1}' and back.read_extra("other.json") is None
    back.add(tmp_path, unit(1, 8, 1), rows(1, start=6))  # an enrolment keeps the generation's extras
    again = GalleryIndex.load(tmp_path, "fp")
    assert again.generation == 2 and again.read_extra("notes.json") == b'{"a": 1}'
    GalleryIndex.build(unit(2, 8, 2), rows(2), "fp2").save(tmp_path, overwrite=True)  # a rebuild without it
    assert GalleryIndex.load(tmp_path).read_extra("notes.json") is None
    assert not (tmp_path / "notes.json").exists()  # no stale copy lies beside the new generation


def test_a_tampered_extra_falls_back_to_the_previous_generation_and_names_the_file(tmp_path):
    GalleryIndex.build(unit(6, 8, 3), rows(6), "fp").save(tmp_path, extras={"x.json": b"one"})
    GalleryIndex.load(tmp_path).save(tmp_path, extras={"x.json": b"two"})
    (tmp_path / "x.json").write_bytes(b"TWO")
    recovered = GalleryIndex.load(tmp_path)
    assert recovered.generation == 1 and recovered.read_extra("x.json") == b"one"
    assert any("x.json" in note for note in recovered.recovery_notes)
    (tmp_path / "x.json.prev").write_bytes(b"ONE")
    with pytest.raises(IndexCorruptError, match="x.json"):
        GalleryIndex.load(tmp_path)


@pytest.mark.parametrize("name", ["manifest.json", "meta.csv", "../up.json", "a/b.json", ".hidden", "x.prev", ""])
def test_extra_names_that_would_clash_or_escape_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="extra"):
        GalleryIndex.build(unit(2, 8, 4), rows(2), "fp").save(tmp_path, extras={name: b"x"})


def test_legacy_index_reads_its_loose_file_and_the_next_commit_adopts_it(tmp_path, caplog):
    GalleryIndex.build(unit(6, 8, 5), rows(6), "fp").save(tmp_path)
    m = manifest(tmp_path)
    del m["extras"]  # written before extras were committed: fusion.json lay loose beside the index
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    (tmp_path / FUSION_FILE).write_bytes(b'{"legacy": true}')
    with caplog.at_level(logging.INFO, logger="wildtrack.index"):
        legacy = GalleryIndex.load(tmp_path)
    assert legacy.read_extra(FUSION_FILE) == b'{"legacy": true}'
    assert "not in manifest.json" in caplog.text
    legacy.add(tmp_path, unit(1, 8, 6), rows(1, start=6))
    assert FUSION_FILE in manifest(tmp_path)["extras"]
    assert GalleryIndex.load(tmp_path).read_extra(FUSION_FILE) == b'{"legacy": true}'


# -------------------------------------------------------------------------------------- fusion.json


def test_fusion_file_errors_name_the_file(tmp_path):
    for garbage, why in ((b"", "empty"), (b"\x00garbage", "not JSON"), (b"[1, 2]", "not a JSON object"),
                         (b'{"k": 5}', "fusion")):
        (tmp_path / FUSION_FILE).write_bytes(garbage)
        with pytest.raises(ValueError, match=FUSION_FILE) as err:
            load_pipeline(tmp_path)
        assert why in str(err.value)


def test_the_fusion_records_its_model_and_a_mismatch_is_refused(reranked_index, tiny_artifacts, tmp_path):
    from wildtrack.embed import load_embedder

    fingerprint = load_embedder(tiny_artifacts).fingerprint
    index = GalleryIndex.load(reranked_index)
    data = json.loads(index.read_extra(FUSION_FILE))
    assert data["model_fingerprint"] == fingerprint == index.model_fingerprint
    assert FUSION_FILE in manifest(reranked_index)["extras"]
    copy = tmp_path / "index"
    shutil.copytree(reranked_index, copy)
    forged = GalleryIndex.load(copy)
    forged.save(copy, extras={FUSION_FILE: json.dumps({**data, "model_fingerprint": "model-A"}).encode()})
    with pytest.raises(ValueError, match=f"{FUSION_FILE}.*model-A"):
        CatalogueSearch(GalleryIndex.load(copy), copy)
    forged.save(copy, extras={FUSION_FILE: b"not json"})
    with pytest.raises(ValueError, match=FUSION_FILE):
        CatalogueSearch(GalleryIndex.load(copy), copy)
    assert CatalogueSearch(GalleryIndex.load(copy), copy, rerank=False).pipeline is None  # global search still works


BUILD_B = """
import sys, time
from wildtrack.index import set_commit_pause
from wildtrack.config import MatchingConfig
from wildtrack.workflows.indexing import build_index

def pause(point):
    if point == "committed":
        print("PAUSED", point, flush=True)
        time.sleep(3600)

set_commit_pause(pause)
build_index(sys.argv[1], sys.argv[2], sys.argv[3], matching=MatchingConfig(rerank_k=10))
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and select on pipes are POSIX")
def test_build_killed_right_after_the_commit_never_pairs_the_new_index_with_the_old_fusion(
        reranked_index, synth_data, tiny_artifacts, tmp_path):
    """Model A's index (legacy layout: a loose fusion.json fitted for K=3), rebuilt with model B, killed after
    B's manifest is committed: search must re-rank with B's fusion (K=10), never A's."""
    d = tmp_path / "index"
    GalleryIndex.build(unit(12, 32, 7), rows(12), "model-A").save(d)
    fusion_a = json.loads((reranked_index / FUSION_FILE).read_text())
    fusion_a.update(k=3, model_fingerprint="model-A")
    m = manifest(d)
    m.pop("extras", None)
    (d / "manifest.json").write_text(json.dumps(m))
    (d / FUSION_FILE).write_text(json.dumps(fusion_a))
    assert CatalogueSearch(GalleryIndex.load(d), d).pipeline.k == 3

    cmd = [sys.executable, "-c", BUILD_B, str(synth_data), str(tiny_artifacts), str(d)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 300)
        line = proc.stdout.readline().strip() if ready else "TIMEOUT"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert line == "PAUSED committed", (line, err[-2000:])

    index = GalleryIndex.load(d)
    assert index.model_fingerprint != "model-A"
    search = CatalogueSearch(index, d)
    assert search.pipeline is not None and search.pipeline.k == 10
