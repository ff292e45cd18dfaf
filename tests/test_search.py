"""CatalogueSearch: one photo → ranked images and a verdict, with the same rules for the CLI and the service."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from wildtrack.embed import embed_image, load_embedder
from wildtrack.index import GalleryIndex
from wildtrack.matching.pipeline import load_pipeline
from wildtrack.search import CatalogueSearch
from wildtrack.workflows.searching import search_image


@pytest.fixture(scope="module")
def embedder(tiny_artifacts):
    return load_embedder(tiny_artifacts)


def _photo(synth_data):
    return synth_data / "t004" / "t004_007.jpg"


def test_a_reranking_catalogue_decides_on_the_first_turtles_match_probability(reranked_index, synth_data, embedder):
    searcher = CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index)
    fitted = load_pipeline(reranked_index)
    photo = _photo(synth_data)
    answer = searcher.identify(embed_image(embedder, photo), photo, topk=3)
    assert answer.reranked and answer.score_kind == "match_probability"
    assert answer.threshold == pytest.approx(fitted.decision_threshold)
    reranked = answer.hits[: fitted.k]
    assert all(h.inliers is not None and 0.0 <= h.match_probability <= 1.0 for h in reranked)
    assert [h.rank for h in answer.hits] == list(range(1, len(answer.hits) + 1))
    assert answer.decision.identity == answer.hits[0].identity == "t004"
    assert answer.decision.score == pytest.approx(answer.hits[0].match_probability)


def test_every_answer_carries_the_policy_that_decided_it(reranked_index, synth_data, embedder):
    """The threshold and sentence an answer reports are those it was decided with, even when the catalogue's
    policy changes before the answer is read (a reload between the two)."""
    from wildtrack.decide.policy import decision_policy

    searcher = CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index)
    photo = _photo(synth_data)
    answer = searcher.identify(embed_image(embedder, photo), photo, topk=3)
    decided_with = searcher.policy
    searcher.policy = decision_policy(True, override=0.99)  # what a reload would swap in
    assert answer.policy is decided_with and answer.threshold == decided_with.photo_threshold != 0.99
    assert answer.policy.source == "fitted" and "fitted on the catalogue" in answer.policy.sentence()


def test_a_threshold_override_applies_to_the_deciding_score(reranked_index, synth_data, embedder):
    photo = _photo(synth_data)
    vector = embed_image(embedder, photo)
    strict = CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index, threshold=1.5).identify(vector, photo)
    assert strict.decision.is_unknown and strict.decision.identity is None and strict.threshold == 1.5
    lenient = CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index, threshold=0.0).identify(vector, photo)
    assert lenient.decision.identity == "t004"
    with pytest.raises(ValueError, match="finite"):
        CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index, threshold=float("nan"))


def test_a_reranking_catalogue_refuses_to_decide_without_the_photo(reranked_index, synth_data, embedder):
    """Its threshold is a probability; deciding on a cosine against it would be meaningless."""
    searcher = CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index)
    vector = embed_image(embedder, _photo(synth_data))
    with pytest.raises(ValueError, match="needs the photo"):
        searcher.identify(vector, None)
    assert all(h.inliers is None for h in searcher.search(vector, None, 5))  # plain search still works, unverified


def test_without_reranking_the_cosine_decides_against_the_indexs_threshold(reranked_index, synth_data, embedder,
                                                                             tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(reranked_index, index_dir)
    index = GalleryIndex.load(index_dir)
    index.set_decision_threshold(0.25)
    index.save(index_dir)
    photo = _photo(synth_data)
    answer = CatalogueSearch(GalleryIndex.load(index_dir), index_dir, rerank=False).identify(
        embed_image(embedder, photo), photo, topk=3)
    assert not answer.reranked and answer.score_kind == "cosine" and answer.threshold == 0.25
    assert all(h.inliers is None and h.match_probability is None for h in answer.hits)
    assert answer.decision.score == pytest.approx(max(h.score for h in answer.hits))


def test_search_image_is_the_catalogue_searchs_answer(reranked_index, synth_data, tiny_artifacts, embedder):
    photo = _photo(synth_data)
    expected = CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index).identify(
        embed_image(embedder, photo), photo, topk=4)
    got = search_image(photo, reranked_index, tiny_artifacts, topk=4)
    assert [h["image_id"] for h in got["hits"]] == [h.image_id for h in expected.hits[:4]]
    assert [h["inliers"] for h in got["hits"]] == [h.inliers for h in expected.hits[:4]]
    assert got["decision"]["identity"] == expected.decision.identity
    assert got["decision"]["score_kind"] == expected.score_kind


def test_an_index_without_a_data_root_finds_its_photos_under_the_index_dir(tmp_path):
    x = np.eye(4, dtype=np.float32)
    rows = [{"path": f"p{i}.jpg", "identity": f"t{i}"} for i in range(4)]
    GalleryIndex.build(x, rows, model_fingerprint="m").save(tmp_path / "index")
    searcher = CatalogueSearch(GalleryIndex.load(tmp_path / "index"), tmp_path / "index")
    assert searcher.data_root == (tmp_path / "index").resolve()
    assert not searcher.reranks and searcher.threshold is None
    assert searcher.identify(x[2], None).decision.identity == "t2"


def test_an_encounters_photos_are_identified_together(reranked_index, synth_data, embedder):
    """Each photo is identified as on its own; the encounter takes the most confident photo's verdict, decided
    against the encounter threshold the fit calibrated (stricter than a single photo's)."""
    searcher = CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index)
    fitted = load_pipeline(reranked_index)
    assert fitted.encounter_threshold is not None and searcher.encounter_threshold == fitted.encounter_threshold
    assert fitted.encounter_threshold != fitted.decision_threshold  # on this catalogue the two differ
    photos = [synth_data / "t004" / f"t004_00{n}.jpg" for n in (7, 8, 9)]
    vectors = np.stack([embed_image(embedder, p) for p in photos])
    answer = searcher.identify_encounter(vectors, photos, topk=3)
    alone = [searcher.identify(v, p, topk=3) for v, p in zip(vectors, photos, strict=True)]
    assert [a.decision.score for a in answer.photos] == pytest.approx([a.decision.score for a in alone])
    assert answer.decision.score == pytest.approx(max(a.decision.score for a in alone))
    assert answer.decision.candidates[0].identity == "t004"
    assert answer.threshold == fitted.encounter_threshold and answer.score_kind == "match_probability"
    single = searcher.identify_encounter(vectors[:1], photos[:1], topk=3)
    assert single.decision.candidates[0].identity == alone[0].decision.best.identity


