"""GRPO / RLOO advantages: hand-computed values and edge cases (spec §4.2)."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.algorithms.advantages import compute_advantages, grpo_advantages, rloo_advantages


def test_grpo_one_correct_of_four() -> None:
    # mean 0.25; unbiased std = sqrt((0.75² + 3·0.25²)/3) = sqrt(0.25) = 0.5
    # Â = 0.75/0.5 = 1.5 for the correct one, −0.25/0.5 = −0.5 for the others
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_grpo_spec_worked_example_one_of_eight() -> None:
    # spec §4.2: mean 0.125, unbiased std sqrt(0.125) = 0.35355 → +2.4749 / −0.35355
    adv = grpo_advantages(torch.tensor([1.0] + [0.0] * 7), 8)
    assert adv[0].item() == pytest.approx(2.47487, abs=1e-4)
    assert adv[1].item() == pytest.approx(-0.353553, abs=1e-5)


def test_grpo_two_groups_one_all_equal_gives_zero_not_nan() -> None:
    # group 1: mean 2, unbiased std 1 → [−1, 0, 1]; group 2 all equal: 0/(0+eps) = 0
    adv = grpo_advantages(torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), 3, eps=1e-6)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    assert not torch.isnan(adv).any()


def test_grpo_mean_only_variant() -> None:
    # (r − mean) with mean 0.25
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, std_normalize=False)
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_grpo_group_of_one_uses_mean_zero_std_one() -> None:
    # verl: a group of size 1 gets mean 0 and std 1 → Â = R / (1 + eps)
    adv = grpo_advantages(torch.tensor([2.0, -1.0]), 1, eps=1e-6)
    torch.testing.assert_close(adv, torch.tensor([2.0, -1.0]) / (1 + 1e-6))


def test_rloo_leave_one_out() -> None:
    # Â_0 = 1 − mean(0,0,0) = 1; Â_j = 0 − mean(1,0,0) = −1/3
    adv = rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))


def test_bf16_rewards_give_float32_advantages() -> None:
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.bfloat16), 4, eps=0.0)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_dispatch_by_name_and_errors() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(compute_advantages("rloo", r, 4), rloo_advantages(r, 4))
    torch.testing.assert_close(compute_advantages("grpo", r, 4, std_normalize=False), r - 0.25)
    with pytest.raises(ValueError, match="accepted: grpo, rloo"):
        compute_advantages("ppo", r, 4)
    with pytest.raises(ValueError, match="not a multiple of group_size=3"):
        grpo_advantages(r, 3)
    with pytest.raises(ValueError, match="rloo needs group_size >= 2"):
        rloo_advantages(r, 1)
