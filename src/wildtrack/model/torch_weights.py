"""Read PyTorch checkpoints into NumPy arrays without torch and without running pickled code.

A ``.pth`` file is a pickle, and unpickling calls whatever the file names, so ``pickle.load`` on a
downloaded checkpoint is arbitrary code execution. :class:`_RestrictedUnpickler` resolves only the few
globals a state dict needs (the tensor rebuild function, storage types, ``OrderedDict``) to our own inert
stand-ins and refuses everything else with :class:`UnsafeCheckpointError`.

Two on-disk layouts exist:

* zip (torch >= 1.6): ``<root>/data.pkl`` plus one raw little-endian blob per storage in ``<root>/data/<key>``;
* legacy (torch < 1.6): five concatenated pickles/blobs: magic number, protocol version, system info, the
  object pickle, the list of storage keys, then each storage as an int64 element count followed by its bytes.
  torchvision's ``mobilenet_v2-b0353104.pth`` is in this format.

The even older tar layout (torch < 0.4) is detected and refused with a clear message.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["CheckpointFormatError", "UnsafeCheckpointError", "read_torch_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle references code outside the tensor-rebuilding allow-list."""


class CheckpointFormatError(ValueError):
    """The file is not a PyTorch checkpoint we can read, or it is internally inconsistent."""


# NumPy dtype per torch storage class; bfloat16 has no NumPy dtype and is widened to float32 on read.
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "<i1",
    "ByteStorage": "<u1",
    "BoolStorage": "?",
    "UntypedStorage": "<u1",
}


class _Sealed:
    """Base of every object a checkpoint can reach: pickle's BUILD opcode may not set attributes on it."""

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError("refusing checkpoint: it tries to set attributes on a loader object")


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """Inert stand-in for a ``torch.<X>Storage`` class: it only names a dtype."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass
class _Storage(_Sealed):
    """A flat typed buffer; in the legacy format its bytes arrive after the pickle, so ``data`` is filled late."""

    storage_type: _StorageType
    numel: int
    data: np.ndarray | None = None
    base: _Storage | None = None  # legacy views share a root storage
    offset: int = 0

    def array(self) -> np.ndarray:
        if self.base is not None:
            return self.base.array()[self.offset : self.offset + self.numel]
        if self.data is None:
            raise CheckpointFormatError("a tensor refers to a storage whose bytes are missing from the file")
        return self.data


@dataclass
class _TensorRef(_Sealed):
    """What ``_rebuild_tensor_v2`` returns here: a strided view description, materialised after loading."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    extra: tuple[Any, ...] = field(default=())


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise CheckpointFormatError(f"tensor {what} must be a tuple of non-negative ints, got {value!r}")
    return value


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *extra: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``; validates instead of trusting the arguments."""
    if not isinstance(storage, _Storage) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointFormatError("malformed tensor record in checkpoint")
    return _TensorRef(storage, storage_offset, _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride"), extra)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, *extra: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter`` (``nn.Parameter`` pickles wrap a tensor)."""
    if not isinstance(data, _TensorRef):
        raise CheckpointFormatError("malformed parameter record in checkpoint")
    return data


class _SealedFunction(_Sealed):
    """A callable the pickle may invoke (REDUCE) but not modify, unlike a bare function object."""

    __slots__ = ("_function",)

    def __init__(self, function: Any) -> None:
        self._function = function

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)


