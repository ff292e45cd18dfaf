"""Where a job's shards run: in this process (``local``) or on a Ray cluster through Ray Data (``ray``).

Both engines take the same tasks and shards and yield each shard's bytes as it finishes; what happens to them
(written, resumed, committed) is :mod:`wildtrack.jobs.catalogue`'s, so the two engines produce the same files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from wildtrack.jobs.plan import DEFAULT_SHARD_SIZE, Shard

__all__ = ["ENGINES", "Engine", "LocalEngine", "RayEngine", "make_engine", "resolve_ray_address"]

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


def resolve_ray_address(env: Mapping[str, str], cluster_running: bool) -> tuple[str, str]:
    """Where a Ray job goes when no address was given, by ``ray.init()``'s own convention: ``RAY_ADDRESS`` when
    set, else the cluster running on this machine (``ray start``), else a local runtime started for the job.
    Returns the address to give ``ray.init`` and the one line that tells the user which it is."""
    given = (env.get("RAY_ADDRESS") or "").strip()
    if given:
        return given, f"Ray: the cluster at {given} (from RAY_ADDRESS)"
    if cluster_running:
        return "auto", "Ray: the cluster running on this machine (no RAY_ADDRESS; started by `ray start`)"
    return "local", "Ray: local runtime started (no RAY_ADDRESS, no running cluster)"


def _cluster_running() -> bool:
    """Whether ``ray start`` left a cluster address on this machine (what ``ray.init()`` would connect to)."""
    try:
        from ray._private.services import find_bootstrap_address
    except ImportError:  # a Ray without this helper: let ray.init() look for itself
        return False
    try:
        return find_bootstrap_address(None) is not None
    except Exception:  # an unreadable address file: no usable cluster
        return False


@dataclass
class RayEngine:
    """Shards as rows of a Ray Dataset (``from_items``), mapped by an actor pool (``map_batches``) whose workers
    each load the model once; results stream back to this driver, which writes them (only the photos need to be
    readable by the workers: the index stays on the driver's disk).

    ``address``: None (``ray.init()``'s convention, :func:`resolve_ray_address`: ``RAY_ADDRESS``, else a running
    cluster, else a local runtime), ``auto`` (the cluster ``ray start`` runs here), ``ray://host:port``, or
    ``local`` (start Ray on this machine for the job). An already initialised Ray runtime is used as it is.
    ``workers``: actors in the pool (default: one per CPU of the cluster, each task limited to
    ``cpus_per_worker`` threads). Once connected, ``description`` says which Ray it runs on, in one line that is
    logged and handed to ``announce`` (the CLI prints it).
    """

    address: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    workers: int | None = None
    cpus_per_worker: int = 1
    name: str = "ray"
    announce: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    description: str | None = field(default=None, init=False, compare=False)

    def connect(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise ValueError("--engine ray needs Ray: pip install 'wildtrack[scale]' (or 'ray[data]')") from exc
        if ray.is_initialized():
            if self.description is None:
                self._say("Ray: the runtime already started in this process")
            return ray
        if self.address is None:
            address, description = resolve_ray_address(os.environ, _cluster_running())
        else:
            address, description = self.address, _described(self.address, os.environ)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            if self.address is None and address == "auto":  # the cluster `ray start` recorded is gone
                ray.init(address="local", log_to_driver=False, configure_logging=False)
                description = "Ray: local runtime started (the cluster `ray start` recorded here is not running)"
            else:
                raise ValueError(f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head`, give "
                                 "--ray-address ray://host:10001, use --ray-address local, or leave --ray-address "
                                 "out to start a local runtime") from exc
        self._say(description)
        return ray

    def _say(self, description: str) -> None:
        self.description = description
        log.info("%s", description)
        if self.announce is not None:
            self.announce(description)

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


def _described(address: str, env: Mapping[str, str]) -> str:
    if address == "local":
        return "Ray: local runtime started (--ray-address local)"
    if address == "auto" and (env.get("RAY_ADDRESS") or "").strip():  # ray.init() reads it for "auto" too
        return resolve_ray_address(env, True)[1]
    if address == "auto":
        return "Ray: the cluster running on this machine (--ray-address auto)"
    return f"Ray: the cluster at {address}"


def make_engine(name: str = "local", address: str | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                announce: Callable[[str], None] | None = None) -> Engine:
    """The engine a command asked for by name (``--engine``, ``--ray-address``; None: ``ray.init()``'s
    convention). ``announce`` receives the Ray engine's one line saying which Ray it runs on."""
    if name == "local":
        return LocalEngine(shard_size)
    if name == "ray":
        return RayEngine(address, shard_size, announce=announce)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
