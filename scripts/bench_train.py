"""Benchmark: train the default model on the real SeaTurtleID2022 sample and compare it, side by side, with
the same backbone's ImageNet features and no training, at the same input size.

    python scripts/bench_train.py --data ../shared/data/seaturtleid2022-dev [--budget-min 30]

Training uses the official split's `train` rows (with its own time-aware validation hold-out); the figures are
Recall@1/5 and mAP of `valid` queries against the `train` gallery, by the global embedding alone (local re-ranking
is measured by scripts/bench_rerank.py and scripts/bench_accuracy.py). Also reported: training and inference
images/s at the default size on this CPU, and peak RSS. Extra `--set key=value` options override TrainConfig.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def imagenet_anchor(data: Path, size: int) -> dict:
    """Same backbone, ImageNet weights, global average pooling, no training."""
    import numpy as np

    from wildtrack.data import load_dataset, official_split
    from wildtrack.evaluate import cosine_similarity, retrieval_metrics
    from wildtrack.images import load_images
    from wildtrack.model.mobilenetv2_torch import imagenet_mobilenetv2

    split = official_split(load_dataset(data, verify=False).records)
    model = imagenet_mobilenetv2(size)

    def embed(records):
        pixels = load_images([r.path for r in records], size)
        batches = (pixels[i:i + 16].astype("float32") for i in range(0, len(pixels), 16))
        maps = [np.asarray(model.predict_on_batch(b)) for b in batches]
        return np.concatenate([m.mean(axis=(1, 2)) for m in maps])

    r = retrieval_metrics(cosine_similarity(embed(split.query), embed(split.gallery)),
                          [x.identity for x in split.query], [x.identity for x in split.gallery])
    return {"R@1": r.recall_at_k[1], "R@5": r.recall_at_k[5], "mAP": r.mAP, "num_queries": r.num_queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/seaturtleid2022-dev")
    parser.add_argument("--budget-min", type=float, default=30.0)
    parser.add_argument("--out", default="bench_out/train.json")
    parser.add_argument("--artifacts", default=None, help="keep the trained model here (default: a temp dir)")
    parser.add_argument("--no-anchor", action="store_true", help="skip the ImageNet-features comparison")
    parser.add_argument("--set", action="append", default=[], help="TrainConfig override, e.g. --set loss=arcface")
    args = parser.parse_args()

    from wildtrack.config import EvalConfig, TrainConfig
    from wildtrack.train import train
    from wildtrack.workflows.evaluation import run_evaluation

    data = Path(args.data)
    overrides = dict(item.split("=", 1) for item in args.set)
    cfg = TrainConfig(split="official", max_minutes=args.budget_min, **{k: _value(v) for k, v in overrides.items()})
    artifacts = Path(args.artifacts or tempfile.mkdtemp(prefix="wildtrack-bench-"))
    t0 = time.perf_counter()
    result = train(data, artifacts, cfg, verbose=0)
    train_s = time.perf_counter() - t0
    epoch_s = [row["seconds"] for row in result.history]
    config = yaml.safe_load((artifacts / "model_config.yaml").read_text())
    n_train = config["dataset"]["validation"]["train_images"]
    evaluation = run_evaluation(data, artifacts, Path(artifacts) / "results",
                                EvalConfig(split="official", examples=4, gradcam=2, rerank="none"), log=print,
                                backend="keras")
    m = evaluation.report
    anchor = None if args.no_anchor else imagenet_anchor(data, cfg.image_size)
    out = {
        "config": cfg.model_dump(mode="json"),
        "cores": os.cpu_count(),
        "train_seconds": round(train_s, 1),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "training_images_per_epoch": n_train,
        "train_images_per_s_incl_validation": round(n_train * len(epoch_s) / max(sum(epoch_s), 1e-9), 2),
        "inference_images_per_s_keras": round(m.timings_s.get("embed_images_per_s", 0.0), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "trained_official": {"R@1": m.r_at_1, "R@5": m.r_at_5, "mAP": m.mean_ap, "num_queries": m.num_queries},
        "imagenet_features_official": anchor,
        "artifacts": str(artifacts),
        "history": result.history,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"\n{'model':<40}{'R@1':>7}{'R@5':>7}{'mAP':>7}")
    for name, r in ((f"trained {cfg.backbone} {cfg.loss} @{cfg.image_size}", out["trained_official"]),
                    (f"ImageNet {cfg.backbone} features @{cfg.image_size}", anchor)):
        if r is None:
            continue
        print(f"{name:<40}{r['R@1']:>7.3f}{r['R@5']:>7.3f}{r['mAP']:>7.3f}")
    print(f"training {out['train_seconds']:.0f} s ({out['epochs_run']} epochs, best {out['best_epoch']}), "
          f"{out['train_images_per_s_incl_validation']} img/s incl. validation; inference "
          f"{out['inference_images_per_s_keras']} img/s; peak RSS {out['peak_rss_mb']} MB\nwrote {path}")


if __name__ == "__main__":
    main()
