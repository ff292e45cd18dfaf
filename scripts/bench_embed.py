"""Benchmark: images/s from JPEG files on disk to unit vectors, for each embedding path, side by side.

    python scripts/bench_embed.py --data ../shared/data/seaturtleid2022-dev [--artifacts DIR] [--images 128]

(a) naive: full decode + resize + model.predict one image at a time (the original way)
(b) Keras backend with the pipeline (draft decode in threads, overlapped with batched inference)
(c) ONNX Runtime backend with the pipeline
(d) ceiling: inference alone on pre-decoded arrays (ONNX Runtime)
(e) ceiling: decoding alone (the pipeline's threads)
Each of (c), (d) and (e) uses every core on its own, so on a small machine the two stages of (c) compete for the
same cores and (c) is bounded by their sum, 1/(1/d + 1/e), not by min(d, e). To show whether the overlap itself
works, the same three are also run with one core per stage (one ONNX Runtime thread, one decoding thread):
(c1) pipeline, (d1) inference alone, (e1) decoding alone; there the pipeline should reach min(d1, e1).
Each is repeated; the median and the spread (min–max) are printed and written to bench_out/embed.json.
Peak RSS of a long run (--rss-images, default 5000: the data set repeated) is measured in a child process.
Without --artifacts a default model (MobileNetV2, ImageNet weights, untrained head) is built: speed does not
depend on training.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def default_artifacts(size: int, out: Path) -> Path:
    """An untrained-head default model saved as artifacts, plus its ONNX export."""
    from wildtrack.model import build_model
    from wildtrack.model.artifacts import save_model_files, save_preprocessor
    from wildtrack.model.export import export_onnx

    model = build_model("mobilenetv2", 10, 256, size)
    save_model_files(model, out)
    save_preprocessor({"image_size": [size, size], "embed_dim": 256, "use_l2norm": True}, out / "preprocessor.pkl")
    export_onnx(out)
    return out


def naive(paths, size, artifacts):
    from wildtrack.model import embedding_model, load_model

    model = embedding_model(load_model(artifacts))
    out = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize((size, size))
        out.append(model.predict(np.asarray(img, np.float32)[None], verbose=0)[0])
    return np.stack(out)


def timed(fn, n_images: int, repeats: int) -> dict:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n_images / (time.perf_counter() - t0))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": rates}


def peak_rss_mb() -> float:
    """This process's own peak RSS: ``VmHWM`` (per address space, so not inherited from the parent that forked
    us, unlike ``ru_maxrss`` on Linux), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(args) -> None:
    """Child mode: embed N images (the list repeated) with the auto backend and print peak RSS in MB."""
    from wildtrack.embed import embed_paths, load_embedder
    from wildtrack.images import is_image_name

    files = sorted(p for p in Path(args.data).rglob("*") if is_image_name(p))
    embedder = load_embedder(args.artifacts)
    embedder.embed_pixels(np.zeros((32, *embedder.image_size[::-1], 3), np.uint8))  # full batch: arena
    base = peak_rss_mb()
    many = (files * (args.rss_images // len(files) + 1))[: args.rss_images]
    t0 = time.perf_counter()
    result = embed_paths(embedder, many, batch_size=32)
    peak = peak_rss_mb()
    print(json.dumps({"images": len(result.ok), "backend": embedder.backend, "rss_after_model_warmup_mb": base,
                      "peak_rss_mb": peak, "images_per_s": len(result.ok) / (time.perf_counter() - t0)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/seaturtleid2022-dev")
    parser.add_argument("--artifacts", default=None)
    parser.add_argument("--images", type=int, default=128, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-images", type=int, default=5000)
    parser.add_argument("--out", default="bench_out/embed.json")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args)
        return

    from wildtrack.embed import KerasEmbedder, OnnxEmbedder, embed_paths
    from wildtrack.images import is_image_name, iter_decoded_batches, load_images

    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"no data at {data}: pass --data (the SeaTurtleID2022 sample or any photo folder)")
    files = sorted(p for p in data.rglob("*") if is_image_name(p))[: args.images]
    tmp = None
    artifacts = Path(args.artifacts) if args.artifacts else None
    if artifacts is None:
        tmp = Path(tempfile.mkdtemp())
        artifacts = default_artifacts(224, tmp)
    keras_e, onnx_e = KerasEmbedder(artifacts), OnnxEmbedder(artifacts)
    size = keras_e.image_size[0]
    n = len(files)
    print(f"{n} images from {data}, model input {size} px, {os.cpu_count()} cores, {args.repeats} repeats")
    for e in (keras_e, onnx_e):  # warm up (graph tracing, session init)
        e.embed_pixels(np.zeros((8, size, size, 3), np.uint8))
    naive_n = min(n, 32)
    pixels = load_images(files, size)
    results = {
        "a_naive_keras_one_by_one": timed(lambda: naive(files[:naive_n], size, artifacts), naive_n, args.repeats),
        "b_keras_pipeline": timed(lambda: embed_paths(keras_e, files), n, args.repeats),
        "c_onnx_pipeline": timed(lambda: embed_paths(onnx_e, files), n, args.repeats),
        "d_onnx_inference_only": timed(lambda: [onnx_e.embed_pixels(pixels[i:i + 32]) for i in range(0, n, 32)], n,
                                       args.repeats),
        "e_decode_only": timed(lambda: [b for b in iter_decoded_batches(files, size, 32)], n, args.repeats),
    }
    onnx_1 = OnnxEmbedder(artifacts, threads=1)
    onnx_1.embed_pixels(np.zeros((8, size, size, 3), np.uint8))
    results.update({
        "c1_onnx_pipeline_1+1_cores": timed(lambda: embed_paths(onnx_1, files, workers=1), n, args.repeats),
        "d1_onnx_inference_1_core": timed(lambda: [onnx_1.embed_pixels(pixels[i:i + 32]) for i in range(0, n, 32)],
                                          n, args.repeats),
        "e1_decode_1_core": timed(lambda: [b for b in iter_decoded_batches(files, size, 32, workers=1)], n,
                                  args.repeats),
    })
    med = {name: r["median"] for name, r in results.items()}
    ceiling = min(med["d_onnx_inference_only"], med["e_decode_only"])
    summary = {
        "c_over_a": med["c_onnx_pipeline"] / med["a_naive_keras_one_by_one"],
        "c_over_min_d_e": med["c_onnx_pipeline"] / ceiling,
        "shared_cores_bound": 1 / (1 / med["d_onnx_inference_only"] + 1 / med["e_decode_only"]),
        "c1_over_min_d1_e1": med["c1_onnx_pipeline_1+1_cores"] / min(med["d1_onnx_inference_1_core"],
                                                                       med["e1_decode_1_core"]),
    }
    summary["c_over_shared_cores_bound"] = med["c_onnx_pipeline"] / summary["shared_cores_bound"]
    child = subprocess.run([sys.executable, __file__, "--rss-child", "--data", str(data), "--artifacts",
                            str(artifacts), "--rss-images", str(args.rss_images)], capture_output=True, text=True)
    ok = child.returncode == 0
    rss = json.loads(child.stdout.strip().splitlines()[-1]) if ok else {"error": child.stderr[-2000:]}
    print(f"\n{'path':<32}{'median img/s':>14}{'min':>9}{'max':>9}")
    for name, r in results.items():
        print(f"{name:<32}{r['median']:>14.1f}{r['min']:>9.1f}{r['max']:>9.1f}")
    print(f"\n(c)/(a) = {summary['c_over_a']:.1f}x   (c)/min(d,e) = {summary['c_over_min_d_e']:.0%}   "
          f"(c)/(1/(1/d+1/e) = {summary['shared_cores_bound']:.1f}) = {summary['c_over_shared_cores_bound']:.0%}")
    print(f"one core per stage: (c1)/min(d1,e1) = {summary['c1_over_min_d1_e1']:.0%}")
    print(f"peak RSS over {rss.get('images')} images: {rss.get('peak_rss_mb', float('nan')):.0f} MB "
          f"(after loading the model and one batch: {rss.get('rss_after_model_warmup_mb', float('nan')):.0f} MB, "
          f"{rss.get('images_per_s', float('nan')):.1f} img/s, backend {rss.get('backend')})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": n, "image_size": size, "cores": os.cpu_count(), "results": results,
                               "summary": summary, "rss": rss}, indent=2))
    print(f"wrote {out}")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
