"""Reading torch_dist checkpoints without running code from them (docs/checkpoints.md, "Untrusted checkpoints").

A torch_dist checkpoint holds three kinds of pickles: the `.metadata` file (PyTorch DCP's `Metadata`),
the byte objects inside `*.distcp` shards (megatron-core ShardedObjects such as `_extra_state`), and a
legacy `common.pt`. Plain `pickle.load` on any of them runs whatever `__reduce__` the file names.

`install()` routes every such read through an allow-list, for our code and for megatron-core's and
torch DCP's loaders as we call them:
- `.metadata` (torch's `FileSystemReader.read_metadata`, which megatron-core's readers inherit) goes
  through `MetadataUnpickler`: only the DCP metadata/planner classes, tensor storage metadata
  (`torch.Size`, dtypes, layouts, memory formats) and megatron-core's two placeholder classes;
- ShardedObject bytes (torch's `DefaultLoadPlanner.load_bytes`) and `common.pt` (megatron-core's
  `load_common`) go through `torch.load(weights_only=True)`.
Anything else raises `UnsafeCheckpointError` naming the file (or object key) and the refused global.
`reading_checkpoint(folder)` installs this and turns the loaders' failures (torch DCP wraps them in
a `CheckpointException`, a BaseException) into a `CheckpointFormatError` that names the folder.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from nemo_qwenlong.backends.hf.checkpoint import CheckpointFormatError

METADATA_FILE = ".metadata"
_DCP = "torch.distributed.checkpoint"
ALLOWED_GLOBALS: dict[str, frozenset[str]] = {
    f"{_DCP}.metadata": frozenset({"Metadata", "MetadataIndex", "StorageMeta", "TensorProperties",
                                   "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                                   "_MEM_FORMAT_ENCODING"}),
    f"{_DCP}.planner": frozenset({"SavePlan", "LoadPlan", "WriteItem", "WriteItemType", "ReadItem",
                                  "LoadItemType", "TensorWriteData", "BytesIOWriteData"}),
    f"{_DCP}.filesystem": frozenset({"_StorageInfo"}),
    "torch.serialization": frozenset({"_get_layout"}),  # maps a layout name to torch.strided etc.
    "megatron.core.dist_checkpointing.strategies.torch": frozenset({"MCoreMetadata", "MCoreSavePlan"}),  # empty placeholders
    "collections": frozenset({"OrderedDict"}),
    "builtins": frozenset({"set", "frozenset", "slice", "complex"}),
}


class UnsafeCheckpointError(CheckpointFormatError):
    """A checkpoint pickle that names a global outside the allow-list; nothing from it was run."""


class MetadataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ALLOWED_GLOBALS and torch's tensor-metadata values."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if name in ALLOWED_GLOBALS.get(module, ()) or _is_torch_value(module, name):
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"{self.source}: refused to unpickle global {module}.{name} (checkpoint metadata may only name "
            "torch distributed-checkpoint metadata classes, torch.Size, dtypes and layouts); nothing was executed")


def _is_torch_value(module: str, name: str) -> bool:
    """`torch.Size` and the torch.dtype / layout / memory_format constants (e.g. `torch.float32`)."""
    if module != "torch":
        return False
    import torch

    value = getattr(torch, name, None)
    return name == "Size" or isinstance(value, (torch.dtype, torch.layout, torch.memory_format))


def load_metadata(stream: BinaryIO, source: str | os.PathLike) -> Any:
    """Unpickle a DCP `.metadata` stream through the allow-list; `source` names it in errors."""
    try:
        return MetadataUnpickler(stream, str(source)).load()
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise CheckpointFormatError(f"{source}: not a readable checkpoint metadata file "
                                    f"({type(exc).__name__}: {exc})") from None


def load_metadata_file(path: str | Path) -> Any:
    with open(path, "rb") as fh:
        return load_metadata(fh, path)


def load_weights_only(stream: BinaryIO | str | os.PathLike, source: str) -> Any:
    """`torch.load(weights_only=True)`, its refusal re-raised as UnsafeCheckpointError naming `source`."""
    import torch

    try:
        return torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(f"{source}: refused by torch.load(weights_only=True): {str(exc).splitlines()[0]}; "
                                    "nothing was executed") from None


@functools.cache
def install() -> None:
    """Route torch DCP's and megatron-core's checkpoint unpickling through the allow-list (idempotent)."""
    from megatron.core.dist_checkpointing import serialization
    from megatron.core.dist_checkpointing.strategies import common
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    def read_metadata(self, *args: Any, **kwargs: Any):  # noqa: ANN001, ANN202 - FileSystemReader's signature
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = load_metadata(stream, path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def load_bytes(self, read_item, value: io.BytesIO) -> None:  # noqa: ANN001 - DefaultLoadPlanner's signature
        fqn = read_item.dest_index.fqn
        obj = load_weights_only(value, f"checkpoint object {fqn!r}")
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj

    def load_common(checkpoint_dir: str):  # noqa: ANN202 - megatron-core's signature
        return load_weights_only(os.path.join(checkpoint_dir, common.COMMON_STATE_FNAME),
                                 os.path.join(checkpoint_dir, common.COMMON_STATE_FNAME))

    FileSystemReader.read_metadata = read_metadata
    DefaultLoadPlanner.load_bytes = load_bytes
    common.load_common = serialization.load_common = load_common


@contextmanager
def reading_checkpoint(folder: str | Path) -> Iterator[None]:
    """Install the allow-list and report any failure to read `folder` as a CheckpointFormatError."""
    install()
    try:
        yield
    except CheckpointFormatError:
        raise
    except BaseException as exc:
        cause = _root_cause(exc)
        if isinstance(cause, CheckpointFormatError):
            raise cause from None
        if cause is not exc or isinstance(exc, (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError)):
            if isinstance(cause, (KeyboardInterrupt, SystemExit)):
                raise cause from None
            raise CheckpointFormatError(_describe(Path(folder), cause)) from None
        raise


def _root_cause(exc: BaseException) -> BaseException:
    """The first failure inside torch DCP's CheckpointException (per-rank (exception, traceback) pairs)."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        first = next(iter(failures.values()))
        return first[0] if isinstance(first, tuple) else first
    return exc


def _describe(folder: Path, cause: BaseException) -> str:
    short = _short_files(folder)
    what = f"shard files shorter than the metadata says: {short}" if short else "a shard file is corrupt"
    detail = (str(cause).splitlines() or [""])[0][:200]
    return f"{folder}: cannot read the checkpoint ({what}; {type(cause).__name__}: {detail})"


def _short_files(folder: Path) -> list[str]:
    """Shard files that end before the byte ranges `.metadata` assigns to them (a truncated copy)."""
    try:
        meta = load_metadata_file(folder / METADATA_FILE)
        need: dict[str, int] = {}
        for info in meta.storage_data.values():
            need[info.relative_path] = max(need.get(info.relative_path, 0), info.offset + info.length)
    except (CheckpointFormatError, OSError, AttributeError):
        return []
    return sorted(name for name, end in need.items()
                  if not (folder / name).is_file() or (folder / name).stat().st_size < end)
