"""The crash-safe generation store: how a catalogue is committed to, and read back from, its directory.

Files in an index directory::

    embeddings.npy   float32 N x D, L2-normalised - the source of truth; any faiss index can be rebuilt from it
    meta.csv         image_id,path,identity,date - one row per embedding row, same order; path is relative to
                     the data root so a catalogue folder can be moved
    index.faiss      the search structure over embeddings.npy (flat = exact, hnsw, or ivf; inner product = cosine)
    manifest.json    format_version, catalogue_id, generation, model_fingerprint, dim, count, index kind and params,
                     data_root, decision_threshold, created/updated, and the sha256 + size of every data file.
                     Written last: it is the commit point.
    <extras>         small files that belong to the generation (e.g. ``fusion.json``, the re-ranking fitted for
                     this catalogue and model), listed with sha256 + size under the manifest's ``extras``
    features/...     shard files (e.g. the local-feature store, :mod:`wildtrack.features.store`): immutable files
                     written beside the index before the commit, listed with sha256 + size under the manifest's
                     ``shards``; too large to hash at every load, so their reader checks each on first open
    *.prev           the previous committed generation of each file (hard links, so no extra disk until replaced)
    .lock            the writer lock (filelock); readers never take it

Crash safety
------------
A writer holds ``.lock`` and commits generation g+1 in four steps:

1. write every new file (the data files, the extras and the manifest) to a temp name in the same directory, flush,
   fsync;
2. snapshot generation g: hard-link (or copy, where links are unsupported) each data file that verifies against
   the committed manifest to ``<name>.prev``, then ``manifest.json`` to ``manifest.json.prev``; fsync the directory;
3. ``os.replace`` each data file and extra into place; fsync the directory;
4. ``os.replace`` the manifest into place and fsync the directory: generation g+1 is now committed. Extras of
   generation g that g+1 does not have are then removed (their ``.prev`` copies stay).

Shards are never replaced in place: a generation that changes them names new files, so the commit only checks
that every listed shard is there with its recorded size, and after committing g+1 removes the shards that only
generation g-1 (the old ``.prev``) listed. Shard files that no manifest lists (a killed job's) stay until the job
that wrote them runs again and commits them.

Extras are verified like data files, so a search never pairs one generation's index with another's fitted
re-ranking. A manifest without an ``extras`` key was written before extras were committed: its reader takes the
loose files named in :data:`LEGACY_EXTRAS` as they are (logged), and the next commit adopts them.

A reader reads ``manifest.json`` and, for each data file, takes whichever of ``<name>`` / ``<name>.prev`` has the
sha256 that this manifest records. A writer that died in step 1 or 2 left the live files intact; one that died
in step 3 left new data files that do not match the old manifest, and step 2 put matching copies in ``*.prev``;
after step 4 every live file matches. So a reader sees generation g or g+1, never a mix: every file is checked
against the one manifest. Each file is hashed through the same open descriptor it is then parsed from, so a
concurrent rename cannot swap bytes between the check and the read; a reader that races two writers retries.
Fallbacks, each logged and listed in ``GalleryIndex.recovery_notes``: when only ``index.faiss`` fails to verify
it is rebuilt from ``embeddings.npy``; when ``manifest.json`` cannot be used at all, ``manifest.json.prev`` with its
``.prev`` files is (losing at most the last write). The next writer deletes temp files left by a dead one, and
never overwrites a ``.prev`` file with anything that has not verified. A crash during the very first save leaves
no manifest: the directory then holds no committed index (``IndexNotFoundError``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from filelock import FileLock, Timeout

from wildtrack.index import files as ff
from wildtrack.index.files import DATA_FILES, EMBEDDINGS, FAISS_FILE, LOCK_FILE, MANIFEST, META, PREV
from wildtrack.index.types import (
    GalleryIndexError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    MetaRow,
)

DEFAULT_LOCK_TIMEOUT = 60.0
# Files older wildtrack wrote beside the index outside the commit; read loose from an index of that layout.
LEGACY_EXTRAS = ("fusion.json",)

# The places in the commit sequence where a test can stop a writer (see set_commit_pause).
COMMIT_POINTS = (
    "locked",
    "tmp-written",
    *(f"prev:{n}" for n in (*DATA_FILES, MANIFEST)),
    *(f"replaced:{n}" for n in DATA_FILES),
    "committed",
)

_pause_hook: Callable[[str], None] | None = None


def set_commit_pause(hook: Callable[[str], None] | None) -> None:
    """Test-only: call ``hook(point)`` at each of :data:`COMMIT_POINTS`, so a test can kill a writer exactly there.

    Production code never installs one; ``None`` removes it.
    """
    global _pause_hook
    _pause_hook = hook


def _pause(point: str) -> None:
    if _pause_hook is not None:
        _pause_hook(point)


@dataclass
class State:
    """Everything one committed (or about to be committed) generation consists of."""

    emb: np.ndarray
    rows: list[MetaRow]
    index: Any  # faiss.Index
    info: dict[str, Any]  # catalogue_id, generation, model_fingerprint, index, data_root, created, updated
    pos: dict[str, int] = field(default_factory=dict)
    extras: dict[str, bytes] = field(default_factory=dict)  # name -> content, committed with the generation
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> sha256 + bytes of a file in place

    def __post_init__(self) -> None:
        if not self.pos:
            self.pos = {r.image_id: i for i, r in enumerate(self.rows)}


# ------------------------------------------------------------------------------------------ locking


@contextmanager
def writer_lock(index_dir: str | os.PathLike[str], timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the directory's writer lock; IndexLockedError after ``timeout`` seconds of waiting."""
    d = Path(index_dir)
    d.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(d / LOCK_FILE), timeout=timeout)
    try:
        lock.acquire()
    except Timeout as e:
        raise IndexLockedError(
            f"another process is writing the index at {d} (waited {timeout:g}s for {d / LOCK_FILE}); "
            "try again when it has finished"
        ) from e
    try:
        _pause("locked")
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------- writing


