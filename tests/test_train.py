"""Training writes reloadable, safe, reproducible artifacts, and refuses data it cannot learn from."""

from __future__ import annotations

import csv
import io
import pickle
import zipfile

import keras
import numpy as np
import pytest
import yaml

from wildtrack.config import TrainConfig
from wildtrack.data import load_dataset
from wildtrack.images import load_images
from wildtrack.model import ArtifactError, build_model, embedding_model, load_model, load_preprocessor
from wildtrack.model.artifacts import save_preprocessor
from wildtrack.model.backbones import BACKBONES
from wildtrack.model.layers import CUSTOM_OBJECTS
from wildtrack.train import train

QUIET = {"log": lambda _m: None, "verbose": 0}


def _history(artifacts):
    with open(artifacts / "history.csv") as fh:
        return list(csv.DictReader(fh))


def _sample_pixels(synth_data, n=6, size=64):
    records = load_dataset(synth_data).records[:n]
    return load_images([r.path for r in records], size).astype(np.float32)


def test_training_writes_every_artifact(tiny_artifacts):
    for name in ("model.keras", "model.h5", "preprocessor.pkl", "model_config.yaml", "history.csv",
                 "training_curves.png"):
        assert (tiny_artifacts / name).is_file(), name
    config = yaml.safe_load((tiny_artifacts / "model_config.yaml").read_text())
    for key in ("created", "backbone", "weights_source", "embed_dim", "image_size", "epochs", "batch_size",
                "optimizer", "loss", "augmentations", "seed", "dataset", "library_versions"):
        assert key in config, key
    assert config["dataset"]["num_images"] == 120 and len(config["dataset"]["files_sha256"]) == 16
    rows = _history(tiny_artifacts)
    assert len(rows) == 6 and {"loss", "val_R@1", "val_mAP"} <= set(rows[0])


def test_preprocessor_holds_plain_data(tiny_artifacts):
    pre = load_preprocessor(tiny_artifacts / "preprocessor.pkl")
    assert pre["image_size"] == [64, 64] and pre["embed_dim"] == 32 and pre["use_l2norm"] is True
    assert len(pre["label2id"]) == 12
    assert all(pre["id2label"][i] == name for name, i in pre["label2id"].items())


@pytest.mark.parametrize("custom_objects", [None, CUSTOM_OBJECTS])
@pytest.mark.parametrize("name", ["model.keras", "model.h5"])
def test_both_model_files_reload_to_identical_embeddings(tiny_artifacts, synth_data, name, custom_objects):
    x = _sample_pixels(synth_data)
    reference = embedding_model(load_model(tiny_artifacts)).predict(x, verbose=0)
    model = keras.models.load_model(tiny_artifacts / name, custom_objects=custom_objects, compile=False)
    got = embedding_model(model).predict(x, verbose=0)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_h5_is_the_fallback_when_keras_file_is_missing(tiny_artifacts, tmp_path, synth_data):
    (tmp_path / "model.h5").write_bytes((tiny_artifacts / "model.h5").read_bytes())
    x = _sample_pixels(synth_data, n=2)
    a = embedding_model(load_model(tmp_path)).predict(x, verbose=0)
    b = embedding_model(load_model(tiny_artifacts)).predict(x, verbose=0)
    np.testing.assert_allclose(a, b, atol=1e-5)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/wildtrack_pwned",))


def test_a_crafted_preprocessor_is_refused_without_running_code(tmp_path):
    path = tmp_path / "preprocessor.pkl"
    path.write_bytes(pickle.dumps({"format_version": 1, "x": _Boom()}))
    with pytest.raises(ArtifactError, match="refusing"):
        load_preprocessor(path)
    import os

    assert not os.path.exists("/tmp/wildtrack_pwned")


def test_preprocessor_of_unknown_format_is_refused(tmp_path):
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"format_version": 99}))
    with pytest.raises(ArtifactError, match="format"):
        load_preprocessor(path)
    save_preprocessor({"image_size": [8, 8]}, path)
    assert load_preprocessor(path)["image_size"] == [8, 8]


def test_same_seed_gives_the_same_history(synth_data, tmp_path):
    cfg = TrainConfig(backbone="tiny", image_size=32, embed_dim=16, epochs=2, batch_size=16, split="per-identity",
                      patience=5)
    runs = [train(synth_data, tmp_path / f"run{i}", cfg, **QUIET).history for i in range(2)]
    for a, b in zip(*runs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_R@1"] == pytest.approx(b["val_R@1"])


@pytest.mark.parametrize("loss", ["arcface", "triplet", "arcface+triplet"])
def test_metric_learning_losses_train(synth_data, tmp_path, loss):
    cfg = TrainConfig(backbone="tiny", image_size=32, embed_dim=16, epochs=1, loss=loss, pk_identities=4,
                      pk_images=3, split="per-identity")
    result = train(synth_data, tmp_path, cfg, **QUIET)
    assert result.best_epoch == 1 and np.isfinite(result.history[0]["loss"])
    assert load_preprocessor(tmp_path / "preprocessor.pkl")["loss"] == loss


def test_fewer_than_two_identities_is_refused_before_training(tmp_path):
    from PIL import Image

    for k in range(4):
        path = tmp_path / "only" / f"{k}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (32, 32), (k * 50, 0, 0)).save(path)
    with pytest.raises(ValueError, match="at least 2 identities"):
        train(tmp_path, tmp_path / "out", TrainConfig(backbone="tiny", image_size=32, split="per-identity"), **QUIET)
    assert not (tmp_path / "out" / "model.keras").exists()


def test_training_loss_goes_down(tiny_artifacts):
    losses = [float(r["loss"]) for r in _history(tiny_artifacts)]
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("name", [n for n in BACKBONES if n not in ("mobilenetv2",)])
def test_every_backbone_round_trips_or_says_why_not(name, tmp_path):
    """Legacy .h5 must reload for every backbone marked h5_roundtrip; the others save model.weights.h5."""
    spec = BACKBONES[name]
    size = 64 if name != "tiny" else 48
    model = build_model(name, 3, embed_dim=8, image_size=size, pretrained=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    if spec.h5_roundtrip:
        model.save(tmp_path / "m.h5")
        got = keras.models.load_model(tmp_path / "m.h5", compile=False).predict(x, verbose=0)
        np.testing.assert_allclose(got, want, atol=1e-4)
    else:
        model.save(tmp_path / "m.h5")
        with pytest.raises(Exception):  # noqa: B017 - documents the Keras limitation that made us avoid .h5
            keras.models.load_model(tmp_path / "m.h5", compile=False)
        model.save_weights(tmp_path / "m.weights.h5")
        clone = build_model(name, 3, embed_dim=8, image_size=size, pretrained=False)
        clone.load_weights(tmp_path / "m.weights.h5")
        np.testing.assert_allclose(clone.predict(x, verbose=0), want, atol=1e-4)


def test_model_has_no_lambda_layers(tiny_artifacts):
    with zipfile.ZipFile(tiny_artifacts / "model.keras") as z:
        config = z.read("config.json").decode()
    assert "Lambda" not in config and '"l2norm"' in config
    assert io is not None
