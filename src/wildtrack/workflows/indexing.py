"""Building and growing the catalogue index from a folder of photos, or from object storage (``s3://…``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from wildtrack.config import ENROLLED_DIR, MatchingConfig
from wildtrack.data import Record, load_dataset, storage
from wildtrack.decide.policy import operating_point
from wildtrack.embed import Embedder, load_embedder
from wildtrack.index import GalleryIndex, GalleryIndexError, IndexNotFoundError, MetaRow, image_id_for
from wildtrack.jobs import Engine, LocalEngine, catalogue_feature_cache, embed_photos, extract_features
from wildtrack.jobs.catalogue import STAGING_DIR, clear_staging
from wildtrack.workflows import Advance, announce_total, next_stage

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    index_dir: Path
    added: int
    skipped: list[tuple[Path, str]]
    total: int
    rerank: str = ""  # how search will re-rank, or why it will not
    kept_enrolled: int = 0  # photos enrolled into the previous index, re-embedded and kept


def _rows_and_vectors(embedder: Embedder, records: list[Record], root: Path | str, advance: Advance | None,
                      engine: Engine, artifacts: str | Path, backend: str, index_dir: Path):
    announce_total(advance, len(records))
    result = embed_photos(engine, embedder, artifacts, backend, [r.path for r in records], index_dir / STAGING_DIR,
                          advance)
    rows = []
    for i in result.ok:
        rel = storage.relative(records[i].path, root)  # enrolled photos may lie outside (../)
        rows.append(MetaRow(image_id_for(rel), rel, records[i].identity,
                            records[i].date.isoformat() if records[i].date else None))
    skipped = [(records[i].path, why) for i, why in result.failed]
    return rows, result.embeddings, skipped, [records[i] for i in result.ok]


def build_index(
    data: str | Path, artifacts: str | Path, index_dir: str | Path, kind: str = "flat",
    threshold: float | None = None, advance: Advance | None = None, overwrite: bool = True,
    backend: str = "auto", matching: MatchingConfig | None = None, force: bool = False,
    engine: Engine | None = None, storage_options: Mapping[str, Any] | None = None,
) -> IndexReport:
    """Embed every image of ``data`` and commit a new index (the previous one stays until the commit).

    With ``matching`` (e.g. ``MatchingConfig()``, the ``best`` preset, or ``MatchingConfig(matching="fast")``) and
    its ``rerank="local"``, a cosine + local-matching fusion is fitted on the catalogue itself (its local features,
    focus, size, keypoints, projection and fusion features) and saved as ``fusion.json``, so that ``search``
    re-orders each query's top ``rerank_k`` by local matching and decides "new individual" on the match
    probability. Without it (None, or ``rerank="none"``) search is global only. A catalogue that cannot be fitted
    (no turtle with two photos) gets a global-only index, and the report says why.

    ``threshold`` is the new-individual threshold of whichever score decides: the match probability when
    re-ranking is fitted (default: calibrated by the fit at ``matching.target_far``, 5 % false accepts), else the
    cosine (default: none, every photo gets its closest turtle).

    Photos enrolled into an existing index at ``index_dir`` (by the service, under ``enrolled/``) are kept:
    re-embedded from their files with this model and committed with the catalogue. When some of their files are
    gone the build refuses (ValueError naming how many) unless ``force``, which drops them.

    ``engine`` runs the embedding and local-feature jobs (:mod:`wildtrack.jobs`; default: here, with threads);
    with re-ranking, the catalogue's local features are committed with the index as its feature store, which
    searches read instead of extracting the catalogue's photos again.

    ``data`` may be an object-storage URL (``s3://bucket/prefix``): its photos are read through fsspec with
    ``storage_options`` (e.g. ``endpoint_url``; credentials from the environment), here and on a cluster's
    workers, and the index keeps their paths relative to that URL.
    """
    from wildtrack.matching.fit import RerankFitError, fit_pipeline
    from wildtrack.matching.pipeline import FUSION_FILE, build_pipeline

    embedder = load_embedder(artifacts, backend=backend)  # first: a wrong model folder fails before any photo is read
    if storage_options is not None:
        storage.configure(storage_options)
    enrolled = _enrolled_photos(Path(index_dir), force)
    dataset = load_dataset(data)
    known = {storage.resolve(r.path) for r in dataset.records}
    enrolled = [r for r in enrolled if r.path not in known]
    engine = engine or LocalEngine()
    index_dir = Path(index_dir)
    rows, vectors, skipped, records = _rows_and_vectors(embedder, dataset.records + enrolled, dataset.root, advance,
                                                        engine, artifacts, backend, index_dir)
    fitted, note, store = None, "global search only", {}
    if matching is not None and matching.rerank == "local":
        pipeline = build_pipeline(matching)
        extractor = pipeline.extractor
        store = extract_features(engine, extractor, [(row.image_id, r.path) for row, r in zip(rows, records,
                                                                                              strict=True)],
                                 index_dir, next_stage(advance, "extracting local features"))
        try:
            fitted = fit_pipeline(pipeline.reading(catalogue_feature_cache(extractor, index_dir, store, dataset.root)),
                                  records, vectors, projection_dims=matching.local_dims,
                                  target_far=matching.target_far,
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
    index.save(index_dir, overwrite=overwrite, extras=extras, shards=store)
    clear_staging(index_dir)
    if fitted is not None:
        decision = operating_point("match_probability", fitted.decision_threshold, fitted.encounter_threshold,
                                   fitted.fit_report, overridden=threshold is not None).sentence()
        features = fitted.features_summary(matching.local_dims)
        note = (f"search ({fitted.preset}) re-ranks its top {fitted.k} by local matching ({features}; fitted on "
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
    if storage.is_url(old.data_root):  # the service enrols into local folders only: nothing to keep
        return []
    root = Path(old.data_root or index_dir).resolve()  # the service stores paths relative to this
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
    backend: str = "auto", engine: Engine | None = None, storage_options: Mapping[str, Any] | None = None,
) -> IndexReport:
    """Add the images of ``data`` (default: the index's own data root) that the index does not hold yet.

    New photos dropped into the catalogue folder, or a whole new identity folder, are picked up without
    re-embedding what is already indexed; on an index with a feature store, their local features are extracted
    and the store grows by their shards. ``engine`` runs both jobs, and ``storage_options`` open an
    object-storage data root, as for :func:`build_index`.
    """
    embedder = load_embedder(artifacts, backend=backend)
    if storage_options is not None:
        storage.configure(storage_options)
    index = GalleryIndex.load(index_dir, expected_model_fingerprint=embedder.fingerprint)
    root = index.data_root
    if root is None:
        raise ValueError(f"{index_dir}: the index records no data root; rebuild it with wildtrack index build")
    dataset = load_dataset(data or root)
    known = {row.path for row in index.rows}
    fresh, outside = _inside_root(dataset.records, root)
    if outside and not fresh and data is not None:
        raise ValueError(f"{data} is not inside the catalogue's data root {root}: copy the photos there first")
    for path in outside:  # e.g. a symbolic link to a photo elsewhere: its path cannot be stored relative to root
        log.warning("skipped %s: it lies outside the catalogue's data root %s (a link?); copy it there", path, root)
    outside_skipped = [(Path(str(p)), f"outside the catalogue's data root {root}") for p in outside]
    fresh = [r for r in fresh if storage.relative(r.path, root) not in known]
    if not fresh:
        return IndexReport(Path(index_dir), 0, outside_skipped, len(index))
    engine = engine or LocalEngine()
    index_dir = Path(index_dir)
    rows, vectors, skipped, records = _rows_and_vectors(embedder, fresh, root, advance, engine, artifacts, backend,
                                                        index_dir)
    store = None
    pipeline = _committed_pipeline(index, index_dir)
    if index.shards and pipeline is not None and rows:
        store = extract_features(engine, pipeline.extractor, [(row.image_id, r.path) for row, r in zip(rows, records,
                                                                                                     strict=True)],
                                 index_dir, next_stage(advance, "extracting local features"), keep=index.shards)
    index.add(index_dir, vectors, rows, skip_existing=True, shards=store)
    clear_staging(index_dir)
    return IndexReport(Path(index_dir), len(rows), outside_skipped + skipped, len(index))


def _inside_root(records: list[Record], root: Path | str) -> tuple[list[Record], list[Path | str]]:
    """The records whose photos lie inside ``root``, and the paths of those that do not."""
    inside: list[Record] = []
    outside: list[Path | str] = []
    for r in records:
        try:
            rel = storage.relative(r.path, root)
        except ValueError:
            rel = "../"
        if rel.startswith("../"):
            outside.append(r.path)
        else:
            inside.append(r)
    return inside, outside


def _committed_pipeline(index: GalleryIndex, index_dir: Path):
    from wildtrack.matching.pipeline import committed_pipeline

    return committed_pipeline(index, index_dir)
