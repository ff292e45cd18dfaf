"""Where a job's shards run: in this process (``local``) or on a Ray cluster through Ray Data (``ray``).

Both engines take the same tasks and shards and yield each shard's bytes as it finishes; what happens to them
(written, resumed, committed) is :mod:`wildtrack.jobs.catalogue`'s, so the two engines produce the same files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from wildtrack.jobs.plan import DEFAULT_SHARD_SIZE, Shard

__all__ = ["ENGINES", "Engine", "LocalEngine", "RayEngine", "make_engine"]

log = logging.getLogger(__name__)
ENGINES = ("local", "ray")


class Engine(Protocol):
    name: str
    shard_size: int

    def run(self, task: Any, shards: Sequence[Shard]) -> Iterator[tuple[Shard, bytes]]: ...


@dataclass
class LocalEngine:
    """Shards one after another in this process; each task uses every core with threads."""

    shard_size: int = DEFAULT_SHARD_SIZE
    name: str = "local"

    def run(self, task: Any, shards: Sequence[Shard]) -> Iterator[tuple[Shard, bytes]]:
        if shards:
            task.setup()
        for shard in shards:
            yield shard, task(shard)


class _ShardActor:
    """A Ray Data actor: builds its task's model once, then turns each shard (one row per batch) into bytes."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.task.setup()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"key": [], "data": []}
        for key, items in zip(batch["key"], batch["items"], strict=True):
            shard = Shard(str(key), tuple((str(i), str(p)) for i, p in json.loads(items)))
            out["key"].append(shard.key)
            out["data"].append(self.task(shard))
        return out


@dataclass
class RayEngine:
    """Shards as rows of a Ray Dataset (``from_items``), mapped by an actor pool (``map_batches``) whose workers
    each load the model once; results stream back to this driver, which writes them (only the photos need to be
    readable by the workers: the index stays on the driver's disk).

    ``address``: ``auto`` (a cluster started with ``ray start``), ``ray://host:port``, or ``local`` (start Ray
    on this machine for the job). An already initialised Ray runtime is used as it is. ``workers``: actors in
    the pool (default: one per CPU of the cluster, each task limited to ``cpus_per_worker`` threads).
    """

    address: str = "auto"
    shard_size: int = DEFAULT_SHARD_SIZE
    workers: int | None = None
    cpus_per_worker: int = 1
    name: str = "ray"

    def connect(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise ValueError("--engine ray needs Ray: pip install 'wildtrack[scale]' (or 'ray[data]')") from exc
        if not ray.is_initialized():
            address = None if self.address == "local" else self.address
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except ConnectionError as exc:
                raise ValueError(f"no Ray cluster at {self.address!r} ({exc}); start one with `ray start --head`, "
                                   "give --ray-address ray://host:10001, or use --ray-address local") from exc
        return ray

    def pool_size(self) -> int:
        ray = self.connect()
        if self.workers:
            return self.workers
        return max(1, int(ray.cluster_resources().get("CPU", 1)) // self.cpus_per_worker)

    def run(self, task: Any, shards: Sequence[Shard]) -> Iterator[tuple[Shard, bytes]]:
        if not shards:
            return
        self.connect()
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False  # the caller shows one bar per stage
        by_key = {s.key: s for s in shards}
        size = min(self.pool_size(), len(shards))
        rows = [{"key": s.key, "items": json.dumps(s.items)} for s in shards]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(_ShardActor, fn_constructor_kwargs={"task": replace(task, threads=self.cpus_per_worker)},
                            batch_size=1, batch_format="numpy", num_cpus=self.cpus_per_worker,
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size))
        for row in ds.iter_rows():  # as shards finish, in any order
            yield by_key[str(row["key"])], bytes(row["data"])


def make_engine(name: str = "local", address: str = "auto", shard_size: int = DEFAULT_SHARD_SIZE) -> Engine:
    """The engine a command asked for by name (``--engine``, ``--ray-address``)."""
    if name == "local":
        return LocalEngine(shard_size)
    if name == "ray":
        return RayEngine(address, shard_size)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
