"""Outcome advantages from group rewards (qwenlong-l1-spec.md §4.2). Pure torch.

Rewards are `[N]`, laid out as N/G contiguous groups of G responses to the same prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def _groups(rewards: Tensor, group_size: int) -> Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {list(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards has {rewards.numel()} rows, not a multiple of group_size={group_size}")
    return rewards.detach().float().view(-1, group_size)


def grpo_advantages(rewards: Tensor, group_size: int, *, eps: float = 1e-6, std_normalize: bool = True) -> Tensor:
    """Â_i = (R_i − mean_g R) / (std_g R + eps), std unbiased (N−1) as the released verl code.

    `std_normalize=False` gives the mean-only variant (R_i − mean_g R). A group of size 1 uses
    mean 0 and std 1, as verl does, so its advantage is R / (1 + eps). Returns float32 `[N]`.
    """
    r = _groups(rewards, group_size)
    if group_size == 1:
        mean, std = torch.zeros_like(r), torch.ones_like(r)
    else:
        mean = r.mean(dim=1, keepdim=True)
        std = r.std(dim=1, unbiased=True, keepdim=True)
    centered = r - mean
    adv = centered / (std + eps) if std_normalize else centered
    return adv.reshape(-1)


def task_stds(rewards: Tensor, tasks: Sequence[str]) -> dict[str, float]:
    """Unbiased std of the rewards of each task's rows (QwenLong-L1.5 task-specific advantage);
    0 for a task with a single row, as the released snippet. `rewards` [N], `tasks` one label per row."""
    if len(tasks) != rewards.numel():
        raise ValueError(f"tasks has {len(tasks)} labels for {rewards.numel()} rewards (one per row)")
    r = rewards.detach().float()
    out = {}
    for task in dict.fromkeys(tasks):
        rows = torch.tensor([i for i, t in enumerate(tasks) if t == task])
        out[task] = float(r[rows].std(unbiased=True)) if rows.numel() > 1 else 0.0
    return out


def task_std_advantages(rewards: Tensor, group_size: int, tasks: Sequence[str], *, eps: float = 1e-6,
                        std_normalize: bool = True) -> Tensor:
    """Â_i = (R_i − mean_g R) / (std_task(i) R + eps): the group mean, but the std of every row of the same
    task in the batch (`task_stds`; a one-row task divides by eps alone, as the released snippet).
    A group of size 1 uses mean 0. `std_normalize=False` gives the mean-only variant. Returns float32 `[N]`."""
    r = _groups(rewards, group_size)
    mean = torch.zeros_like(r) if group_size == 1 else r.mean(dim=1, keepdim=True)
    centered = (r - mean).reshape(-1)
    if not std_normalize:
        return centered
    stds = task_stds(rewards, tasks)
    return centered / (torch.tensor([stds[t] for t in tasks], dtype=torch.float32) + eps)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """Leave-one-out baseline: Â_i = R_i − mean_{j≠i} R_j = G/(G−1) · (R_i − mean_g R). Needs G ≥ 2."""
    if group_size < 2:
        raise ValueError(f"rloo needs group_size >= 2 (a baseline from the other samples), got {group_size}")
    r = _groups(rewards, group_size)
    loo_mean = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
    return (r - loo_mean).reshape(-1)


# name -> fn(rewards, group_size, eps, std_normalize); every estimator takes the same arguments.
AdvantageFn = Callable[[Tensor, int, float, bool], Tensor]

ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": lambda r, g, eps, std_normalize: grpo_advantages(r, g, eps=eps, std_normalize=std_normalize),
    "rloo": lambda r, g, eps, std_normalize: rloo_advantages(r, g),
}


def compute_advantages(
    name: str, rewards: Tensor, group_size: int, *, eps: float = 1e-6, std_normalize: bool = True
) -> Tensor:
    """Dispatch by estimator name (config `rl.advantage_estimator`)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; accepted: {', '.join(sorted(ESTIMATORS))}")
    return ESTIMATORS[name](rewards, group_size, eps, std_normalize)
