"""The catalogue index: round trips, incremental adds, refusals, locking, and crash consistency."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import wildtrack.index.faiss_spec as faiss_spec
import wildtrack.index.gallery as gallery
from wildtrack.index import (
    COMMIT_POINTS,
    GalleryIndex,
    GalleryIndexError,
    IndexConflictError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    MetaRow,
    writer_lock,
)

FP = "tiny-32d-abc123"


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rows(n: int, prefix: str = "T", n_ids: int = 7, start: int = 0) -> list[dict[str, str]]:
    return [
        {
            "path": f"{prefix}{i % n_ids}/img_{i:05d}.jpg",
            "identity": f"{prefix}{i % n_ids}",
            "date": f"2021-06-0{1 + i % 9}",
        }
        for i in range(start, start + n)
    ]


def exact_topk(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ gallery.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def recall_at(index: GalleryIndex, gallery: np.ndarray, queries: np.ndarray, k: int) -> float:
    truth, _ = exact_topk(gallery, queries, k)
    ids = [r.image_id for r in index.rows]
    got = index.search(queries, k)
    hits = sum(len({ids[j] for j in t} & {h.image_id for h in g}) for t, g in zip(truth, got, strict=True))
    return hits / truth.size


@pytest.fixture
def small_ivf(monkeypatch):
    """Let IVF train on a test-sized gallery instead of falling back to flat."""
    monkeypatch.setattr(faiss_spec, "IVF_MIN_SIZE", 1000)


# ------------------------------------------------------------------------------------------ round trips


def test_flat_round_trip_equals_exact_search(tmp_path):
    x, q = unit(500, 32, 0), unit(20, 32, 1)
    meta = rows(500)
    built = GalleryIndex.build(x, meta, FP, data_root="/data/turtles")
    built.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"index.faiss", "embeddings.npy", "meta.csv", "manifest.json"}
    idx = GalleryIndex.load(tmp_path, FP)
    assert len(idx) == 500 and idx.dim == 32 and idx.kind == "flat" and idx.generation == 1
    assert idx.data_root == Path("/data/turtles")
    assert idx.rows == built.rows and np.array_equal(idx.embeddings, built.embeddings)
    assert idx.identities() == {f"T{i}": len(range(i, 500, 7)) for i in range(7)}
    order, sims = exact_topk(x, q, 10)
    for hits, o, s in zip(idx.search(q, 10), order, sims, strict=True):
        assert [h.rank for h in hits] == list(range(1, 11))
        assert [h.image_id for h in hits] == [idx.rows[j].image_id for j in o]
        np.testing.assert_allclose([h.score for h in hits], s, atol=1e-5)
    first = idx.search(q[0], 1)[0][0]
    assert first == idx.search(q[:1], 1)[0][0]
    row = idx.row(first.image_id)
    assert (row.path, row.identity, row.date) == (first.path, first.identity, first.date)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["count"] == 500 and manifest["dim"] == 32 and manifest["model_fingerprint"] == FP
    assert set(manifest["files"]) == {"index.faiss", "embeddings.npy", "meta.csv"}
    header = (tmp_path / "meta.csv").read_text().splitlines()[0]
    assert header == "image_id,path,identity,date"


def test_hnsw_recall_against_exact(tmp_path):
    x, q = unit(2000, 64, 2), unit(200, 64, 3)
    built = GalleryIndex.build(x, rows(2000), FP, kind="hnsw")
    built.save(tmp_path)
    idx = GalleryIndex.load(tmp_path, FP)
    assert idx.kind == "hnsw" and idx.index_info["params"]["M"] == 32 and idx.index_info["params"]["ef_search"] >= 64
    assert recall_at(idx, x, q, 10) >= 0.9
    assert idx.search(q[:5], 10) == built.search(q[:5], 10)


def test_ivf_round_trip(tmp_path, small_ivf):
    x, q = unit(3000, 16, 4), unit(100, 16, 5)
    built = GalleryIndex.build(x, rows(3000), FP, kind="ivf")
    assert built.kind == "ivf" and built.index_info["params"]["nlist"] > 1
    built.save(tmp_path)
    idx = GalleryIndex.load(tmp_path, FP)
    assert idx.kind == "ivf"
    assert idx.search(q, 10) == built.search(q, 10)
    assert recall_at(idx, x, q, 10) >= 0.8
    nlist = idx.index_info["params"]["nlist"]
    order, _ = exact_topk(x, q, 10)
    exact = [[idx.rows[j].image_id for j in o] for o in order]
    assert [[h.image_id for h in hits] for hits in idx.search(q, 10, nprobe=nlist)] == exact  # every list: exact


def test_ivf_on_small_gallery_falls_back_to_flat():
    idx = GalleryIndex.build(unit(50, 8, 6), rows(50), FP, kind="ivf")
    assert idx.kind == "flat" and idx.index_info["kind"] == "ivf" and "ivf needs" in idx.index_info["note"]


def test_embeddings_are_normalised_and_validated():
    x = unit(10, 8, 7) * 3.0
    idx = GalleryIndex.build(x, rows(10), FP)
    np.testing.assert_allclose(np.linalg.norm(idx.embeddings, axis=1), 1.0, rtol=1e-6)
    assert idx.search(x[3] * 10, 1)[0][0].image_id == idx.rows[3].image_id
    bad = x.copy()
    bad[2] = 0
    with pytest.raises(ValueError, match="zero length"):
        GalleryIndex.build(bad, rows(10), FP)
    bad[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GalleryIndex.build(bad, rows(10), FP)
    with pytest.raises(ValueError, match="duplicate"):
        GalleryIndex.build(x[:2], [rows(1)[0], rows(1)[0]], FP)
    with pytest.raises(ValueError, match="relative"):
        GalleryIndex.build(x[:1], [{"path": "/abs/a.jpg", "identity": "A"}], FP)
    assert len(idx.search(x[:1], 50)[0]) == 10  # k larger than the gallery


def test_meta_rows_from_records_and_dicts():
    from datetime import date

    from wildtrack.data.records import Record

    rec = Record(path=Path("/d/T1/a.jpg"), identity="T1", relpath="T1/a.jpg", date=date(2020, 5, 1))
    row = MetaRow.coerce(rec)
    assert (row.path, row.identity, row.date) == ("T1/a.jpg", "T1", "2020-05-01")
    assert row.image_id == MetaRow.coerce({"path": "T1/a.jpg", "identity": "T1"}).image_id  # stable id from path
    assert MetaRow.coerce({"path": "b.jpg", "identity": 'X, "odd"\nname', "image_id": "7"}).image_id == "7"


def test_odd_identity_names_survive_csv(tmp_path):
    meta = [{"path": "a,b/1.jpg", "identity": 'Turtle, "Big"\nOne', "date": ""}, {"path": "é/2.jpg", "identity": "Ñ"}]
    GalleryIndex.build(unit(2, 8, 8), meta, FP).save(tmp_path)
    back = GalleryIndex.load(tmp_path)
    assert [(r.path, r.identity, r.date) for r in back.rows] == [
        ("a,b/1.jpg", 'Turtle, "Big"\nOne', None),
        ("é/2.jpg", "Ñ", None),
    ]


# ---------------------------------------------------------------------------------------- adding


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_add_images_and_new_identity_without_rebuild(tmp_path, kind, small_ivf, monkeypatch):
    x = unit(1200, 32, 9)
    GalleryIndex.build(x, rows(1200), FP, kind=kind).save(tmp_path)
    idx = GalleryIndex.load(tmp_path, FP)
    assert idx.kind == kind

    def no_rebuild(*_a, **_k):
        raise AssertionError("add() must not rebuild the faiss index")

    monkeypatch.setattr(gallery, "make_faiss", no_rebuild)
    new = unit(6, 32, 10)
    new_rows = rows(3, start=1200) + [
        {"path": f"NEW/{i}.jpg", "identity": "NEW", "date": "2024-01-01"} for i in range(3)
    ]
    added = idx.add(tmp_path, new, new_rows)
    assert len(added) == 6 and len(idx) == 1206 and idx.generation == 2

    back = GalleryIndex.load(tmp_path, FP)
    assert len(back) == 1206 and back.generation == 2 and back.identities()["NEW"] == 3
    for vec, image_id in zip(new, added, strict=True):
        top = back.search(vec, 1)[0][0]
        assert top.image_id == image_id and top.score == pytest.approx(1.0, abs=1e-5)
    assert back.row(added[-1]).identity == "NEW"
    assert back.search(x[:20], 1) == idx.search(x[:20], 1)


def test_add_duplicates_refused_or_skipped(tmp_path):
    x = unit(20, 8, 11)
    GalleryIndex.build(x, rows(20), FP).save(tmp_path)
    idx = GalleryIndex.load(tmp_path)
    with pytest.raises(ValueError, match="already in the catalogue"):
        idx.add(tmp_path, x[:2], rows(2))
    assert idx.add(tmp_path, x[:2], rows(2), skip_existing=True) == []
    assert GalleryIndex.load(tmp_path).generation == 1
    mixed = rows(1, start=19) + rows(2, start=20)
    added = idx.add(tmp_path, unit(3, 8, 12), mixed, skip_existing=True)
    assert added == [MetaRow.coerce(r).image_id for r in mixed[1:]] and len(GalleryIndex.load(tmp_path)) == 22


def test_concurrent_adders_both_kept_and_stale_save_refused(tmp_path):
    GalleryIndex.build(unit(30, 8, 13), rows(30), FP).save(tmp_path)
    a, b = GalleryIndex.load(tmp_path), GalleryIndex.load(tmp_path)
    a.add(tmp_path, unit(2, 8, 14), [{"path": "A/1.jpg", "identity": "A"}, {"path": "A/2.jpg", "identity": "A"}])
    b.add(tmp_path, unit(1, 8, 15), [{"path": "B/1.jpg", "identity": "B"}])  # catches up with a's images first
    back = GalleryIndex.load(tmp_path)
    assert len(back) == 33 and back.identities()["A"] == 2 and back.identities()["B"] == 1 and back.generation == 3

    stale = GalleryIndex.load(tmp_path)
    b.add(tmp_path, unit(1, 8, 16), [{"path": "B/2.jpg", "identity": "B"}])
    with pytest.raises(IndexConflictError):
        stale.save(tmp_path)
    with pytest.raises(IndexConflictError):
        GalleryIndex.build(unit(3, 8, 17), rows(3), FP).save(tmp_path)
    assert len(GalleryIndex.load(tmp_path)) == 34
    GalleryIndex.build(unit(3, 8, 17), rows(3), FP).save(tmp_path, overwrite=True)
    assert len(GalleryIndex.load(tmp_path)) == 3


def test_decision_threshold_travels_with_the_catalogue(tmp_path):
    idx = GalleryIndex.build(unit(5, 8, 40), rows(5), FP)
    assert idx.decision_threshold is None
    idx.set_decision_threshold(0.62)
    idx.save(tmp_path)
    back = GalleryIndex.load(tmp_path)
    assert back.decision_threshold == pytest.approx(0.62)
    assert json.loads((tmp_path / "manifest.json").read_text())["decision_threshold"] == pytest.approx(0.62)
    back.add(tmp_path, unit(1, 8, 41), rows(1, start=5))
    assert GalleryIndex.load(tmp_path).decision_threshold == pytest.approx(0.62)
    with pytest.raises(ValueError, match="finite"):
        back.set_decision_threshold(float("nan"))


# ------------------------------------------------------------------------------------------ refusals


def test_model_fingerprint_mismatch_refused(tmp_path):
    GalleryIndex.build(unit(5, 8, 18), rows(5), FP).save(tmp_path)
    with pytest.raises(IndexMismatchError, match="other-model") as err:
        GalleryIndex.load(tmp_path, "other-model")
    assert FP in str(err.value) and "rebuild" in str(err.value)
    assert len(GalleryIndex.load(tmp_path, FP)) == 5


def test_dim_mismatch_refused(tmp_path):
    GalleryIndex.build(unit(5, 8, 19), rows(5), FP).save(tmp_path)
    with pytest.raises(IndexMismatchError, match="8-d"):
        GalleryIndex.load(tmp_path, FP, expected_dim=16)
    idx = GalleryIndex.load(tmp_path, FP, expected_dim=8)
    with pytest.raises(IndexMismatchError, match="dim"):
        idx.search(unit(1, 16, 20), 3)
    with pytest.raises(IndexMismatchError, match="dim"):
        idx.add(tmp_path, unit(1, 16, 20), rows(1, start=5))


def test_missing_and_future_format(tmp_path):
    with pytest.raises(IndexNotFoundError):
        GalleryIndex.load(tmp_path / "nowhere")
    GalleryIndex.build(unit(5, 8, 21), rows(5), FP).save(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(GalleryIndexError, match="newer"):
        GalleryIndex.load(tmp_path)


# ---------------------------------------------------------------------------- corruption fallbacks


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_faiss_file_rebuilt_from_embeddings(tmp_path):
    x = unit(40, 8, 22)
    GalleryIndex.build(x, rows(40), FP, kind="hnsw").save(tmp_path)
    _flip_byte(tmp_path / "index.faiss")
    idx = GalleryIndex.load(tmp_path, FP)
    assert any("rebuilt" in n for n in idx.recovery_notes)
    assert idx.search(x[7], 1)[0][0].image_id == idx.rows[7].image_id


def test_corrupt_manifest_falls_back_to_previous_generation(tmp_path):
    GalleryIndex.build(unit(10, 8, 23), rows(10), FP).save(tmp_path)
    GalleryIndex.load(tmp_path).add(tmp_path, unit(2, 8, 24), rows(2, start=10))
    (tmp_path / "manifest.json").write_text("{ torn")
    idx = GalleryIndex.load(tmp_path)
    assert len(idx) == 10 and idx.generation == 1 and idx.recovery_notes


def test_corrupt_embeddings_without_backup_is_an_error(tmp_path):
    GalleryIndex.build(unit(10, 8, 25), rows(10), FP).save(tmp_path)
    _flip_byte(tmp_path / "embeddings.npy")
    with pytest.raises(IndexCorruptError, match="embeddings.npy"):
        GalleryIndex.load(tmp_path)


# ------------------------------------------------------------------------------------------- locking


def test_second_writer_times_out_with_index_locked_error(tmp_path):
    GalleryIndex.build(unit(5, 8, 26), rows(5), FP).save(tmp_path)
    idx = GalleryIndex.load(tmp_path)
    errors: list[BaseException] = []

    def second_writer() -> None:
        try:
            idx.add(tmp_path, unit(1, 8, 27), rows(1, start=5), lock_timeout=0.3)
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    with writer_lock(tmp_path):
        t = threading.Thread(target=second_writer)
        t.start()
        t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], IndexLockedError)
    assert "another process" in str(errors[0])
    assert len(GalleryIndex.load(tmp_path)) == 5
    idx.add(tmp_path, unit(1, 8, 27), rows(1, start=5), lock_timeout=0.3)  # free again
    assert len(GalleryIndex.load(tmp_path)) == 6


def test_readers_always_see_a_consistent_generation_while_writing(tmp_path):
    GalleryIndex.build(unit(50, 8, 28), rows(50), FP).save(tmp_path)
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                idx = GalleryIndex.load(tmp_path)
                assert len(idx) == 50 + 3 * (idx.generation - 1), (len(idx), idx.generation)
                seen.append((idx.generation, len(idx)))
            except BaseException as e:  # noqa: BLE001
                failures.append(e)
                return

    t = threading.Thread(target=reader)
    t.start()
    writer = GalleryIndex.load(tmp_path)
    for g in range(15):
        writer.add(tmp_path, unit(3, 8, 100 + g), rows(3, prefix="W", start=3 * g))
    stop.set()
    t.join(10)
    assert not failures, failures
    assert len({g for g, _ in seen}) > 1


# ------------------------------------------------------------------------------------ crash safety

WRITER = """
import sys, time, numpy as np
from wildtrack.index import GalleryIndex, set_commit_pause
d, mode, pause_at = sys.argv[1], sys.argv[2], sys.argv[5]