def commit(d: Path, s: State, disk: Mapping[str, Any] | None) -> State:
    """Write ``s`` as the next generation (steps 1-4 of the module docstring); caller holds the lock."""
    _remove_stale_tmp(d)
    _check_shards(d, s.shards)
    old = _committed_paths(d)
    superseded = _shards_listed(d / (MANIFEST + PREV)) if old is not None and old[0] == d / MANIFEST else set()
    gen = max(int((disk or {}).get("generation") or 0), int(s.info["generation"] or 0)) + 1
    info = {**s.info, "generation": gen, "updated": ff.now()}
    tmp: dict[str, Path] = {}
    try:
        files = {}
        for name, writer in (
            (EMBEDDINGS, lambda f: np.save(f, s.emb, allow_pickle=False)),
            (META, lambda f: f.write(ff.meta_bytes(s.rows))),
            (FAISS_FILE, lambda f: ff.write_faiss(s.index, f)),
        ):
            tmp[name], files[name] = _write_tmp(d, name, writer)
        extras = {}
        for name, data in s.extras.items():
            tmp[name], extras[name] = _write_tmp(d, name, lambda f, data=data: f.write(data))
        manifest = ff.manifest_bytes(info, int(s.emb.shape[1]), s.rows, files, extras, s.shards)
        tmp[MANIFEST], _ = _write_tmp(d, MANIFEST, lambda f: f.write(manifest))
        _pause("tmp-written")
        if old is not None:
            _snapshot(d, *old)
        ff.fsync_dir(d)
        for name in DATA_FILES:
            os.replace(tmp.pop(name), d / name)
            _pause(f"replaced:{name}")
        for name in s.extras:
            os.replace(tmp.pop(name), d / name)
        ff.fsync_dir(d)
        os.replace(tmp.pop(MANIFEST), d / MANIFEST)
        ff.fsync_dir(d)
        _pause("committed")
        _remove_dropped_extras(d, old, s.extras)
        for name in superseded - _shards_listed(d / (MANIFEST + PREV)) - set(s.shards):
            (d / name).unlink(missing_ok=True)  # listed by generation g-1 only: no manifest reaches it now
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    return replace(s, info=info)


def _snapshot(d: Path, manifest_path: Path, paths: Mapping[str, Path]) -> None:
    """Make ``*.prev`` hold the committed generation, linking only files that verified."""
    for name in DATA_FILES:
        src = paths.get(name)
        if src is not None and src == d / name:
            ff.link_or_copy(src, d / (name + PREV))
        _pause(f"prev:{name}")
    for name, src in paths.items():
        if name not in DATA_FILES and src == d / name:
            ff.link_or_copy(src, d / (name + PREV))
    if manifest_path == d / MANIFEST:
        ff.link_or_copy(manifest_path, d / (MANIFEST + PREV))
    _pause(f"prev:{MANIFEST}")


