"""Task-level advantage std (QwenLong-L1.5, `rl.advantage_std: task`): hand-computed values."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.algorithms.advantages import compute_advantages, task_std_advantages, task_stds
from nemo_qwenlong.algorithms.dynamic_sampling import mixed_groups
from nemo_qwenlong.config.training import RLConfig

# 4 groups of 2: rewards [1,0 | 1,1 | 0,1 | 1,0], tasks qa, math, qa, math
REWARDS = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
TASKS = ["qa", "qa", "math", "math", "qa", "qa", "math", "math"]


def test_task_std_is_the_unbiased_std_over_the_task_rows() -> None:
    # qa rows [1,0,0,1]: mean .5, var 4·.25/3 = 1/3 → std .57735
    # math rows [1,1,1,0]: mean .75, var (3·.0625 + .5625)/3 = .25 → std .5
    assert task_stds(REWARDS, TASKS) == pytest.approx({"qa": 0.577350, "math": 0.5}, abs=1e-6)


def test_advantage_keeps_the_group_mean_and_divides_by_the_task_std() -> None:
    # group means .5, 1, .5, .5 → qa groups ±.5/.57735 = ±.866025; math g1 0; math g3 ±.5/.5 = ±1
    adv = task_std_advantages(REWARDS, 2, TASKS, eps=0.0)
    expected = torch.tensor([0.866025, -0.866025, 0.0, 0.0, -0.866025, 0.866025, 1.0, -1.0])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_a_one_sample_task_has_std_zero_and_divides_by_eps() -> None:
    # group size 1 (mean 0, as the snippet); qa [1, 0] std .70711 → 1.41421, 0; math one row: 1/(0 + 1e-6)
    adv = task_std_advantages(torch.tensor([1.0, 0.0, 1.0]), 1, ["qa", "qa", "math"], eps=1e-6)
    assert task_stds(torch.tensor([1.0, 0.0, 1.0]), ["qa", "qa", "math"])["math"] == 0.0
    torch.testing.assert_close(adv, torch.tensor([1.414212, 0.0, 1e6]), atol=1e-3, rtol=1e-6)


def test_a_filtered_batch_takes_the_std_over_the_rows_that_train() -> None:
    # dynamic sampling drops the all-correct math group g1: math rows left [1,0] → std .70711,
    # so g3 = ±.5/.70711 = ±.707107 (it was ±1 before the filter); qa is unchanged
    keep = mixed_groups(REWARDS.bool(), 2).repeat_interleave(2)
    rows = keep.nonzero().squeeze(1)
    adv = task_std_advantages(REWARDS[rows], 2, [TASKS[i] for i in rows.tolist()], eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([0.866025, -0.866025, -0.866025, 0.866025, 0.707107, -0.707107]),
                               atol=1e-5, rtol=0)


def test_mean_only_equals_the_group_mean_only_estimator() -> None:
    adv = task_std_advantages(REWARDS, 2, TASKS, std_normalize=False)
    torch.testing.assert_close(adv, compute_advantages("grpo", REWARDS, 2, std_normalize=False), atol=0, rtol=0)


def test_task_std_needs_grpo() -> None:
    with pytest.raises(ValueError, match="advantage_std=task needs rl.advantage_estimator=grpo"):
        RLConfig(advantage_std="task", advantage_estimator="rloo")
