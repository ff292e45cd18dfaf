"""``run_demo``: the whole pipeline on generated data, so a new user sees every output in a few minutes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildtrack.config import EvalConfig, MatchingConfig, TrainConfig
from wildtrack.data.synth import generate_synthetic
from wildtrack.data.synth.card import generate_card, write_truth
from wildtrack.train import train
from wildtrack.visualize.report import write_report
from wildtrack.workflows import Log
from wildtrack.workflows.evaluation import EvaluationOutput, run_evaluation

DEMO_TRAIN = TrainConfig(backbone="mobilenetv2", image_size=96, embed_dim=128, epochs=8, head_epochs=1,
                         batch_size=32, learning_rate=2e-3, patience=4, split="time-aware")
# the card's turtles: a few the demo's catalogue holds (seed 0, 16 identities) and one it has never seen
CARD_KNOWN = (2, 5, 9, 13)
CARD_UNKNOWN = (16,)


@dataclass
class DemoOutput:
    data: Path
    artifacts: Path
    results: Path
    index: Path | None
    evaluation: EvaluationOutput
    card: Path
    seconds: float


def run_demo(out: str | Path, log: Log = print, train_cfg: TrainConfig = DEMO_TRAIN, identities: int = 16,
             images_per_id: int = 16, encounters: int = 6) -> DemoOutput:
    """Generate data → train → evaluate on new encounters → build a search index."""
    out = Path(out)
    t0 = time.perf_counter()
    data, artifacts, results = out / "data", out / "artifacts", out / "results"
    log(f"1/5 generating {identities} synthetic turtles × {images_per_id} photos over {encounters} encounters → {data}")
    # Several encounters per turtle: with few, any network learns each encounter's scenery instead of the turtle.
    generate_synthetic(data, identities=identities, images_per_id=images_per_id, image_size=128,
                       encounters_per_id=encounters, seed=0)
    log(f"2/5 training {train_cfg.backbone} ({train_cfg.loss}, {train_cfg.epochs} epochs) → {artifacts}")
    train(data, artifacts, train_cfg, log=lambda m: log("    " + m), verbose=0)
    log(f"3/5 evaluating on new encounters (time-aware split) → {results}")
    eval_cfg = EvalConfig(split="time-aware", examples=4, gradcam=2)
    evaluation = run_evaluation(data, artifacts, results, eval_cfg, log=lambda m: log("    " + m))
    index_dir = out / "index"
    log(f"4/5 building the search index → {index_dir}")
    index = _build_index(data, artifacts, index_dir, evaluation, eval_cfg, log)
    # the report again, now with the thresholds the demo's index serves beside the evaluation's own
    write_report(results, evaluation.report.model_dump(by_alias=True, mode="json"),
                 [p.name for p in evaluation.pictures], artifacts=artifacts, served=served_thresholds(index_dir))
    card = out / "card"
    log(f"5/5 a field card for `wildtrack survey`: {len(CARD_KNOWN)} catalogued turtles and {len(CARD_UNKNOWN)} new "
        f"one met twice, as a camera leaves them → {card}")
    _fresh(card)
    write_truth(out / "card_truth.csv", generate_card(card, CARD_KNOWN, CARD_UNKNOWN, seed=0, image_size=128))
    return DemoOutput(data, artifacts, results, index, evaluation, card, time.perf_counter() - t0)


def _fresh(folder: Path) -> None:
    """Remove a previous demo's card (only files the generator writes), so the demo can be run again."""
    if folder.is_dir():
        for f in folder.glob("IMG_*.JPG"):
            f.unlink()


def served_thresholds(index_dir: Path) -> dict[str, Any]:
    """The thresholds ``wildtrack search``, ``/health`` and the page use for this index: read by the same
    :class:`~wildtrack.search.CatalogueSearch` they use, so the report cannot quote another number."""
    from wildtrack.index import GalleryIndex
    from wildtrack.search import CatalogueSearch

    policy = CatalogueSearch(GalleryIndex.load(index_dir, verify=False), index_dir).policy
    return {"index": str(index_dir), "score": policy.score, "photo_threshold": policy.photo_threshold,
            "encounter_threshold": policy.encounter_threshold}


def _build_index(data: Path, artifacts: Path, index_dir: Path, evaluation: EvaluationOutput, cfg: EvalConfig,
                 log: Log) -> Path | None:
    """The index the demo's `serve` hint points at: re-ranking as evaluated; a global index gets the evaluated
    cosine threshold, a re-ranking one the match-probability threshold its own fit calibrates on the catalogue."""
    from wildtrack.workflows.indexing import build_index

    open_set = evaluation.report.open_set or {}
    threshold = open_set.get("threshold") if open_set.get("score") == "cosine" and cfg.rerank != "local" else None
    matching = MatchingConfig(**{k: getattr(cfg, k) for k in MatchingConfig.model_fields})  # as evaluated
    report = build_index(data, artifacts, index_dir, threshold=threshold, matching=matching)
    log(f"    {report.rerank}")
    return index_dir
