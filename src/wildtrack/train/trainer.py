"""``train``: fit a re-ID model on a folder of photos and write every artifact a later stage needs.

Validation is by retrieval on a time-aware hold-out of the training data (new encounters of known
individuals), because classification accuracy on random hold-outs rewards memorising each encounter's scenery.
"""

from __future__ import annotations

import csv
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wildtrack.config import TrainConfig
from wildtrack.data import Dataset, Record, default_split_name, load_dataset, make_split, validation_split
from wildtrack.evaluate import cosine_similarity, retrieval_metrics
from wildtrack.images import load_images
from wildtrack.model import artifacts as art
from wildtrack.model.backbones import get_backbone
from wildtrack.model.builder import build_model, head_for_loss, set_backbone_trainable
from wildtrack.train.augment import augment_batch
from wildtrack.train.losses import arcface_loss, softmax_loss, triplet_loss
from wildtrack.train.sampler import PKSampler, shuffled_batches

Log = Callable[[str], None]


@dataclass
class TrainResult:
    artifacts: Path
    history: list[dict[str, float]]
    best_epoch: int
    best: dict[str, float]
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class _Arrays:
    """Decoded pixels and integer labels of one part of the data."""

    records: list[Record]
    pixels: np.ndarray
    labels: np.ndarray


def _decode(records: list[Record], size: int, label2id: dict[str, int], what: str, log: Log) -> _Arrays:
    t0 = time.perf_counter()
    pixels = load_images([r.path for r in records], size)
    log(f"decoded {len(records)} {what} images at {size} px in {time.perf_counter() - t0:.1f} s")
    labels = np.array([label2id.get(r.identity, -1) for r in records], dtype=np.int32)
    return _Arrays(records, pixels, labels)


