"""``wildtrack train | evaluate | demo | index | search | serve``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from wildtrack.cli import checks
from wildtrack.cli.choices import (
    ARTIFACTS_HELP,
    BACKEND_HELP,
    INDEX_HELP,
    PANEL_TOPK_MAX,
    Backbone,
    Backend,
    EvalSplit,
    ExportFormat,
    IndexKind,
    Loss,
    TrainSplit,
)
from wildtrack.cli.common import Command, Group, console, err_console, fail, progress_bar, say, user_errors
from wildtrack.cli.matching_options import with_matching_options
from wildtrack.config import EvalConfig, IndexConfig, TrainConfig

EVAL_DEFAULTS, TRAIN_DEFAULTS = EvalConfig(), TrainConfig()

SPLIT_HELP = ("auto: official if the dataset has one, else time-aware, else per-identity. time-aware: new "
              "encounters against the catalogue (honest for field use); per-identity: random photos held out "
              "(optimistic); official: the dataset's split_closed column.")
ENGINE_HELP = ("local | ray: run the embedding and local-feature jobs on this machine, or on a Ray cluster (Ray "
               "Data actor pools; needs pip install 'wildtrack\\[scale]', see docs/scale.md).")
RAY_ADDRESS_HELP = ("With --engine ray: where the jobs run. Left out, ray.init()'s convention: the cluster in "
                    "RAY_ADDRESS if set, else the cluster `ray start` runs on this machine, else a local Ray runtime "
                    "started for the job (one line says which). Or: auto (the running cluster, which must exist), "
                    "ray://host:10001, or local (always start Ray on this machine).")
STORAGE_HELP = ("Object-storage option for an s3://… or gs://… --data, KEY=VALUE (repeatable), e.g. "
                "endpoint_url=http://127.0.0.1:9000; credentials come from the environment (AWS_ACCESS_KEY_ID …).")
DATA_HELP = "Catalogue photos (plain or SeaTurtleID2022 layout): a folder, or s3://bucket/prefix (fsspec URL)."


def _storage(pairs: list[str] | None) -> dict:
    """Set the process's object-storage options (``--storage-option``) and return them for the workflow."""
    from wildtrack.data import storage

    options = storage.parse_options(pairs or [])
    storage.configure(options)
    return options


def engine_for(name: str, ray_address: str | None):
    """The job engine a command asked for (`--engine`, `--ray-address`); Ray says in one line where it runs."""
    from wildtrack.jobs import make_engine

    return make_engine(name, ray_address, announce=say)


def train(
    data: Path = typer.Option(..., "--data", help="Dataset folder (plain or SeaTurtleID2022 layout)."),
    out: Path = typer.Option(..., "--out", help="Artifacts folder to write."),
    backbone: Backbone = typer.Option(TRAIN_DEFAULTS.backbone, help="mobilenetv2: ImageNet weights that work "
                                      "offline; the keras ones need a download; tiny: from scratch, for tests."),
    image_size: int = typer.Option(TRAIN_DEFAULTS.image_size, help="Input side in pixels."),
    embed_dim: int = typer.Option(TRAIN_DEFAULTS.embed_dim, help="Embedding dimension."),
    loss: Loss = typer.Option(TRAIN_DEFAULTS.loss, help="arcface+triplet is the best measured (docs/accuracy.md)."),
    epochs: int = typer.Option(TRAIN_DEFAULTS.epochs, help="Total epochs, head warm-up included."),
    head_epochs: int = typer.Option(TRAIN_DEFAULTS.head_epochs, help="Epochs with a frozen backbone first."),
    batch_size: int = typer.Option(TRAIN_DEFAULTS.batch_size, help="Photos per training step."),
    lr: float = typer.Option(TRAIN_DEFAULTS.learning_rate, "--lr", help="Head learning rate (backbone: a tenth)."),
    split: TrainSplit = typer.Option(TRAIN_DEFAULTS.split, help=SPLIT_HELP),
    allow_flip: bool = typer.Option(False, "--allow-flip/--no-allow-flip", metavar="",
                                    help="Allow horizontal flips (off: turtle profiles differ)."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", metavar="",
                                    help="Start from ImageNet weights where available."),
    max_minutes: float = typer.Option(None, help="Wall-time budget; the best epoch so far is kept."),
    seed: int = typer.Option(TRAIN_DEFAULTS.seed, help="Random seed (split, sampling, augmentation)."),
) -> None:
    """Train a re-ID model and write model.keras, model.h5, preprocessor.pkl, model_config.yaml, history.csv."""
    from wildtrack.config import AugmentConfig

    with user_errors({"learning_rate": "--lr", "augment.horizontal_flip": "--allow-flip"}):
        checks.existing_folder(data, "--data")
        cfg = TrainConfig(backbone=backbone, image_size=image_size, embed_dim=embed_dim, loss=loss, epochs=epochs,
                          head_epochs=head_epochs, batch_size=batch_size, learning_rate=lr, split=split,
                          augment=AugmentConfig(horizontal_flip=allow_flip), pretrained=pretrained,
                          max_minutes=max_minutes, seed=seed)
        checks.writable_folder(out, "--out")
        from wildtrack.train import train as run_train  # TensorFlow: only once the arguments are known to be good

        result = run_train(data, out, cfg, log=say)
    if result.best_epoch < 0:
        raise fail("no epoch finished: nothing was saved")
    console.print(f"best epoch {result.best_epoch}: val R@1 {result.best['val_R@1']:.3f}, "
                  f"mAP {result.best['val_mAP']:.3f}. Artifacts in {out}")


