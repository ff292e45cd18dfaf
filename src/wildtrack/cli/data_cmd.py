"""``wildtrack data …``: look at a dataset folder, or make a synthetic one."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from wildtrack.cli import checks
from wildtrack.cli.common import Command, Group, console, progress_bar, user_errors

app = typer.Typer(cls=Group, help="Inspect datasets and generate synthetic ones.", no_args_is_help=True)


@app.command(cls=Command)
def inspect(
    root: Path = typer.Argument(..., help="Dataset folder: ROOT/<identity>/<image> or the SeaTurtleID2022 layout."),
    no_verify: bool = typer.Option(False, "--no-verify", metavar="",
                                   help="Skip decoding each image (faster, finds less)."),
) -> None:
    """Count identities, images per identity and encounter dates; list unreadable files."""
    from wildtrack.data import SkippedFilesWarning, load_dataset
    from wildtrack.data.splits import default_split_name

    with user_errors(), warnings.catch_warnings():
        checks.existing_folder(root, "ROOT")
        warnings.simplefilter("ignore", SkippedFilesWarning)  # listed below instead
        ds = load_dataset(root, verify=not no_verify)
    counts = ds.counts()
    dates: dict[str, set] = {}
    for r in ds.records:
        dates.setdefault(r.identity, set())
        if r.date:
            dates[r.identity].add(r.date)
    console.print(f"[bold]{ds.root}[/]  layout: [cyan]{ds.layout}[/]")
    table = Table("identity", "images", "dates", "first", "last")
    for identity in ds.identities:
        d = sorted(dates[identity])
        table.add_row(identity, str(counts[identity]), str(len(d)), str(d[0]) if d else "-", str(d[-1]) if d else "-")
    console.print(table)
    per_id = sorted(counts.values())
    n_dated = sum(1 for r in ds.records if r.date)
    console.print(
        f"{len(ds.identities)} identities, {len(ds.records)} images "
        f"(per identity: min {per_id[0]}, median {per_id[len(per_id) // 2]}, max {per_id[-1]}); "
        f"{n_dated} images dated, {len({r.encounter for r in ds.records if r.date})} encounters"
    )
    splits = Counter(r.meta.get("split_closed") for r in ds.records if r.meta.get("split_closed"))
    if splits:
        console.print("split_closed: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    console.print(f"suggested evaluation split: {default_split_name(ds.records)}")
    if ds.skipped:
        console.print(f"[yellow]{len(ds.skipped)} unusable file(s):[/]")
        for path, why in ds.skipped:
            console.print(f"  {path}: {why}")
    else:
        console.print("unreadable files: none")


@app.command(cls=Command)
def synth(
    out: Path = typer.Argument(..., help="Folder to write (created; a previous synthetic output is replaced)."),
    identities: int = typer.Option(20, min=1, help="Number of individuals."),
    images_per_id: int = typer.Option(8, min=1, help="Photos per individual."),
    encounters: int = typer.Option(3, min=1, help="Encounters (dates) per individual."),
    image_size: int = typer.Option(128, min=32, max=1024, help="Square image side in pixels (the generator's range)."),
    seed: int = typer.Option(0, min=0, help="Random seed: same seed, same files."),
) -> None:
    """Generate procedural turtle heads whose identity lives in their pattern of scales."""
    from wildtrack.data.synth import generate_synthetic

    t0 = time.perf_counter()
    with user_errors(), progress_bar("generating", identities * images_per_id) as advance:
        generate_synthetic(out, identities=identities, images_per_id=images_per_id, image_size=image_size,
                           encounters_per_id=encounters, seed=seed, progress=advance)
    n = identities * images_per_id
    console.print(f"wrote {n} images of {identities} identities to {out} in {time.perf_counter() - t0:.1f} s")