def _safe_global(module: str, name: str) -> Any:
    """Fresh stand-in per lookup, so nothing a checkpoint receives is shared between loads."""
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict  # a built-in type: attributes cannot be set on it
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _SealedFunction(_rebuild_tensor)
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
        return _SealedFunction(_rebuild_parameter)
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals come only from :data:`_SAFE_GLOBALS`; storages come from ``load_storage``."""

    def __init__(self, file: BinaryIO, load_storage: Any = None) -> None:
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        found = _safe_global(module, name)
        if found is None:
            raise UnsafeCheckpointError(
                f"refusing to load checkpoint: it references {module}.{name}, which is not needed to rebuild "
                "tensors (a state dict only uses torch._utils._rebuild_tensor_v2, torch storage types and "
                "collections.OrderedDict). The file may be malicious or is not a plain state dict."
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None:
            raise UnsafeCheckpointError("unexpected persistent reference in checkpoint header")
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise UnsafeCheckpointError(f"refusing persistent reference {pid!r:.80}: only storages are allowed")
        return self._load_storage(pid[1:])


def _storage_fields(record: tuple[Any, ...]) -> tuple[_StorageType, str, int]:
    """Common ``(storage_type, key, location, numel, ...)`` prefix of zip and legacy storage records."""
    if len(record) < 4:
        raise CheckpointFormatError(f"malformed storage record {record!r:.80}")
    storage_type, key, _location, numel = record[:4]
    if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
        raise CheckpointFormatError(f"malformed storage record {record!r:.80}")
    return storage_type, str(key), numel


def _from_bytes(buffer: bytes, storage_type: _StorageType, numel: int, where: str) -> np.ndarray:
    """Typed array from raw little-endian bytes, checking the length so a bad file cannot over-read."""
    expected = numel * storage_type.dtype.itemsize
    if len(buffer) != expected:
        raise CheckpointFormatError(f"{where}: expected {expected} bytes, found {len(buffer)}")
    array = np.frombuffer(buffer, dtype=storage_type.dtype)
    if storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _materialise(ref: _TensorRef) -> np.ndarray:
    """Copy a strided view out of its storage, after checking it stays inside the buffer."""
    flat = ref.storage.array()
    if len(ref.shape) != len(ref.stride):
        raise CheckpointFormatError(f"tensor size {ref.shape} and stride {ref.stride} disagree")
    if 0 in ref.shape:
        return np.zeros(ref.shape, dtype=flat.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    if last >= flat.size:
        raise CheckpointFormatError(f"tensor of shape {ref.shape} reads past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.shape, strides=[s * flat.itemsize for s in ref.stride], writeable=False
    )
    return np.array(view)  # own the memory; never a view into the file buffer


def _find_state_dict(obj: Any) -> Mapping[str, Any]:
    """The mapping of tensors, also when a training script wrapped it as ``{"state_dict": ...}``."""
    if isinstance(obj, Mapping):
        if any(isinstance(v, _TensorRef) for v in obj.values()):
            return obj
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                return _find_state_dict(obj[key])
    raise CheckpointFormatError("checkpoint does not contain a state dict (a mapping of names to tensors)")


def _to_numpy(obj: Any) -> dict[str, np.ndarray]:
    state = _find_state_dict(obj)
    return {str(k): _materialise(v) for k, v in state.items() if isinstance(v, _TensorRef)}


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    """torch >= 1.6 format: ``<root>/data.pkl`` with storages as separate zip members."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"{path}: zip checkpoint must contain exactly one <root>/data.pkl")
        root = pickles[0].rsplit("/", 1)[0]
        byteorder_name = f"{root}/byteorder"
        if byteorder_name in archive.namelist() and archive.read(byteorder_name).strip() != b"little":
            raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported")
        storages: dict[str, _Storage] = {}

        def load_storage(record: tuple[Any, ...]) -> _Storage:
            storage_type, key, numel = _storage_fields(record)
            if key not in storages:
                member = f"{root}/data/{key}"
                try:
                    buffer = archive.read(member)
                except KeyError:
                    raise CheckpointFormatError(f"{path}: missing storage {member}") from None
                data = _from_bytes(buffer, storage_type, numel, member)
                storages[key] = _Storage(storage_type, numel, data)
            return storages[key]

        obj = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), load_storage).load()
        return _to_numpy(obj)


def _read_legacy(path: Path, f: BinaryIO) -> dict[str, np.ndarray]:
    """torch < 1.6 format: header pickles, object pickle, key list, then ``int64 numel`` + bytes per storage."""
    if _RestrictedUnpickler(f).load() != _LEGACY_MAGIC:
        raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    if _RestrictedUnpickler(f).load() != _LEGACY_PROTOCOL:
        raise CheckpointFormatError(f"{path}: unsupported legacy checkpoint protocol")
    sys_info = _RestrictedUnpickler(f).load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}

    def load_storage(record: tuple[Any, ...]) -> _Storage:
        storage_type, key, numel = _storage_fields(record)
        if key not in storages:
            storages[key] = _Storage(storage_type, numel)
        view = record[4] if len(record) > 4 else None
        if view is None:
            return storages[key]
        view_key, view_offset, view_numel = view  # a view of storage `key`, shared under its own key
        storages.setdefault(str(view_key), _Storage(storage_type, view_numel, base=storages[key], offset=view_offset))
        return storages[str(view_key)]

    obj = _RestrictedUnpickler(f, load_storage).load()
    keys = _RestrictedUnpickler(f).load()
    if not isinstance(keys, list):
        raise CheckpointFormatError(f"{path}: malformed storage key list")
    for key in map(str, keys):
        _read_legacy_storage(f, storages, key, path)
    return _to_numpy(obj)


def _read_legacy_storage(f: BinaryIO, storages: dict[str, _Storage], key: str, path: Path) -> None:
    storage = storages.get(key)
    if storage is None:
        raise CheckpointFormatError(f"{path}: storage {key} listed but never referenced")
    (numel,) = struct.unpack("<q", f.read(8))
    if numel != storage.numel:
        raise CheckpointFormatError(f"{path}: storage {key} holds {numel} elements, expected {storage.numel}")
    buffer = f.read(numel * storage.storage_type.dtype.itemsize)
    storage.data = _from_bytes(buffer, storage.storage_type, numel, f"{path}: storage {key}")


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a ``torch.save``-d state dict as NumPy arrays, keyed like ``model.state_dict()``.

    Raises :class:`UnsafeCheckpointError` if the pickle references anything beyond plain tensors, and
    :class:`CheckpointFormatError` for files that are not (well-formed) checkpoints.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        if tarfile.is_tarfile(path):
            raise CheckpointFormatError(f"{path}: the pre-0.4 tar checkpoint format is not supported")
        with open(path, "rb") as f:
            return _read_legacy(path, f)
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except (EOFError, struct.error, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, TypeError) as exc:
        raise CheckpointFormatError(f"{path}: truncated or malformed checkpoint ({exc})") from exc
