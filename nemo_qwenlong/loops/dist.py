"""The little distributed plumbing the loops need: who is rank 0, handing rank 0's objects to all,
and gathering one object from every rank.

Rewards and the sampler's bookkeeping run on rank 0; rollouts run on every engine replica
(`rollout.replicas`, gathered with `all_gather`) or on rank 0 (the transformers engine). Every rank
receives the same rollout batch, so the sampler and ledger replicate exactly and every rank can
checkpoint or resume them. With one process (or no process group) these are no-ops.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_rank0() -> bool:
    return rank() == 0


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (pickled over the default group: trusted, in-job data only)."""
    if world() == 1:
        return obj
    box: list[Any] = [obj if is_rank0() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank (pickled: trusted, in-job data only)."""
    if world() == 1:
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world() > 1:
        dist.barrier()