@with_matching_options("local: re-order the global top-K by local matching, fused with the cosine (reports both); "
                       "none: global only (faster).")
def evaluate(
    data: str = typer.Option(..., "--data", help="Dataset folder, or s3://bucket/prefix (fsspec URL)."),
    artifacts: Path = typer.Option(..., "--artifacts", help=ARTIFACTS_HELP),
    out: Path = typer.Option(Path("results"), "--out", help="Results folder."),
    split: EvalSplit = typer.Option("auto", help=SPLIT_HELP),
    topk: int = typer.Option(EVAL_DEFAULTS.topk, min=1, max=PANEL_TOPK_MAX,
                             help="Gallery matches shown per query in each retrieval panel."),
    examples: int = typer.Option(6, help="Number of retrieval_example_*.png panels."),
    gradcam: int = typer.Option(3, help="Number of gradcam_*.png pictures."),
    backend: Backend = typer.Option("auto", help=BACKEND_HELP),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    storage_option: list[str] = typer.Option(None, "--storage-option", help=STORAGE_HELP),
    matching_given: dict | None = None,
) -> None:
    """Recall@1/5/10 and mAP into metrics.json, with retrieval panels, t-SNE, Grad-CAM and report.html."""
    from wildtrack.data import load_dataset
    from wildtrack.data.splits import default_split_name

    with user_errors():
        checks.existing_folder(data, "--data")
        checks.model_folder(artifacts)
        checks.writable_folder(out, "--out")
        _storage(storage_option)
        dataset = load_dataset(data)
        split = default_split_name(dataset.records) if split == "auto" else split
        cfg = EvalConfig(split=split, topk=topk, examples=examples, gradcam=gradcam, **(matching_given or {}))
        from wildtrack.workflows.evaluation import run_evaluation  # the model stack, once the arguments are good

        with progress_bar("embedding", None) as advance:
            result = run_evaluation(dataset, artifacts, out, cfg, log=say, advance=advance, backend=backend,
                                    engine=engine_for(engine, ray_address))
    print_metrics(result.report.model_dump(by_alias=True, mode="json"))
    console.print(f"metrics: {out / 'metrics.json'}\nreport:  {out / 'report.html'}")


