"""Building and growing the catalogue index from a folder of photos."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from wildtrack.config import (
    DEFAULT_FOCUS,
    DEFAULT_FUSION_FEATURES,
    DEFAULT_LOCAL_DIMS,
    DEFAULT_LOCAL_KEYPOINTS,
    DEFAULT_LOCAL_MAX_SIDE,
    FusionFeatures,
)
from wildtrack.data import Record, load_dataset
from wildtrack.embed import Embedder, embed_files_cached, load_embedder
from wildtrack.features import Focus
from wildtrack.index import GalleryIndex, GalleryIndexError, IndexNotFoundError, MetaRow, image_id_for
from wildtrack.workflows import Advance, announce_total, next_stage

log = logging.getLogger(__name__)
ENROLLED_DIR = "enrolled"  # where the service stores enrolled photos, inside the index dir (serve.service)


@dataclass
class IndexReport:
    index_dir: Path
    added: int
    skipped: list[tuple[Path, str]]
    total: int
    rerank: str = ""  # how search will re-rank, or why it will not
    kept_enrolled: int = 0  # photos enrolled into the previous index, re-embedded and kept


def _rows_and_vectors(embedder: Embedder, records: list[Record], root: Path, advance: Advance | None):
    announce_total(advance, len(records))
    result = embed_files_cached(embedder, [r.path for r in records], progress=advance)
    rows = []
    for i in result.ok:
        rel = Path(os.path.relpath(records[i].path.resolve(), root)).as_posix()  # enrolled photos may lie outside
        rows.append(MetaRow(image_id_for(rel), rel, records[i].identity,
                            records[i].date.isoformat() if records[i].date else None))
    skipped = [(records[i].path, why) for i, why in result.failed]
    return rows, result.embeddings, skipped, [records[i] for i in result.ok]


def build_index(
    data: str | Path, artifacts: str | Path, index_dir: str | Path, kind: str = "flat",
    threshold: float | None = None, advance: Advance | None = None, overwrite: bool = True,
    backend: str = "auto", rerank_k: int | None = None, local_focus: Focus = DEFAULT_FOCUS,
    local_dims: int = DEFAULT_LOCAL_DIMS, force: bool = False, local_max_side: int = DEFAULT_LOCAL_MAX_SIDE,
    local_keypoints: int = DEFAULT_LOCAL_KEYPOINTS, fusion_features: FusionFeatures = DEFAULT_FUSION_FEATURES,
) -> IndexReport:
    """Embed every image of ``data`` and commit a new index (the previous one stays until the commit).

    With ``rerank_k``, a cosine + local-matching fusion is fitted on the catalogue itself (local features from
    ``local_focus``: the located turtle or the whole frame; RootSIFT reduced to ``local_dims`` principal
    components of the catalogue's, 0 for all 128; ``local_max_side`` px and ``local_keypoints`` keypoints; the
    fusion weighing ``fusion_features``) and saved as ``fusion.json``, so that ``search``
    re-orders each query's top ``rerank_k`` by local matching and decides "new individual" on the match
    probability. A catalogue that cannot be fitted (no turtle with two photos) gets a global-only index, and the
    report says why.

    ``threshold`` is the new-individual threshold of whichever score decides: the match probability when
    re-ranking is fitted (default: calibrated by the fit at a 5% false-accept rate), else the cosine (default:
    none, every photo gets its closest turtle).

    Photos enrolled into an existing index at ``index_dir`` (by the service, under ``enrolled/``) are kept:
    re-embedded from their files with this model and committed with the catalogue. When some of their files are
    gone the build refuses (ValueError naming how many) unless ``force``, which drops them.
    """
    from wildtrack.matching.fit import RerankFitError, fit_gallery_fusion
    from wildtrack.matching.gallery_fusion import FUSION_FILE
    from wildtrack.matching.reranker import local_reranker

    embedder = load_embedder(artifacts, backend=backend)  # first: a wrong model folder fails before any photo is read
    enrolled = _enrolled_photos(Path(index_dir), force)
    dataset = load_dataset(data)
    known = {r.path.resolve() for r in dataset.records}
    enrolled = [r for r in enrolled if r.path not in known]
    rows, vectors, skipped, records = _rows_and_vectors(embedder, dataset.records + enrolled, dataset.root, advance)
    fitted, note = None, "global search only"
    if rerank_k:
        try:
            reranker = local_reranker(rerank_k, local_focus, max_side=local_max_side, max_keypoints=local_keypoints)
            fitted = fit_gallery_fusion(records, vectors, rerank_k, reranker, fusion_features=fusion_features,
                                        projection_dims=local_dims,
                                        progress=next_stage(advance, "fitting local re-ranking"))
        except RerankFitError as exc:
            note = f"global search only: local re-ranking not fitted ({exc})"
    index = GalleryIndex.build(vectors, rows, embedder.fingerprint, kind=kind, data_root=dataset.root)
    if threshold is not None and fitted is None:
        index.set_decision_threshold(threshold)
    if fitted is not None and threshold is not None:  # the user's threshold decides for photos and encounters alike
        fitted.decision_threshold = fitted.encounter_threshold = threshold
    # the fusion is committed with the generation it was fitted for (an old one never pairs with the new index)
    extras = {} if fitted is None else {FUSION_FILE: fitted.to_bytes(embedder.fingerprint)}
    index.save(index_dir, overwrite=overwrite, extras=extras)
    if fitted is not None:
        decision = ("always names the closest turtle" if fitted.decision_threshold is None else
                    f"new individual below match probability {fitted.decision_threshold:.3f}"
                    + (" (given)" if threshold is not None else " (fitted)"))
        if threshold is None and fitted.encounter_threshold not in (None, fitted.decision_threshold):
            decision += f", {fitted.encounter_threshold:.3f} for the best photo of an encounter"
        features = ("full 128-d RootSIFT" + (" (too few keypoints to fit a projection)" if local_dims else "")
                    if fitted.projection is None else f"RootSIFT in {fitted.projection.dims} dims")
        note = (f"search re-ranks its top {fitted.k} by local matching ({features}; fitted on "
                f"{fitted.pseudo_queries} catalogue photos, identity weight {fitted.identity_weight}); {decision}")
    enrolled_paths = {r.path for r in enrolled}
    kept = sum(r.path in enrolled_paths for r in records)
    if kept:
        log.info("kept %d enrolled photo(s) of %s", kept, index_dir)
    return IndexReport(Path(index_dir), len(rows), skipped, len(index), note, kept)


def _enrolled_photos(index_dir: Path, force: bool) -> list[Record]:
    """The photos enrolled into the index at ``index_dir`` (files under its ``enrolled/``), as records to re-embed.

    ValueError when the index cannot be read, or some enrolled files are missing, since rebuilding would silently
    drop those photos; ``force`` drops them instead (logged).
    """
    try:
        old = GalleryIndex.load(index_dir)
    except IndexNotFoundError:
        return []
    except GalleryIndexError as exc:
        if force:
            log.warning("%s: rebuilding over an unreadable index (%s); photos enrolled into it are dropped", index_dir,
                        exc)
            return []
        raise ValueError(f"{index_dir}: the existing index cannot be read ({exc}), so photos enrolled into it cannot "
                         "be kept; rebuild with --force to replace it anyway") from exc
    enrolled_dir = (index_dir / ENROLLED_DIR).resolve()
    root = (old.data_root or index_dir).resolve()  # the service stores paths relative to this
    found: list[Record] = []
    missing: list[str] = []
    for row in old.rows:
        path = (root / row.path).resolve()
        if not path.is_relative_to(enrolled_dir):
            continue
        if path.is_file():
            found.append(Record(path, row.identity, row.path, date.fromisoformat(row.date) if row.date else None))
        else:
            missing.append(row.path)
    if missing and not force:
        raise ValueError(f"{index_dir} holds {len(missing)} enrolled photo(s) whose files are missing from "
                         f"{enrolled_dir} (e.g. {missing[0]}); rebuilding would drop them. Restore the files, or "
                         "rebuild with --force to drop them")
    if missing:
        log.warning("%s: dropping %d enrolled photo(s) whose files are missing (--force)", index_dir, len(missing))
    return found


def add_folder(
    index_dir: str | Path, artifacts: str | Path, data: str | Path | None = None, advance: Advance | None = None,
    backend: str = "auto",
) -> IndexReport:
    """Add the images of ``data`` (default: the index's own data root) that the index does not hold yet.

    New photos dropped into the catalogue folder, or a whole new identity folder, are picked up without
    re-embedding what is already indexed.
    """
    embedder = load_embedder(artifacts, backend=backend)
    index = GalleryIndex.load(index_dir, expected_model_fingerprint=embedder.fingerprint)
    root = index.data_root
    if root is None:
        raise ValueError(f"{index_dir}: the index records no data root; rebuild it with wildtrack index build")
    dataset = load_dataset(data or root)
    try:
        known = {row.path for row in index.rows}
        fresh = [r for r in dataset.records if r.path.resolve().relative_to(root).as_posix() not in known]
    except ValueError as exc:
        raise ValueError(f"{data} is not inside the catalogue's data root {root}: copy the photos there first") from exc
    if not fresh:
        return IndexReport(Path(index_dir), 0, [], len(index))
    rows, vectors, skipped, _ = _rows_and_vectors(embedder, fresh, root, advance)
    index.add(index_dir, vectors, rows, skip_existing=True)
    return IndexReport(Path(index_dir), len(rows), skipped, len(index))
