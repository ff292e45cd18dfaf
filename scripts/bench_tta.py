#!/usr/bin/env python
"""Test-time options for a trained model on the official split: input scale, flip averaging, multi-scale.

    python scripts/bench_tta.py --data ../shared/data/seaturtleid2022-dev --artifacts DIR [--sizes 224 320 448]

The trained network is fully convolutional up to its global average pooling, so the same weights run at any
input size: a model is rebuilt at each size and given the trained weights. Rows: each size alone; each size with
horizontal-flip averaging (mean of the photo's and its mirror's embeddings); and the mean of the embeddings at
all sizes (multi-scale). Gallery = ``split_closed == train``, queries = ``valid``. A mirrored turtle shows its
other side's pattern reversed, so flip averaging is expected to blur identity rather than help: this measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def model_at(trained, config: dict, size: int):
    """The trained embedding network rebuilt for ``size`` px input, with the trained weights."""
    from wildtrack.model import build_model, embedding_model, head_for_loss

    if size == int(trained.input.shape[1]):
        return embedding_model(trained)
    cfg = config.get("config", {})
    rebuilt = build_model(config["backbone"], int(trained.output.shape[-1]), int(config["embed_dim"]), size,
                          pretrained=False, head=head_for_loss(config.get("loss", "softmax")),
                          sub_centers=int(cfg.get("sub_centers", 1)))
    rebuilt.set_weights(trained.get_weights())
    return embedding_model(rebuilt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/seaturtleid2022-dev"))
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 320, 448])
    p.add_argument("--out", type=Path, default=Path("bench_out/tta.json"))
    args = p.parse_args()

    from wildtrack.data import load_dataset, official_split
    from wildtrack.evaluate import cosine_similarity, retrieval_metrics
    from wildtrack.images import load_images
    from wildtrack.model import load_model
    from wildtrack.model.artifacts import load_model_config
    from wildtrack.vectors import unit_rows as unit

    split = official_split(load_dataset(args.data).records)
    records = split.gallery + split.query
    ng = len(split.gallery)
    q_ids, g_ids = [r.identity for r in split.query], [r.identity for r in split.gallery]
    plain: dict[int, np.ndarray] = {}
    flipped: dict[int, np.ndarray] = {}
    seconds: dict[int, float] = {}
    trained, config = load_model(args.artifacts), load_model_config(args.artifacts / "model_config.yaml")
    for size in args.sizes:
        model = model_at(trained, config, size)
        pixels = load_images([r.path for r in records], size)
        t0 = time.perf_counter()
        for store, batch_of in ((plain, lambda x: x), (flipped, lambda x: x[:, :, ::-1])):
            out = [np.asarray(model.predict_on_batch(batch_of(pixels[i:i + 16]).astype(np.float32)))
                   for i in range(0, len(pixels), 16)]
            store[size] = unit(np.concatenate(out))
        seconds[size] = (time.perf_counter() - t0) / (2 * len(pixels))
        print(f"{size} px: {seconds[size] * 1000:.0f} ms per image per pass", flush=True)

    def row(name: str, emb: np.ndarray, passes: float) -> dict:
        r = retrieval_metrics(cosine_similarity(emb[ng:], emb[:ng]), q_ids, g_ids, ks=(1, 5, 10))
        return {"variant": name, "R@1": round(r.recall_at_k[1], 4), "R@5": round(r.recall_at_k[5], 4),
                "mAP": round(r.mAP, 4), "model_s_per_image": round(passes, 3), "num_queries": r.num_queries}

    rows = []
    for size in args.sizes:
        rows.append(row(f"{size} px", plain[size], seconds[size]))
        rows.append(row(f"{size} px + flip average", unit(plain[size] + flipped[size]), 2 * seconds[size]))
    rows.append(row("multi-scale mean " + "+".join(map(str, args.sizes)), unit(sum(plain.values())),
                    sum(seconds.values())))
    print(f"\n{'variant':<32}{'R@1':>7}{'R@5':>7}{'mAP':>7}{'model s/img':>13}")
    for r in rows:
        print(f"{r['variant']:<32}{r['R@1']:>7.3f}{r['R@5']:>7.3f}{r['mAP']:>7.3f}{r['model_s_per_image']:>13.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"artifacts": str(args.artifacts), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