def print_metrics(m: dict) -> None:
    """The headline table; with re-ranking, the global-only figures first, so the gain is visible."""
    if "rerank" in m.get("extra", {}):
        g, f = m["extra"]["rerank"]["global_only"], m["extra"]["rerank"]["fused"]
        console.print(f"global only: R@1 {g['R@1']:.3f} R@5 {g['R@5']:.3f} mAP {g['mAP']:.3f}  →  "
                      f"with local re-ranking: R@1 {f['R@1']:.3f} R@5 {f['R@5']:.3f} mAP {f['mAP']:.3f}")
    table = Table("R@1", "R@5", "R@10", "mAP", "top-1 ID", "queries", "gallery", "IDs", title=f"split: {m['split']}")
    table.add_row(*(f"{m[k]:.3f}" for k in ("R@1", "R@5", "R@10", "mAP", "top1_identity_accuracy")),
                  str(m["num_queries"]), str(m["num_gallery"]), str(m["num_ids"]))
    console.print(table)
    def rate(v):
        return "n/a" if v is None else f"{v:.1%}"

    point = m.get("operating_point")
    if point:
        sentence = point["sentence"]
        console.print(f"operating point (fitted on this split's gallery, as index build fits it on a catalogue): "
                      f"{sentence}")
        for key, r in (point.get("on_evaluation_queries") or {}).items():
            if r and r.get("TAR") is not None:
                console.print(f"  on these queries, {'an encounter' if key == 'encounter' else 'one photo'}: "
                              f"true-accept {rate(r.get('TAR'))} of {r.get('num_known')}, false-accept "
                              f"{rate(r.get('FAR'))} of {r.get('num_unknown')}")
    if m.get("open_set") and "threshold" in m["open_set"]:
        o = m["open_set"]
        kind = "P(same)" if o.get("score") == "match_probability" else "cosine"
        console.print(f"[dim]diagnostic (threshold calibrated on these queries themselves): {kind} "
                      f"{o['threshold']:.3f}, true-accept {rate(o.get('TAR'))}, false-accept {rate(o.get('FAR'))}[/]")


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for data, artifacts, results, index."),
) -> None:
    """Generate synthetic turtles, train, evaluate on new encounters and build an index: every output, in minutes."""
    with user_errors():
        checks.writable_folder(out, "--out")
        from wildtrack.workflows.demo import run_demo  # TensorFlow: only once --out is known to be usable

        result = run_demo(out, log=say)
    print_metrics(result.evaluation.report.model_dump(by_alias=True, mode="json"))
    console.print(f"\n[bold]done in {result.seconds:.0f} s[/]")
    for label, path in (("data", result.data), ("artifacts", result.artifacts), ("results", result.results),
                        ("index", result.index), ("card", result.card)):
        console.print(f"  {label:<10}{path}")
    console.print(f"  {'report':<10}{result.results / 'report.html'}")
    for p in [*result.evaluation.pictures, result.artifacts / "training_curves.png"]:
        console.print(f"  {'picture':<10}{p}")
    console.print(f"\nnext, the search page: {serve_hint(result.index, result.artifacts)}")
    console.print(f"or a field day on the card: {survey_hint(result.card, result.index, result.artifacts)}")


def survey_hint(card: Path, index: Path, artifacts: Path) -> str:
    """The `survey run` command line for the demo's card, pasteable like :func:`serve_hint`'s."""
    import shlex

    return shlex.join([*_program(), "survey", "run", str(card.resolve()), "--index", str(index.resolve()),
                       "--artifacts", str(artifacts.resolve()), "--out", str((card.parent / "survey").resolve())])


def serve_hint(index: Path, artifacts: Path) -> str:
    """A `serve` command line that works when pasted: this very program (``.venv/bin/wildtrack`` is rarely on
    PATH) and absolute paths, shell-quoted."""
    import shlex

    return shlex.join([*_program(), "serve", "--index", str(index.resolve()), "--artifacts",
                       str(artifacts.resolve())])


def _program() -> list[str]:
    """How this very program is run from a shell."""
    import shutil
    import sys

    launched = Path(sys.argv[0]).resolve()
    on_path = shutil.which("wildtrack")
    if launched.name == "wildtrack" and launched.is_file():
        same = on_path is not None and Path(on_path).resolve() == launched
        return ["wildtrack" if same else str(launched)]
    return [sys.executable, "-m", "wildtrack.cli"]  # python -m wildtrack.cli, or a test runner


index_app = typer.Typer(cls=Group, help="Build and grow the catalogue search index.", no_args_is_help=True)


@index_app.command("build", cls=Command)
@with_matching_options("local: fit a local-matching fusion on the catalogue so that search re-orders its top-K by "
                       "local matching (better on new encounters); none: global search only.")
