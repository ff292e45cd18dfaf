"""Catalogue jobs (embedding a catalogue, extracting its local features) on one machine or a Ray cluster.

A job is cut into shards of photos (:mod:`~wildtrack.jobs.plan`); a task (:mod:`~wildtrack.jobs.tasks`) turns one
shard into one file's bytes, loading its model once per worker; an engine (:mod:`~wildtrack.jobs.engines`) runs
the tasks here (``local``) or on Ray Data actor pools (``ray``); :mod:`~wildtrack.jobs.catalogue` writes each
shard as it arrives, so a killed job re-run does only the missing shards, and hands the results to the index's
commit. The interactive service never runs jobs: it reads what they committed.
"""

from wildtrack.jobs.catalogue import catalogue_feature_cache, embed_photos, extract_features, photo_ids
from wildtrack.jobs.engines import ENGINES, Engine, LocalEngine, RayEngine, make_engine, resolve_ray_address

__all__ = ["ENGINES", "Engine", "LocalEngine", "RayEngine", "catalogue_feature_cache", "embed_photos",
           "extract_features", "make_engine", "photo_ids", "resolve_ray_address"]
