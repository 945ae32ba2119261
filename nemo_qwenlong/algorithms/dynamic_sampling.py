"""DAPO dynamic sampling: keep groups with mixed correctness, accumulate rounds (spec §4.4). Pure torch.

The filter reads the **unshaped** correctness (`RolloutBatch.correct`, r_answer == 1), never the
shaped reward: a group that is all-correct but has overlong-penalised members is still dropped, as
in the released code. Groups stay whole and every field moves with its row (`RolloutBatch.select`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

from nemo_qwenlong.algorithms.batch import RolloutBatch


@dataclass
class DynamicSamplingStats:
    rounds: int = 0
    groups_seen: int = 0
    groups_kept: int = 0
    dropped_all_correct: int = 0
    dropped_all_wrong: int = 0
    partial: bool = False
    data_ran_out: bool = False  # the stage's data ended before enough groups (collect_groups' more_data)

    @property
    def kept_fraction(self) -> float:
        return self.groups_kept / self.groups_seen if self.groups_seen else 0.0

    def as_metrics(self) -> dict[str, float]:
        return {f"dynamic_sampling/{k}": float(v) for k, v in asdict(self).items()} | {
            "dynamic_sampling/kept_fraction": self.kept_fraction
        }


class DynamicSamplingExhausted(RuntimeError):
    """max_rounds did not yield enough mixed groups; `.kept` holds what was collected."""

    def __init__(self, message: str, kept: RolloutBatch | None, stats: DynamicSamplingStats) -> None:
        super().__init__(message)
        self.kept = kept
        self.stats = stats


def mixed_groups(correct: Tensor, group_size: int) -> Tensor:
    """`[N/G]` bool: groups whose correctness is not all-equal (population std > 0)."""
    if correct.numel() % group_size:
        raise ValueError(f"{correct.numel()} rows are not a multiple of group_size={group_size}")
    c = correct.bool().view(-1, group_size)
    return c.any(dim=1) & ~c.all(dim=1)


def check_groups_contiguous(batch: RolloutBatch, group_size: int) -> None:
    g = batch.group_ids.view(-1, group_size) if batch.num_rows % group_size == 0 else None
    if g is None or not bool((g == g[:, :1]).all()):
        raise ValueError(
            f"rows must form contiguous groups of {group_size} sharing a group id; got group_ids {batch.group_ids.tolist()}"
        )


class GroupAccumulator:
    """Collects mixed groups over generation rounds until `target_groups` are kept."""

    def __init__(self, *, target_groups: int, group_size: int, max_rounds: int, enable: bool = True) -> None:
        if target_groups < 1 or group_size < 1 or max_rounds < 1:
            raise ValueError(
                f"target_groups, group_size and max_rounds must be >= 1, got {target_groups}, {group_size}, {max_rounds}"
            )
        self.target_groups = target_groups
        self.group_size = group_size
        self.max_rounds = max_rounds
        self.enable = enable
        self.stats = DynamicSamplingStats()
        self._kept: list[RolloutBatch] = []

    @property
    def num_kept(self) -> int:
        return self.stats.groups_kept

    @property
    def full(self) -> bool:
        return self.stats.groups_kept >= self.target_groups

    @property
    def exhausted(self) -> bool:
        return (self.stats.rounds >= self.max_rounds or self.stats.data_ran_out) and not self.full

    def add(self, batch: RolloutBatch) -> None:
        """Filter one generation round and keep its mixed groups (whole, in order)."""
        check_groups_contiguous(batch, self.group_size)
        c = batch.correct.view(-1, self.group_size)
        keep = mixed_groups(batch.correct, self.group_size) if self.enable else torch.ones(c.shape[0], dtype=torch.bool)
        self.stats.rounds += 1
        self.stats.groups_seen += int(c.shape[0])
        if self.enable:
            self.stats.dropped_all_correct += int(c.all(dim=1).sum())
            self.stats.dropped_all_wrong += int((~c.any(dim=1)).sum())
        kept_groups = keep.nonzero().flatten()
        if kept_groups.numel():
            rows = (kept_groups[:, None] * self.group_size + torch.arange(self.group_size)).flatten()
            self._kept.append(batch.select(rows))
            self.stats.groups_kept += int(kept_groups.numel())

    def result(self, on_exhausted: Literal["error", "partial"] = "error") -> tuple[RolloutBatch, DynamicSamplingStats]:
        """The first `target_groups` kept groups; after max_rounds, an error or the partial batch."""
        kept = RolloutBatch.concat(self._kept) if self._kept else None
        if not self.full:
            message = (
                f"dynamic sampling: {self.stats.rounds} of {self.max_rounds} rounds kept {self.stats.groups_kept} "
                f"of the {self.target_groups} groups needed (seen {self.stats.groups_seen}: "
                f"{self.stats.dropped_all_correct} all-correct, {self.stats.dropped_all_wrong} all-wrong dropped). "
                "Raise rl.dynamic_sampling.max_rounds, lower rl.train_batch_size, "
                "or set rl.dynamic_sampling.on_exhausted=partial"
            )
            if on_exhausted == "error" or kept is None or not self.exhausted:
                raise DynamicSamplingExhausted(message, kept, self.stats)
            self.stats.partial = True
            return kept, self.stats
        return kept.select(torch.arange(self.target_groups * self.group_size)), self.stats


def collect_groups(
    generate_round: Callable[[int], RolloutBatch],
    *,
    target_groups: int,
    group_size: int,
    max_rounds: int,
    enable: bool = True,
    on_exhausted: Literal["error", "partial"] = "error",
    more_data: Callable[[], bool] | None = None,
) -> tuple[RolloutBatch, DynamicSamplingStats]:
    """Call `generate_round(round_index)` until enough mixed groups are kept or max_rounds is reached.
    `more_data()` False before a later round (the sampler's data ran out) ends the rounds there as
    max_rounds would (`stats.data_ran_out`); the first round is always drawn."""
    acc = GroupAccumulator(target_groups=target_groups, group_size=group_size, max_rounds=max_rounds, enable=enable)
    while not acc.full and not acc.exhausted:
        if acc.stats.rounds and more_data is not None and not more_data():
            acc.stats.data_ran_out = True
            break
        acc.add(generate_round(acc.stats.rounds))
    return acc.result(on_exhausted)