def index_build(
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    artifacts: Path = typer.Option(..., "--artifacts", help=ARTIFACTS_HELP),
    out: Path = typer.Option(..., "--out", help="Index folder: index.faiss, meta.csv, embeddings.npy, manifest."),
    kind: IndexKind = typer.Option("flat", help="flat: exact (default); hnsw | ivf: approximate, for large "
                                   "catalogues."),
    threshold: float = typer.Option(None, help="Score below which a photo is a new individual: the match "
                                    "probability when re-ranking (default: calibrated on the catalogue), else the "
                                    "cosine (see the open_set threshold in metrics.json). It decides encounters "
                                    "(search --encounter) too, instead of their own fitted threshold."),
    backend: Backend = typer.Option("auto", help=BACKEND_HELP),
    false_accept_rate: float = typer.Option(
        EVAL_DEFAULTS.target_far, "--false-accept-rate", min=0.0, max=1.0,
        help="With --rerank local: where the fitted new-individual thresholds sit, as the share of unknown turtles "
             "(the catalogue's own photos against its other turtles) that may be named as a known one. Lower: "
             "fewer wrong names, more known turtles called new."),
    force: bool = typer.Option(False, "--force", metavar="",
                               help="Rebuild even when photos enrolled into the existing index "
                               "cannot be kept (their files are gone, or the index is unreadable): they are dropped."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    storage_option: list[str] = typer.Option(None, "--storage-option", help=STORAGE_HELP),
    matching_given: dict | None = None,
) -> None:
    """Embed every catalogue photo and write the index (atomically)."""
    with user_errors({"target_far": "--false-accept-rate"}):
        checks.existing_folder(data, "--data")
        checks.model_folder(artifacts)
        cfg = IndexConfig(kind=kind, target_far=false_accept_rate, **(matching_given or {}))  # validates
    from wildtrack.workflows.indexing import build_index

    with user_errors(), progress_bar("embedding", None) as advance:
        report = build_index(data, artifacts, out, kind=kind, threshold=threshold, advance=advance, backend=backend,
                             force=force, matching=cfg, engine=engine_for(engine, ray_address),
                             storage_options=_storage(storage_option))
    console.print(f"indexed {report.total} images into {out}" +
                  (f" ({len(report.skipped)} unreadable skipped)" if report.skipped else "") + f"; {report.rerank}")


@index_app.command("add", cls=Command)
def index_add(
    index: Path = typer.Option(..., "--index", help=INDEX_HELP),
    artifacts: Path = typer.Option(..., "--artifacts", help=ARTIFACTS_HELP),
    data: str = typer.Option(None, "--data", help="Folder (or s3:// prefix) inside the catalogue's data root "
                             "(default: all of it)."),
    backend: Backend = typer.Option("auto", help=BACKEND_HELP),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    storage_option: list[str] = typer.Option(None, "--storage-option", help=STORAGE_HELP),
) -> None:
    """Add photos (or whole new identities) that are in the catalogue folder but not yet in the index."""
    with user_errors():
        checks.index_folder(index)
        checks.model_folder(artifacts)
        if data is not None:
            checks.existing_folder(data, "--data")
    from wildtrack.workflows.indexing import add_folder

    with user_errors(), progress_bar("embedding", None) as advance:
        report = add_folder(index, artifacts, data, advance=advance, backend=backend,
                            engine=engine_for(engine, ray_address), storage_options=_storage(storage_option))
    for path, why in report.skipped:
        err_console.print(f"[yellow]skipped[/] {escape(str(path))}: {escape(why)}")
    console.print(f"added {report.added} images; the index now holds {report.total}")


def serve(
    index: Path = typer.Option(..., "--index", help=INDEX_HELP),
    artifacts: Path = typer.Option(..., "--artifacts", help="The model the index was built with."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network: "
                             "needs --api-token)."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port of the page and the API."),
    threshold: float = typer.Option(None, help="Override the index's new-individual threshold."),
    rerank: bool = typer.Option(True, "--rerank/--no-rerank", metavar="",
                                help="Use local re-ranking when the index was built with --rerank local; "
                                     "--no-rerank: global search only (faster)."),
    api_token: str = typer.Option(None, "--api-token", envvar="WILDTRACK_API_TOKEN", show_default=False,
                                  help="Secret that /enroll and the survey writes require (Authorization: "
                                  "Bearer or X-API-Token); required with a --host beyond loopback. The page "
                                  "asks for it once. Visible to every user of this machine in `ps`: prefer "
                                  "--api-token-file or the environment variable."),
    api_token_file: Path = typer.Option(None, "--api-token-file", show_default=False, exists=True, dir_okay=False,
                                        help="Read the API token from this file (first line), so it never "
                                        "appears in the process list."),
    insecure_no_token: bool = typer.Option(False, "--insecure-no-token", metavar="",
                                           help="Listen beyond loopback without a token: anyone on the network "
                                           "can enrol. Only on a network you trust."),
    allowed_host: list[str] = typer.Option(None, "--allowed-host",
                                           help="A host name clients use to reach the server (repeatable); IP "
                                           "addresses, localhost and this machine's name always work."),
    max_concurrent: int = typer.Option(None, "--max-concurrent", min=1,
                                       help="Photos processed at once (default: the CPU count)."),
    max_queue: int = typer.Option(32, "--max-queue", min=0,
                                  help="Photos that may wait; beyond it they get a fast 503."),
    max_wait: float = typer.Option(20.0, "--max-wait", min=0.1,
                                   help="Seconds a photo request may wait for a slot; one that would wait longer "
                                   "gets a fast 503."),
    surveys: Path = typer.Option(None, "--surveys", show_default=False, file_okay=False,
                                 help="Folder for the surveys started on the page (one folder each: the card and "
                                 "its survey folder). Default: surveys/ inside the index folder."),
) -> None:
    """Run the web service and drag-and-drop page (docs at /docs)."""
    from wildtrack.config import ServeConfig
    with user_errors({"max_concurrent_inference": "--max-concurrent", "max_queued_requests": "--max-queue",
                      "max_wait_s": "--max-wait", "allowed_hosts": "--allowed-host"}):
        from wildtrack.serve.security import check_bind, check_token, is_loopback

        if api_token_file is not None:
            api_token = (api_token_file.read_text(encoding="utf-8").splitlines() or [""])[0]
        check_token(api_token or None)  # before the config, whose error would echo the token
        cfg = ServeConfig(host=host, port=port, rerank=rerank, api_token=api_token or None,
                          insecure_no_token=insecure_no_token,
                          allowed_hosts=allowed_host or [], max_concurrent_inference=max_concurrent,
                          max_queued_requests=max_queue, max_wait_s=max_wait, surveys_dir=surveys)
        check_bind(cfg)  # refuses --host 0.0.0.0 without a token, before anything loads
        checks.index_folder(index)
        checks.model_folder(artifacts)
        if not is_loopback(host) and not api_token:
            err_console.print(f"[bold red]warning:[/] --host {host} without --api-token: every machine on the "
                              "network can reach this server and enrol photos")
        from wildtrack.serve.app import run_server

        err_console.print(f"loading the model and the catalogue for http://{host}:{port}/ …")
        run_server(index, artifacts, cfg, threshold=threshold, on_ready=lambda: err_console.print(
            f"serving on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)"))


def export(
    artifacts: Path = typer.Option(..., "--artifacts", help="Folder with the trained model."),
    format: ExportFormat = typer.Option("onnx", "--format", help="Export format."),
    min_cosine: float = typer.Option(0.9999, help="Refuse the export if embeddings agree less than this."),
) -> None:
    """Export the embedding model for fast CPU inference; checked against Keras before it is kept."""
    with user_errors():
        checks.model_folder(artifacts)
        from wildtrack.model.export import export_onnx

        manifest = export_onnx(artifacts, min_cosine=min_cosine)
    check = manifest["check"]
    console.print(f"wrote {artifacts / manifest['onnx_file']}: {check['images']} sample images agree with Keras "
                  f"(min cosine {check['min_cosine']:.6f}, max |diff| {check['max_abs_diff']:.2e}); "
                  "evaluate/index/search/serve now use it automatically (--backend keras to opt out)")


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(train)
    app.command(cls=Command)(evaluate)
    app.command(cls=Command)(demo)
    app.add_typer(index_app, name="index")
    app.command(cls=Command)(serve)
    app.command(cls=Command)(export)
