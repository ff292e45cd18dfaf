"""Catalogues in object storage (s3://bucket/prefix), against a local S3-compatible server (moto) on 127.0.0.1.

The server is started by the tests; photos are uploaded to it with boto3, and the catalogue jobs read them
through fsspec (s3fs) with the endpoint given as a storage option or in ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import json
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import S3_TEST_CREDENTIALS as CREDENTIALS

from wildtrack.config import MatchingConfig
from wildtrack.data import SkippedFilesWarning, load_dataset, storage
from wildtrack.index import GalleryIndex
from wildtrack.jobs import LocalEngine, RayEngine
from wildtrack.workflows.indexing import add_folder, build_index

moto_server = pytest.importorskip("moto.server", reason="object-storage tests need moto[server]: pip install "
                                  "'wildtrack[test]'")
boto3 = pytest.importorskip("boto3", reason="object-storage tests need boto3: pip install 'wildtrack[test]'")
pytest.importorskip("s3fs", reason="s3:// photos need s3fs: pip install 'wildtrack[test]'")



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1, stopped after the module."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
    """Credentials from the environment, as a user sets them; no endpoint unless a test gives one."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    yield
    storage.configure(None)


def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, **{"aws_access_key_id": "testing",
                                                         "aws_secret_access_key": "testing",
                                                         "region_name": "us-east-1"})


def _upload(endpoint: str, folder: Path, bucket: str, prefix: str) -> None:
    client = _client(endpoint)
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            client.upload_file(str(file), bucket, f"{prefix}/{file.relative_to(folder).as_posix()}")


def _by_path(index: GalleryIndex) -> dict[str, np.ndarray]:
    return {row.path: index.embeddings[n] for n, row in enumerate(index.rows)}


