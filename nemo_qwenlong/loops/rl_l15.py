"""The QwenLong-L1.5 RL options inside `loops.rl.rl_step`: task-level advantage std (`rl.advantage_std`)
and AEPO (`rl.aepo`). Both are off by default, and off they leave the step's code path unchanged.

Every rank holds the same batch and the same AEPO state (the entropy it reads is all-reduced over the
ranks by the policy), so every rank takes the same decisions and the collectives stay aligned.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nemo_qwenlong.algorithms import compute_advantages
from nemo_qwenlong.algorithms.advantages import task_std_advantages, task_stds
from nemo_qwenlong.algorithms.aepo import AepoState, kept_rows, mask_rows, next_masking
from nemo_qwenlong.algorithms.batch import RolloutBatch
from nemo_qwenlong.data.task import task_of


def step_advantages(rl: Any, batch: RolloutBatch, items: dict, task_key: str = "kind") -> tuple[Tensor, dict[str, float]]:
    """The batch's advantages and their log. `advantage_std: task` takes each task's std over the batch
    *after* dynamic sampling (the rows that train, as the released trainer computes it); tasks as
    `curriculum.task_balance.key` defines them (`data.task`)."""
    if rl.advantage_std == "group":
        return compute_advantages(rl.advantage_estimator, batch.rewards, rl.group_size, eps=rl.adv_eps,
                                  std_normalize=rl.std_normalize), {}
    tasks = [task_of(items[x].data_source, task_key) for x in batch.item_ids]
    adv = task_std_advantages(batch.rewards, rl.group_size, tasks, eps=rl.adv_eps, std_normalize=rl.std_normalize)
    return adv, {f"adv/task_std/{t}": s for t, s in sorted(task_stds(batch.rewards, tasks).items())}


def aepo_step(policy: Any, aepo_cfg: Any, state: AepoState, batch: RolloutBatch, mine: RolloutBatch,
              rows: list[int], need_old: bool) -> tuple[RolloutBatch, RolloutBatch, Tensor | None]:
    """AEPO's part of a step, before the update: the batch's token-mean entropy under the pre-update policy
    (one forward over this rank's rows `mine`, all-reduced; it also gives the old log-probs when the step
    needs them; `entropy: previous_update` reads the last update's instead), this step's masking state, then the batch and `mine` with the masked rows' responses
    emptied, and the kept-row mask (None when not masking)."""
    if aepo_cfg.entropy == "previous_update":  # no forward of its own; the old log-probs only when needed
        logprobs, state.entropy = (policy.compute_logprobs(mine) if need_old else None), state.last_update
    else:
        logprobs, state.entropy = policy.logprobs_and_entropy(mine)
    state.masking = next_masking(aepo_cfg.mode, state.masking, state.entropy,
                                 low=aepo_cfg.entropy_low, high=aepo_cfg.entropy_high)
    if need_old:
        mine = mine.replace(old_logprobs=logprobs)
    if not state.masking:
        return batch, mine, None
    keep = kept_rows(batch.advantages, batch.rewards)
    return mask_rows(batch, keep), mask_rows(mine, keep[rows]), keep


def live_mini_batches(train: RolloutBatch, global_minis: list[list[int]], keep: Tensor | None) -> list[bool]:
    """Whether each global mini-batch (its rows on every rank) keeps a valid token: one that keeps none
    is skipped on every rank (its global count would be 0). All true unless AEPO masks."""
    if keep is None:
        return [True] * len(global_minis)
    return [bool(train.response_mask[rows].any()) for rows in global_minis]
