"""The service uses local re-ranking when the index was built with it, and agrees with `wildtrack search`."""

from __future__ import annotations

import httpx
import pytest
from _serve_helpers import Server

from wildtrack.workflows.indexing import build_index
from wildtrack.workflows.searching import search_image


@pytest.fixture(scope="module")
def reranked_server(synth_data, tiny_artifacts, tmp_path_factory):
    base = tmp_path_factory.mktemp("rerank")
    index = base / "index"
    build_index(synth_data, tiny_artifacts, index, rerank_k=10)
    srv = Server(index, tiny_artifacts, base / "server.log").start()
    yield srv, index
    srv.stop()


def test_predict_and_search_follow_the_reranked_order(reranked_server, synth_data, tiny_artifacts):
    server, index = reranked_server
    photo = synth_data / "t004" / "t004_007.jpg"
    expected = search_image(photo, index, tiny_artifacts, topk=5)
    assert expected["reranked"]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        predicted = client.post("/predict", files={"file": ("q.jpg", photo.read_bytes())})
        searched = client.post("/search", files={"file": ("q.jpg", photo.read_bytes())}, data={"k": "5"})
    assert predicted.status_code == 200 and searched.status_code == 200, predicted.text + searched.text
    assert predicted.json()["identity"] == expected["decision"]["identity"] == "t004"
    assert [h["image_id"] for h in searched.json()["hits"]] == [h["image_id"] for h in expected["hits"]]
