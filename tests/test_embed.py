"""Embedding: the decode pipeline keeps order and reports bad files; ONNX agrees with Keras and is chosen
automatically only when it is current."""

from __future__ import annotations

import json
import shutil
import tracemalloc

import numpy as np
import pytest

from wildtrack.data import load_dataset
from wildtrack.embed import EmbeddingCache, KerasEmbedder, OnnxEmbedder, embed_paths, load_embedder
from wildtrack.images import iter_decoded_batches, load_image
from wildtrack.model.export import ONNX_MANIFEST, export_onnx

pytest.importorskip("tf2onnx")


@pytest.fixture(scope="module")
def exported(tiny_artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "artifacts"
    shutil.copytree(tiny_artifacts, out)
    manifest = export_onnx(out)
    return out, manifest


@pytest.fixture(scope="module")
def paths(synth_data):
    return [r.path for r in load_dataset(synth_data).records][:40]


def test_export_checks_agreement_and_records_its_source(exported):
    out, manifest = exported
    assert (out / "model.onnx").is_file()
    assert manifest["check"]["min_cosine"] >= 0.9999
    assert json.loads((out / ONNX_MANIFEST).read_text())["source_model_fingerprint"] == manifest[
        "source_model_fingerprint"]


def test_onnx_and_keras_backends_give_the_same_embeddings(exported, paths):
    out, _ = exported
    keras_emb = embed_paths(KerasEmbedder(out), paths).embeddings
    onnx_emb = embed_paths(OnnxEmbedder(out), paths).embeddings
    assert np.min(np.sum(keras_emb * onnx_emb, axis=1)) >= 0.9999


def test_auto_backend_prefers_a_current_export(exported, tiny_artifacts):
    out, _ = exported
    assert load_embedder(out).backend == "onnx"
    assert load_embedder(tiny_artifacts).backend == "keras"  # never exported
    assert load_embedder(out, backend="keras").backend == "keras"


def test_a_stale_export_is_not_used(exported, tmp_path):
    out, _ = exported
    stale = tmp_path / "a"
    shutil.copytree(out, stale)
    manifest = json.loads((stale / ONNX_MANIFEST).read_text())
    manifest["source_model_fingerprint"] = "0" * 16  # as if model.keras had been retrained since
    (stale / ONNX_MANIFEST).write_text(json.dumps(manifest))
    assert load_embedder(stale).backend == "keras"
    with pytest.raises(ValueError, match="older than the Keras model"):
        load_embedder(stale, backend="onnx")


def test_pipeline_keeps_input_order(tiny_artifacts, paths):
    embedder = KerasEmbedder(tiny_artifacts)
    batched = embed_paths(embedder, paths, batch_size=7, workers=2).embeddings
    one_by_one = np.stack([embedder.embed_pixels(load_image(p, embedder.image_size)[None])[0] for p in paths[:10]])
    np.testing.assert_allclose(batched[:10], one_by_one, atol=1e-5)


def test_a_corrupt_file_in_the_middle_is_reported_and_the_rest_embedded(tiny_artifacts, paths, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(paths[0].read_bytes()[:200])
    mixed = [*paths[:5], bad, *paths[5:10]]
    result = embed_paths(KerasEmbedder(tiny_artifacts), mixed, batch_size=4)
    assert [i for i, _ in result.failed] == [5]
    assert "corrupt.jpg" in result.failed[0][1]
    assert result.ok == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10] and len(result.embeddings) == 10


def test_cache_reuses_unchanged_files_only(tiny_artifacts, paths, tmp_path):
    embedder = KerasEmbedder(tiny_artifacts)
    cache = EmbeddingCache(embedder.fingerprint, tmp_path)
    first = embed_paths(embedder, paths[:6], cache=cache)
    copy = tmp_path / "copy.jpg"
    shutil.copy(paths[0], copy)
    second = embed_paths(embedder, [*paths[:6], copy], cache=cache)
    assert first.cached == 0 and second.cached == 6
    np.testing.assert_allclose(second.embeddings[:6], first.embeddings, atol=1e-6)


def test_decoding_memory_stays_flat_however_long_the_folder(paths):
    """Peak Python-heap memory for 400 images is about that of 40: only a bounded window is in flight."""

    def peak(n_images: int) -> int:
        many = (paths * (n_images // len(paths) + 1))[:n_images]
        tracemalloc.start()
        for _batch in iter_decoded_batches(many, 96, batch_size=8, workers=2, prefetch_batches=2):
            pass
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(40), peak(400)
    assert large < 1.5 * small + 1_000_000