def embed_arrays(model: keras.Model, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Unit embeddings of pre-decoded images with the ``l2norm`` output of a training model."""
    out = [np.asarray(model.predict_on_batch(pixels[i : i + batch_size].astype(np.float32)))
           for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _losses(cfg: TrainConfig, num_classes: int) -> tuple[dict[str, Any], dict[str, float]]:
    if cfg.loss == "softmax":
        return {"classifier": softmax_loss(num_classes, cfg.label_smoothing)}, {"classifier": 1.0}
    arc = arcface_loss(num_classes, cfg.arcface_margin, cfg.arcface_scale)
    tri = triplet_loss(cfg.triplet_margin, cfg.triplet_mining)
    if cfg.loss == "arcface":
        return {"classifier": arc}, {"classifier": 1.0}
    if cfg.loss == "triplet":
        return {"l2norm": tri}, {"l2norm": 1.0}
    return {"classifier": arc, "l2norm": tri}, {"classifier": 1.0, "l2norm": cfg.triplet_weight}


def _epoch_dataset(
    arrays: _Arrays, batches: np.ndarray, cfg: TrainConfig, epoch: int, outputs: tuple[str, ...]
) -> tf.data.Dataset:
    """Augmented batches for one epoch; decoding happened once, augmentation runs in parallel TF ops."""
    pixels, labels = arrays.pixels, arrays.labels

    def gather():
        for step, idx in enumerate(batches):
            yield pixels[idx], labels[idx], np.array([cfg.seed, epoch * 100_000 + step], dtype=np.int64)

    h, w = pixels.shape[1:3]
    ds = tf.data.Dataset.from_generator(
        gather,
        output_signature=(
            tf.TensorSpec((None, h, w, 3), tf.uint8),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((2,), tf.int64),
        ),
    )

    def transform(x, y, seed):
        x = augment_batch(x, seed, cfg.image_size, cfg.augment)
        return x, {name: y for name in outputs}

    options = tf.data.Options()
    options.deterministic = True
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(batches)))
    return ds.map(transform, num_parallel_calls=2).prefetch(2).with_options(options)


def _validate(emb_model: keras.Model, val: dict[str, _Arrays]) -> dict[str, float]:
    q = embed_arrays(emb_model, val["query"].pixels)
    g = embed_arrays(emb_model, val["gallery"].pixels)
    query_ids = [r.identity for r in val["query"].records]
    gallery_ids = [r.identity for r in val["gallery"].records]
    result = retrieval_metrics(cosine_similarity(q, g), query_ids, gallery_ids)
    return {"val_R@1": result.recall_at_k[1], "val_R@5": result.recall_at_k.get(5, float("nan")),
            "val_mAP": result.mAP}


def _library_versions() -> dict[str, str]:
    import PIL
    import sklearn

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "scikit-learn": sklearn.__version__}


def _write_history(history: list[dict[str, float]], out: Path) -> None:
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    from wildtrack.visualize.curves import plot_training_curves

    plot_training_curves(history, out / "training_curves.png")


class _Run:
    """State of one training run: model, data, best checkpoint on disk."""

    def __init__(self, dataset: Dataset, out: Path, cfg: TrainConfig, log: Log, verbose: int = 1):
        self.cfg, self.out, self.log, self.dataset, self.verbose = cfg, out, log, dataset, verbose
        split_name = cfg.split if cfg.split != "auto" else default_split_name(dataset.records)
        self.split = make_split(dataset.records, split_name, seed=cfg.seed)
        self.val_split = validation_split(self.split.train, seed=cfg.seed)
        train_records = self.val_split.train
        identities = sorted({r.identity for r in train_records})
        if len(identities) < 2:
            raise ValueError(f"training needs at least 2 identities; the {split_name} split leaves {len(identities)}")
        self.label2id = {name: i for i, name in enumerate(identities)}
        log(f"split {split_name}: training on {len(train_records)} images of {len(identities)} identities; "
            f"validating {len(self.val_split.query)} new-encounter queries against {len(self.val_split.gallery)}")
        size = cfg.image_size
        self.train = _decode(train_records, size, self.label2id, "training", log)
        self.val = {
            "query": _decode(self.val_split.query, size, self.label2id, "validation query", log),
            "gallery": _decode(self.val_split.gallery, size, self.label2id, "validation gallery", log),
        }
        self.spec = get_backbone(cfg.backbone)
        self.model = build_model(cfg.backbone, len(identities), cfg.embed_dim, size, pretrained=cfg.pretrained,
                                 head=head_for_loss(cfg.loss), sub_centers=cfg.sub_centers)
        emb = self.model.get_layer("l2norm").output
        self.train_model = keras.Model(self.model.input, {"classifier": self.model.output, "l2norm": emb})
        self.emb_model = keras.Model(self.model.input, emb)
        self.losses, self.weights = _losses(cfg, len(identities))
        self.sampler = None
        if cfg.loss in ("triplet", "arcface+triplet"):
            self.sampler = PKSampler(self.train.labels, cfg.pk_identities, cfg.pk_images, seed=cfg.seed)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}
        self.best_epoch = -1
        self.started = time.perf_counter()

    def _batches(self, epoch: int) -> np.ndarray:
        if self.sampler is not None:
            return self.sampler.epoch(epoch)
        return shuffled_batches(len(self.train.labels), min(self.cfg.batch_size, len(self.train.labels)),
                                self.cfg.seed, epoch)

    def _compile(self, lr: float, steps: int) -> None:
        schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.05)
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=self.cfg.weight_decay)
        self.train_model.compile(optimizer=optimizer, loss=self.losses, loss_weights=self.weights,
                                 jit_compile=False)

    def _steps_per_epoch(self) -> int:
        return len(self._batches(0))

    def run_phase(self, name: str, epochs: range, lr: float, backbone_trainable: bool) -> bool:
        """Train some epochs; returns False when stopping early (patience or time budget)."""
        if not epochs:
            return True
        from_scratch = not self.cfg.pretrained or self.cfg.backbone == "tiny"
        fraction = 1.0 if from_scratch else self.cfg.finetune_fraction
        set_backbone_trainable(self.model, backbone_trainable, freeze_batchnorm=not from_scratch, fraction=fraction)
        self._compile(lr, len(epochs) * self._steps_per_epoch())
        for epoch in epochs:
            t0 = time.perf_counter()
            batches = self._batches(epoch)
            ds = _epoch_dataset(self.train, batches, self.cfg, epoch, tuple(self.losses))
            fit = self.train_model.fit(ds, epochs=1, verbose=self.verbose, shuffle=False)
            metrics = _validate(self.emb_model, self.val)
            row = {"epoch": epoch + 1, "phase": name, "loss": float(fit.history["loss"][-1]), **metrics,
                   "seconds": round(time.perf_counter() - t0, 2)}
            self.history.append(row)
            improved = self._score(metrics) > self._score(self.best)
            self.log(f"epoch {epoch + 1}/{self.cfg.epochs} [{name}] loss {row['loss']:.4f}  "
                     f"val R@1 {metrics['val_R@1']:.3f}  mAP {metrics['val_mAP']:.3f}"
                     f"{'  (best, saved)' if improved else ''}  {row['seconds']:.0f} s")
            if improved:
                self.best, self.best_epoch = metrics, epoch + 1
                self.save()
            if self.sampler is not None and self.cfg.hard_negatives:
                self.sampler.update_confusers(embed_arrays(self.emb_model, self.train.pixels), self.train.labels)
            if name == "finetune" and epoch + 1 - self.best_epoch >= self.cfg.patience:
                self.log(f"no improvement for {self.cfg.patience} epochs: stopping early")
                return False
            if self.cfg.max_minutes and time.perf_counter() - self.started > self.cfg.max_minutes * 60:
                self.log(f"time budget of {self.cfg.max_minutes} min reached: stopping")
                return False
        return True

    @staticmethod
    def _score(metrics: dict[str, float]) -> float:
        """Model selection on the validation encounters: mAP first, R@1 a minor term.

        The hold-out is small (on the SeaTurtleID2022 sample ~50 queries, so one query moves R@1 by 0.02 and it
        jumps between epochs); mAP averages over every true match of every query and moves smoothly.
        """
        if not metrics:
            return -math.inf
        return metrics["val_mAP"] + 0.25 * metrics["val_R@1"]

    def preprocessor(self) -> dict[str, Any]:
        return {
            "image_size": [self.cfg.image_size, self.cfg.image_size],
            "preprocessing": "RGB uint8 full frame resized to image_size; the model normalises internally",
            "embed_dim": self.cfg.embed_dim,
            "use_l2norm": True,
            "embedding_layer": "l2norm",
            "label2id": dict(self.label2id),
            "id2label": {i: name for name, i in self.label2id.items()},
            "backbone": self.cfg.backbone,
            "loss": self.cfg.loss,
            "split": self.split.name,
            "validation_split": self.val_split.name,
        }

    def model_config(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "backbone": cfg.backbone,
            "weights_source": self.spec.weights_source if cfg.pretrained else "random initialisation",
            "weights_license": self.spec.weights_license,
            "embed_dim": cfg.embed_dim,
            "image_size": cfg.image_size,
            "epochs": cfg.epochs,
            "head_epochs": cfg.head_epochs,
            "batch_size": self.sampler.batch_size if self.sampler else cfg.batch_size,
            "optimizer": {"name": "AdamW", "learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay,
                          "schedule": "cosine per phase; backbone phase at lr/10"},
            "loss": cfg.loss,
            "config": cfg.model_dump(mode="json"),
            "augmentations": cfg.augment.model_dump(mode="json"),
            "seed": cfg.seed,
            "dataset": {"root": str(self.dataset.root), "layout": self.dataset.layout,
                        **self.dataset.fingerprint(), "split": self.split.summary(),
                        "validation": self.val_split.summary()},
            "best_epoch": self.best_epoch,
            "best_validation": self.best,
            "model_files": self.model_files,
            "library_versions": _library_versions(),
        }

    @property
    def model_files(self) -> list[str]:
        return [art.MODEL_KERAS, art.MODEL_H5 if self.spec.h5_roundtrip else art.MODEL_WEIGHTS_H5]

    def save(self) -> None:
        art.save_model_files(self.model, self.out, h5_supported=self.spec.h5_roundtrip)
        art.save_preprocessor(self.preprocessor(), self.out / art.PREPROCESSOR)
        art.save_model_config(self.model_config(), self.out / art.MODEL_CONFIG)


def train(
    data: str | Path | Dataset, out: str | Path, cfg: TrainConfig | None = None, log: Log = print,
    verbose: int = 1,
) -> TrainResult:
    """Train and write ``model.keras``, ``model.h5``, ``preprocessor.pkl``, ``model_config.yaml``,
    ``history.csv`` and ``training_curves.png`` into ``out``. The best epoch (by validation retrieval) is
    what is on disk at any moment, so an interrupted run leaves usable artifacts."""
    cfg = cfg or TrainConfig()
    keras.utils.set_random_seed(cfg.seed)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(dataset, out, cfg, log, verbose)
    head_epochs = 0 if not cfg.pretrained or cfg.backbone == "tiny" else min(cfg.head_epochs, cfg.epochs)
    interrupted = False
    try:
        keep_going = run.run_phase("head", range(head_epochs), cfg.learning_rate, backbone_trainable=False)
        if keep_going:
            lr = cfg.learning_rate / 10 if head_epochs else cfg.learning_rate
            run.run_phase("finetune", range(head_epochs, cfg.epochs), lr, backbone_trainable=True)
    except KeyboardInterrupt:
        interrupted = True
        kept = run.best_epoch > 0
        log("interrupted: the best checkpoint so far is kept" if kept else "interrupted before any epoch finished")
    _write_history(run.history, out)
    if run.best_epoch > 0:
        art.save_model_config(run.model_config(), out / art.MODEL_CONFIG)
    return TrainResult(out, run.history, run.best_epoch, run.best, interrupted)
