"""torch_dist checkpoints written and read one tensor group at a time (a converter never holds a model).

Writing: megatron-core `dist_checkpointing.save` runs once per group (the embedding, one layer, the
final norm and output layer) into its own part folder; the parts are then merged into one
checkpoint: shard files renamed `__<part>_<k>.distcp`, and their PyTorch-DCP `.metadata` joined
(each tensor's chunk list, each storage entry's file name; the common state of part 0 only).
The result is what one `save` of the whole model would have written, and megatron-core's `load`
reads it like any other (the tests load it into a GPTModel at TP=1 and TP=2).

Reading: `load_group` asks `dist_checkpointing.load` for just the tensors of one group, with
global shapes from the checkpoint's metadata, so only that group is read into memory.

Keys follow megatron-core's GPTModel.sharded_state_dict(): layer tensors are one global tensor per
name with a leading layer axis (`decoder.layers.<TE-spec name>`, offset = layer), norms under
Transformer-Engine names, `linear_fc1` as its gate and up halves (megatron's SwiGLU factory),
each linear layer's `_extra_state` as a ShardedObject.
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from nemo_qwenlong.backends.hf.checkpoint import CheckpointFormatError
from nemo_qwenlong.backends.megatron.qwen2_mapping import Qwen2Shape, entry_for, te_spec_name
from nemo_qwenlong.backends.megatron.safe_load import METADATA_FILE, load_metadata_file, reading_checkpoint

EXTRA_STATE = ("self_attention.linear_qkv", "self_attention.linear_proj", "self_attention.core_attention",
               "mlp.linear_fc1", "mlp.linear_fc2")


def dist_key(name: str) -> tuple[str, int | None]:
    """Local-spec megatron name -> (torch_dist key, layer or None)."""
    te = te_spec_name(name)
    if te.startswith("decoder.layers."):
        _, _, layer, rest = te.split(".", 3)
        return f"decoder.layers.{rest}", int(layer)
    return te, None


def sharded_tensors(name: str, full: Tensor, shape: Qwen2Shape, tp: int):
    """The ShardedTensors a TP=`tp` run would save for one full megatron tensor (one process, all ranks).

    A layer tensor carries the layer axis in its data ([1, ...] at offset `layer` of num_layers)
    rather than as megatron's "prepended" axis: the stored chunks are the same, and this form may
    cover one layer only (a prepended-axis tensor must list every layer's shard in one save)."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    key, layer = dist_key(name)
    lead = () if layer is None else ((0, layer, shape.num_layers),)
    n = len(lead)

    def make(piece: Tensor, *offsets: tuple[int, int, int]) -> ShardedTensor:
        data = piece.contiguous() if layer is None else piece.contiguous().unsqueeze(0)
        return ShardedTensor.from_rank_offsets(key, data, *lead, *offsets, replica_id=0)

    kind = entry_for(name).tp
    if kind == "replicated" or (tp == 1 and kind != "gate_up"):
        return [make(full)]
    if kind == "gate_up":  # megatron's SwiGLU factory: gate chunk r at r, up chunk r at tp + r, of 2·tp
        gate, up = torch.chunk(full, 2)
        return [make(piece, (n, half * tp + r, 2 * tp))
                for half, halves in enumerate((gate.chunk(tp), up.chunk(tp))) for r, piece in enumerate(halves)]
    axis = 1 if kind == "cols" else 0
    return [make(piece, (n + axis, r, tp)) for r, piece in enumerate(full.chunk(tp, dim=axis))]


def extra_state_objects(layer: int, shape: Qwen2Shape):
    """`_extra_state` entries (empty: no FP8 metadata yet) that TE-spec models expect to load."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return [ShardedObject(f"decoder.layers.{m}._extra_state", None, (shape.num_layers,), (layer,), replica_id=0)
            for m in EXTRA_STATE]


def save_groups(groups: Iterable[list], out_dir: Path) -> int:
    """Save each group (a list of ShardedTensor/ShardedObject) as a part, then merge into `out_dir`
    (which must exist and be empty). Returns the number of parts."""
    from megatron.core import dist_checkpointing

    from nemo_qwenlong.backends.megatron.checkpoint import use_in_process_write_queue

    use_in_process_write_queue()
    work = out_dir / ".parts"
    work.mkdir()
    parts = []
    for k, group in enumerate(groups):
        part = work / f"{k:05d}"
        part.mkdir()
        dist_checkpointing.save({f"t{i}": t for i, t in enumerate(group)}, str(part), validate_access_integrity=False)
        parts.append(part)
    merge_parts(parts, out_dir)
    shutil.rmtree(work)
    return len(parts)


def merge_parts(parts: list[Path], out_dir: Path) -> None:
    """Join torch_dist part folders into one checkpoint in `out_dir` (see the module docstring)."""
    from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

    merged: Metadata | None = None
    for k, part in enumerate(parts):
        meta: Metadata = load_metadata_file(part / METADATA_FILE)
        renames = {}
        for j, f in enumerate(sorted(part.glob("*.distcp"))):
            renames[f.name] = f"__{k}_{j}.distcp"
            f.rename(out_dir / renames[f.name])
        storage = {idx: _renamed(info, renames) for idx, info in meta.storage_data.items()
                   if k == 0 or not idx.fqn.startswith("common_state")}
        if merged is None:
            merged = meta
            merged.storage_data = storage
            shutil.copy2(part / "metadata.json", out_dir / "metadata.json")
            continue
        for key, value in meta.state_dict_metadata.items():
            if key.startswith("common_state"):
                continue
            have = merged.state_dict_metadata.get(key)
            if isinstance(value, TensorStorageMetadata) and isinstance(have, TensorStorageMetadata):
                have.chunks.extend(value.chunks)
            else:
                merged.state_dict_metadata[key] = value
        merged.storage_data.update(storage)
        if isinstance(merged.planner_data, dict) and isinstance(meta.planner_data, dict):
            merged.planner_data.update({k2: v for k2, v in meta.planner_data.items() if not k2.startswith("common_state")})
    with open(out_dir / METADATA_FILE, "wb") as fh:
        pickle.dump(merged, fh)


def _renamed(info, renames: dict[str, str]):  # noqa: ANN001
    return dataclasses.replace(info, relative_path=renames[info.relative_path])


def tensor_metadata(ckpt_dir: Path) -> dict:
    """Global shape and dtype of every tensor key in a torch_dist checkpoint (reads metadata only)."""
    from megatron.core import dist_checkpointing

    with reading_checkpoint(ckpt_dir):
        return dist_checkpointing.load_tensors_metadata(str(ckpt_dir))


def load_group(ckpt_dir: Path, names: list[str], meta: dict, shape: Qwen2Shape) -> dict[str, Tensor]:
    """Full tensors for local-spec megatron `names` (one group), read from a torch_dist checkpoint."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    request = {}
    for name in names:
        key, layer = dist_key(name)
        if key not in meta:
            raise CheckpointFormatError(f"{ckpt_dir}: no tensor {key!r} (for {name}); has {sorted(meta)[:6]}…")
        global_shape, dtype = tuple(meta[key].global_shape), meta[key].dtype
        local = global_shape if layer is None else (1, *global_shape[1:])
        lead = () if layer is None else ((0, layer, global_shape[0]),)
        request[name] = ShardedTensor.from_rank_offsets(key, torch.empty(local, dtype=dtype), *lead, replica_id=0)
    with reading_checkpoint(ckpt_dir):
        loaded = dist_checkpointing.load(request, str(ckpt_dir), validate_access_integrity=False)  # one group only
    return {name: (t if dist_key(name)[1] is None else t[0]) for name, t in loaded.items()}