def _committed_paths(d: Path) -> tuple[Path, dict[str, Path]] | None:
    """Where the committed generation's verified files are, or None when there is none to preserve."""
    with ExitStack() as stack:
        try:
            res = resolve(d, stack, verify=True)
        except (IndexNotFoundError, IndexCorruptError):
            return None
        return res.manifest_path, {name: Path(f.name) for name, f in (*res.files.items(), *res.extras.items())}


def _remove_dropped_extras(d: Path, old: tuple[Path, dict[str, Path]] | None, keep: Mapping[str, bytes]) -> None:
    """After a commit: live extras of the previous generation (or a legacy layout) that the new one lacks."""
    names = set(LEGACY_EXTRAS) | (set() if old is None else set(old[1]) - set(DATA_FILES))
    for name in names - set(keep):
        (d / name).unlink(missing_ok=True)
    ff.fsync_dir(d)


def check_shard_name(name: str) -> None:
    """A shard lives in a folder of the index directory: ``<folder>/<file>``, plain names, nothing hidden."""
    parts = name.split("/")
    if (len(parts) != 2 or any(not p or p.startswith(".") for p in parts) or "\\" in name
            or name.endswith(PREV) or ff.TMP_MARK in name):
        raise ValueError(f"{name!r} cannot be an index shard: use '<folder>/<file name>', plain names")


def _check_shards(d: Path, shards: Mapping[str, Mapping[str, Any]]) -> None:
    """Every shard the generation lists is in place with its recorded size (its writer fsynced it)."""
    for name, expect in shards.items():
        check_shard_name(name)
        try:
            size = (d / name).stat().st_size
        except FileNotFoundError:
            raise IndexCorruptError(f"cannot commit {d}: shard {name} is missing") from None
        if size != expect.get("bytes"):
            raise IndexCorruptError(f"cannot commit {d}: shard {name} has {size} bytes, expected {expect.get('bytes')}")


def _shards_listed(manifest: Path) -> set[str]:
    try:
        m = json.loads(manifest.read_bytes())
    except (OSError, ValueError):
        return set()
    shards = m.get("shards") if isinstance(m, dict) else None
    if not isinstance(shards, dict):
        return set()
    return {n for n in shards if isinstance(n, str) and len(n.split("/")) == 2 and ".." not in n}


def check_extra_name(name: str) -> None:
    """An extra is a plain file name of its own: never a data file, the manifest, a .prev, hidden, or a path."""
    reserved = {*DATA_FILES, MANIFEST, LOCK_FILE}
    if (not name or name.startswith(".") or "/" in name or "\\" in name or name.endswith(PREV)
            or ff.TMP_MARK in name or name in reserved):
        raise ValueError(
            f"{name!r} cannot be an index extra: use a plain file name that is not one of {sorted(reserved)}"
        )


def _write_tmp(d: Path, name: str, write: Callable[[Any], object]) -> tuple[Path, dict[str, Any]]:
    """Write a temp file next to its final name, fsync it, and return its path, sha256 and size."""
    tmp = ff.tmp_name(d, name)
    try:
        with open(tmp, "xb") as raw:
            out = ff.HashingWriter(raw)
            write(out)
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, {"sha256": out.hexdigest(), "bytes": out.size}


def _remove_stale_tmp(d: Path) -> None:
    """Temp files of a writer that died; safe to delete because we hold the lock."""
    for p in d.glob(f".*{ff.TMP_MARK}*"):
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- reading


@dataclass
class Resolved:
    manifest: dict[str, Any]
    manifest_path: Path
    files: dict[str, IO[bytes]]
    notes: list[str]
    extras: dict[str, IO[bytes]] = field(default_factory=dict)

    @property
    def legacy_extras(self) -> bool:
        """Written before extras were committed (their files lay loose beside the index)."""
        return "extras" not in self.manifest