def test_an_explicit_threshold_decides_encounters_too(reranked_index, synth_data, embedder):
    photos = [synth_data / "t004" / "t004_007.jpg", synth_data / "t004" / "t004_008.jpg"]
    vectors = np.stack([embed_image(embedder, p) for p in photos])
    strict = CatalogueSearch(GalleryIndex.load(reranked_index), reranked_index, threshold=1.5)
    answer = strict.identify_encounter(vectors, photos)
    assert answer.decision.is_unknown and answer.threshold == 1.5
    with pytest.raises(ValueError, match="2 embeddings but 1 photos"):
        strict.identify_encounter(vectors, photos[:1])


def test_without_a_fitted_encounter_threshold_encounters_use_the_photo_threshold(reranked_index, synth_data,
                                                                                 embedder, tmp_path):
    """A fusion.json written before encounters, or a global-only search: the photo threshold decides."""
    import json

    index_dir = tmp_path / "index"
    shutil.copytree(reranked_index, index_dir)
    fusion = json.loads((index_dir / "fusion.json").read_text())
    del fusion["encounter_threshold"]
    GalleryIndex.load(index_dir).save(index_dir, extras={"fusion.json": json.dumps(fusion).encode()})
    legacy = CatalogueSearch(GalleryIndex.load(index_dir), index_dir)
    assert legacy.encounter_threshold == legacy.threshold == fusion["decision_threshold"]
    photos = [synth_data / "t004" / "t004_007.jpg", synth_data / "t004" / "t004_008.jpg"]
    vectors = np.stack([embed_image(embedder, p) for p in photos])
    plain = CatalogueSearch(GalleryIndex.load(index_dir), index_dir, rerank=False)
    answer = plain.identify_encounter(vectors, photos)
    assert not answer.reranked and answer.score_kind == "cosine" and answer.threshold == plain.threshold
    assert answer.decision.candidates[0].identity == "t004"
    assert answer.decision.score == pytest.approx(max(p.decision.score for p in answer.photos))