def pause(point):
    if point == pause_at:
        print("PAUSED", point, flush=True)
        time.sleep(3600)

set_commit_pause(pause)
x = np.random.default_rng(int(sys.argv[3])).standard_normal((int(sys.argv[4]), 16)).astype("float32")
rows = [{"path": f"NEW/{i}.jpg", "identity": "NEW", "date": "2024-05-01"} for i in range(len(x))]
if mode == "add":
    GalleryIndex.load(d, "fp").add(d, x, rows)
else:
    GalleryIndex.build(x, rows, "fp", kind="hnsw").save(d)
print("DONE", flush=True)
"""


def run_writer_and_kill(index_dir: Path, mode: str, seed: int, n: int, pause_at: str) -> str:
    """Start a writer that pauses at ``pause_at``, SIGKILL it there, and return the point it reached."""
    cmd = [sys.executable, "-c", WRITER, str(index_dir), mode, str(seed), str(n), pause_at]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().strip() if ready else "TIMEOUT"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert line == f"PAUSED {pause_at}", (line, err)
    assert proc.returncode == -signal.SIGKILL
    return line


def new_vectors(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)


def assert_state(idx: GalleryIndex, old: GalleryIndex, extra: np.ndarray | None) -> None:
    """``idx`` is exactly ``old`` (extra None) or exactly ``old`` plus the ``extra`` NEW images, and searchable."""
    n_new = 0 if extra is None else len(extra)
    assert len(idx) == len(old) + n_new
    assert idx.rows[: len(old)] == old.rows and np.array_equal(idx.embeddings[: len(old)], old.embeddings)
    assert idx.identities().get("NEW", 0) == n_new
    probe = old.embeddings[:5]
    assert [h[0].image_id for h in idx.search(probe, 1)] == [r.image_id for r in old.rows[:5]]
    if extra is not None:
        top = idx.search(extra, 1)
        assert [h[0].identity for h in top] == ["NEW"] * n_new


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and select on pipes are POSIX")
@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_writer_killed_mid_commit_leaves_old_or_new_state(tmp_path, point):
    base = GalleryIndex.build(unit(60, 16, 30), rows(60), "fp", kind="hnsw")
    base.save(tmp_path)
    GalleryIndex.load(tmp_path, "fp").add(tmp_path, unit(4, 16, 31), rows(4, start=60))  # *.prev now exist
    old = GalleryIndex.load(tmp_path, "fp")

    run_writer_and_kill(tmp_path, "add", seed=32, n=5, pause_at=point)

    if point.startswith("replaced:"):  # the live data files really are ahead of the manifest here
        assert np.load(tmp_path / "embeddings.npy").shape[0] == len(old) + 5
    after = GalleryIndex.load(tmp_path, "fp")
    committed = point == "committed"
    assert after.generation == (3 if committed else 2)
    assert_state(after, old, new_vectors(32, 5) if committed else None)
    assert not after.recovery_notes

    # the next writer cleans up after the dead one and commits on top of whatever was committed
    n_after, gen_after = len(after), after.generation
    after.add(tmp_path, unit(2, 16, 33), rows(2, prefix="Z", start=0), lock_timeout=5)
    final = GalleryIndex.load(tmp_path, "fp")
    assert (
        len(final) == n_after + 2
        and final.generation == gen_after + 1
        and final.identities()["Z0"] == 1
        and final.identities()["Z1"] == 1
    )
    assert not list(tmp_path.glob(".*.tmp-*"))
    prev_manifest = json.loads((tmp_path / "manifest.json.prev").read_text())
    assert prev_manifest["generation"] == gen_after


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and select on pipes are POSIX")
def test_killed_writer_holding_lock_blocks_nobody_after_death_and_blocks_while_alive(tmp_path):
    GalleryIndex.build(unit(10, 16, 34), rows(10), "fp").save(tmp_path)
    cmd = [sys.executable, "-c", WRITER, str(tmp_path), "add", "35", "3", "tmp-written"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        select.select([proc.stdout], [], [], 60)
        assert proc.stdout.readline().strip() == "PAUSED tmp-written"
        t0 = time.monotonic()
        with pytest.raises(IndexLockedError):
            GalleryIndex.load(tmp_path).add(tmp_path, unit(1, 16, 36), rows(1, start=10), lock_timeout=0.5)
        assert time.monotonic() - t0 >= 0.4
        assert len(GalleryIndex.load(tmp_path)) == 10  # readers are never blocked
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    GalleryIndex.load(tmp_path).add(tmp_path, unit(1, 16, 36), rows(1, start=10), lock_timeout=5)
    assert len(GalleryIndex.load(tmp_path)) == 11


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and select on pipes are POSIX")
@pytest.mark.parametrize("point", ["tmp-written", "replaced:meta.csv", "committed"])
def test_writer_killed_during_first_save(tmp_path, point):
    run_writer_and_kill(tmp_path, "save", seed=37, n=8, pause_at=point)
    if point != "committed":
        with pytest.raises(IndexNotFoundError):
            GalleryIndex.load(tmp_path)
    else:
        idx = GalleryIndex.load(tmp_path, "fp")
        assert len(idx) == 8 and idx.search(new_vectors(37, 8), 1)[3][0].image_id == idx.rows[3].image_id
    GalleryIndex.build(unit(3, 16, 38), rows(3), "fp").save(tmp_path, overwrite=True)
    assert len(GalleryIndex.load(tmp_path)) == 3