def resolve(d: Path, stack: ExitStack, verify: bool, attempts: int = 3) -> Resolved:
    """Find one manifest and data files that all verify against it (see the module docstring)."""
    if not (d / MANIFEST).exists() and not (d / (MANIFEST + PREV)).exists():
        raise IndexNotFoundError(f"no committed index in {d} ({MANIFEST} missing)")
    problems: list[str] = []
    for attempt in range(attempts):
        res = _try_manifest(d, d / MANIFEST, stack, verify, problems)
        if res is not None:
            return res
        if attempt + 1 < attempts:
            time.sleep(0.05 * (attempt + 1))  # most likely a writer renaming files right now
    res = _try_manifest(d, d / (MANIFEST + PREV), stack, verify, problems)
    if res is not None:
        res.notes.insert(0, f"{MANIFEST} unusable ({problems[0]}); recovered the previous generation")
        return res
    raise IndexCorruptError(f"no consistent index generation in {d}: " + "; ".join(dict.fromkeys(problems)))


def _try_manifest(d: Path, path: Path, stack: ExitStack, verify: bool, problems: list[str]) -> Resolved | None:
    try:
        m = json.loads(path.read_bytes())
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
        version = int(m.get("format_version", 0))
    except FileNotFoundError:
        problems.append(f"{path.name} missing")
        return None
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} unreadable: {e}")
        return None
    if version > ff.FORMAT_VERSION:
        raise GalleryIndexError(
            f"{d} uses index format {version}, newer than this wildtrack understands ({ff.FORMAT_VERSION}); upgrade"
        )
    files: dict[str, IO[bytes]] = {}
    with ExitStack() as mine:
        for name in DATA_FILES:
            f = _open_matching(d, name, (m.get("files") or {}).get(name), verify)
            if f is not None:
                files[name] = mine.enter_context(f)
            elif name != FAISS_FILE:
                problems.append(f"{name} matches neither the live nor the .prev copy named in {path.name}")
                return None
        extras: dict[str, IO[bytes]] = {}
        for name, expect in (m.get("extras") or {}).items():
            f = _open_matching(d, name, expect, verify) if isinstance(expect, dict) else None
            if f is None:
                problems.append(f"{name} matches neither the live nor the .prev copy named in {path.name}")
                return None
            extras[name] = mine.enter_context(f)
        stack.enter_context(mine.pop_all())  # success: the caller closes them
    return Resolved(m, path, files, [], extras)


def _open_matching(d: Path, name: str, expect: Mapping[str, Any] | None, verify: bool) -> IO[bytes] | None:
    """The live or .prev copy of ``name`` whose size and sha256 match ``expect``, opened at offset 0."""
    if not expect:
        return None
    for p in (d / name, d / (name + PREV)):
        try:
            f = open(p, "rb")  # noqa: SIM115 - handed to the caller's ExitStack
        except FileNotFoundError:
            continue
        size_ok = os.fstat(f.fileno()).st_size == expect.get("bytes")
        if size_ok and (not verify or ff.sha256_of(f) == expect.get("sha256")):
            f.seek(0)
            return f
        f.close()
    return None


def check_expected(d: Path, m: Mapping[str, Any], fingerprint: str | None, dim: int | None) -> None:
    """IndexMismatchError when the committed generation was made by another model or embedding size."""
    if fingerprint is not None and m.get("model_fingerprint") != fingerprint:
        raise IndexMismatchError(
            f"the index at {d} was built with model {m.get('model_fingerprint')!r}, but the current model is "
            f"{fingerprint!r}; its embeddings are not comparable - rebuild the index with this model"
        )
    if dim is not None and m.get("dim") != dim:
        raise IndexMismatchError(f"the index at {d} holds {m.get('dim')}-d embeddings, but the model makes {dim}-d")


def peek_manifest(d: Path) -> dict[str, Any] | None:
    """The committed manifest without verifying files (for conflict checks), or None if there is none."""
    for path in (d / MANIFEST, d / (MANIFEST + PREV)):
        try:
            m = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict):
            return m
    return None


def committed_generation(index_dir: Path) -> tuple[str | None, int | None]:
    """(catalogue_id, generation) of the committed manifest, or (None, None) when it cannot be read.

    Cheap enough to call per request: one small JSON read, no file verified. A writer compares it with what it
    loaded to notice that another process committed since; a survey records it to notice a changed catalogue.
    """
    try:
        m = json.loads((Path(index_dir) / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None, None
    if not isinstance(m, dict):
        return None, None
    gen = m.get("generation")
    return m.get("catalogue_id"), int(gen) if isinstance(gen, int) else None