@pytest.fixture(scope="module")
def s3_catalogue(s3_endpoint, synth_data) -> str:
    """The synthetic catalogue (plain layout with metadata.csv) uploaded to s3://photos/cat."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in CREDENTIALS.items():
            mp.setenv(key, value)
        _upload(s3_endpoint, synth_data, "photos", "cat")
    return "s3://photos/cat"


@pytest.fixture(scope="module")
def folder_index(synth_data, tiny_artifacts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folder") / "index"
    build_index(synth_data, tiny_artifacts, out,
                matching=MatchingConfig(rerank_k=10, local_focus="frame"), engine=LocalEngine(shard_size=32))
    return out


def test_index_build_from_s3_matches_the_folder_build(s3_endpoint, s3_catalogue, folder_index, tiny_artifacts,
                                                      tmp_path):
    from typer.testing import CliRunner

    from wildtrack.cli import app

    out = tmp_path / "index"
    result = CliRunner().invoke(app, ["index", "build", "--data", s3_catalogue, "--artifacts", str(tiny_artifacts),
                                      "--out", str(out), "--rerank", "local", "--rerank-k", "10",
                                      "--local-focus", "frame", "--storage-option", f"endpoint_url={s3_endpoint}"])
    assert result.exit_code == 0, result.output
    local, remote = GalleryIndex.load(folder_index), GalleryIndex.load(out)
    assert len(remote) == len(local) == json.loads((out / "manifest.json").read_text())["count"] == 120
    assert remote.data_root == s3_catalogue  # kept as a URL, the rows relative to it as for a folder
    a, b = _by_path(local), _by_path(remote)
    assert set(a) == set(b)
    assert max(float(np.abs(a[p] - b[p]).max()) for p in a) <= 1e-5
    assert {r.identity for r in remote.rows} == {r.identity for r in local.rows}
    assert (out / "fusion.json").is_file() and remote.shards  # local features committed as the feature store


def test_search_of_an_s3_index_reranks_from_its_feature_store(s3_endpoint, s3_catalogue, synth_data, tiny_artifacts,
                                                              tmp_path):
    from wildtrack.embed import embed_image, load_embedder
    from wildtrack.search import CatalogueSearch

    storage.configure({"endpoint_url": s3_endpoint})
    out = tmp_path / "index"
    build_index(s3_catalogue, tiny_artifacts, out, matching=MatchingConfig(rerank_k=10, local_focus="frame"))
    index = GalleryIndex.load(out)
    searcher = CatalogueSearch(index, out)
    assert searcher.pipeline is not None
    photo = synth_data / index.rows[7].path
    vector = embed_image(load_embedder(tiny_artifacts), photo.read_bytes())
    hits = searcher.search(vector, photo.read_bytes(), 5)
    assert hits[0].identity == index.rows[7].identity
    cache = searcher.pipeline.cache
    assert cache.store_hits == 10 and cache.misses == 0  # the shortlist from the store: no gallery photo fetched


def test_index_add_picks_up_a_new_identity_uploaded_to_the_bucket(s3_endpoint, synth_data, tiny_artifacts,
                                                                   tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the endpoint from the environment this time
    base = tmp_path / "base"
    shutil.copytree(synth_data, base, ignore=shutil.ignore_patterns("metadata.csv", "t011"))
    _upload(s3_endpoint, base, "grow", "cat")
    out = tmp_path / "index"
    first = build_index("s3://grow/cat", tiny_artifacts, out)
    assert first.total == 110

    _upload(s3_endpoint, synth_data / "t011", "grow", "cat/t011")
    report = add_folder(out, tiny_artifacts)
    index = GalleryIndex.load(out)
    assert report.added == 10 and len(index) == 120
    assert {r.path for r in index.rows if r.identity == "t011"} == {
        f"t011/{p.name}" for p in (synth_data / "t011").iterdir()}
    assert add_folder(out, tiny_artifacts).added == 0  # nothing new: nothing re-embedded


def test_an_unreadable_object_is_skipped_and_named_like_an_unreadable_file(s3_endpoint, synth_data, tmp_path):
    storage.configure({"endpoint_url": s3_endpoint})
    folder = tmp_path / "cat"
    shutil.copytree(synth_data / "t000", folder / "t000")
    (folder / "t000" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    _upload(s3_endpoint, folder, "broken", "cat")
    with pytest.warns(SkippedFilesWarning) as caught:
        ds = load_dataset("s3://broken/cat")
    assert "s3://broken/cat/t000/broken.jpg" in str(caught[0].message)
    assert [str(p) for p, _ in ds.skipped] == ["s3://broken/cat/t000/broken.jpg"]
    assert len(ds.records) == 10 and all(str(r.path).startswith("s3://broken/cat/t000/") for r in ds.records)

    from wildtrack.embed import embed_paths, load_embedder

    class Grey:
        image_size, fingerprint, dim = (32, 32), "grey", 3

        def embed_pixels(self, pixels):
            return np.ones((len(pixels), 3), np.float32) / np.sqrt(3)

    del load_embedder
    result = embed_paths(Grey(), [ds.records[0].path, "s3://broken/cat/t000/broken.jpg", "s3://broken/cat/gone.jpg"])
    assert result.ok == [0]
    reasons = dict(result.failed)
    assert reasons[1].startswith("s3://broken/cat/t000/broken.jpg: not a readable image")
    assert reasons[2].startswith("s3://broken/cat/gone.jpg: cannot open")


def test_an_unknown_bucket_is_one_clear_error(s3_endpoint):
    from wildtrack.data import DatasetError

    storage.configure({"endpoint_url": s3_endpoint})
    with pytest.raises(DatasetError, match="s3://no-such-bucket/cat"), warnings.catch_warnings():
        load_dataset("s3://no-such-bucket/cat")


@pytest.mark.ray
def test_ray_workers_read_the_photos_from_s3(ray_address, s3_endpoint, s3_catalogue, folder_index, tiny_artifacts,
                                             tmp_path):
    out = tmp_path / "index"  # the session's Ray workers take the credentials from their environment (conftest)
    build_index(s3_catalogue, tiny_artifacts, out, matching=MatchingConfig(rerank_k=10, local_focus="frame"),
                engine=RayEngine(ray_address, shard_size=32), storage_options={"endpoint_url": s3_endpoint})
    a, b = _by_path(GalleryIndex.load(folder_index)), _by_path(GalleryIndex.load(out))
    assert set(a) == set(b) and max(float(np.abs(a[p] - b[p]).max()) for p in a) <= 1e-5
