"""Dynamic sampling: groups stay whole, rows stay aligned, unshaped correctness decides (spec §4.4)."""

from __future__ import annotations

import random

import pytest
import torch

from nemo_qwenlong.algorithms.dynamic_sampling import (
    DynamicSamplingExhausted,
    GroupAccumulator,
    collect_groups,
    mixed_groups,
)
from tests.algorithms.helpers import make_batch

G = 4


def test_mixed_groups_hand_values() -> None:
    correct = torch.tensor([1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    assert mixed_groups(correct, 4).tolist() == [True, False, False]


def _random_round(rng: random.Random, n_groups: int, next_sample: list[int], truth: dict[int, tuple]):
    """A round with shuffled group and sample ids; `truth` records what each sample id must carry."""
    group_ids, sample_ids, lens, correct = [], [], [], []
    for _ in range(n_groups):
        gid = rng.randrange(10**6)
        kind = rng.choice(["mixed", "all_right", "all_wrong"])
        for j in range(G):
            sid = next_sample[0] + rng.randrange(1, 7)
            next_sample[0] = sid
            ok = {"mixed": j % 2 == 0, "all_right": True, "all_wrong": False}[kind]
            group_ids.append(gid)
            sample_ids.append(sid)
            lens.append(rng.randrange(1, 9))
            correct.append(ok)
            truth[sid] = (gid, ok)
    return make_batch(group_ids, sample_ids, lens, correct)


def test_rows_stay_aligned_across_rounds_with_shuffled_ids() -> None:
    rng = random.Random(7)
    truth: dict[int, tuple] = {}
    counter = [0]
    batch, stats = collect_groups(
        lambda _: _random_round(rng, 5, counter, truth), target_groups=6, group_size=G, max_rounds=20
    )
    assert batch.num_rows == 6 * G and stats.groups_kept >= 6 and stats.rounds >= 2
    for i in range(batch.num_rows):
        sid = int(batch.sample_ids[i])
        gid, ok = truth[sid]
        assert int(batch.group_ids[i]) == gid  # prompt/group of this row
        assert int(batch.prompt_ids[i, 0]) == gid + 1  # prompt tokens of this row
        assert set(batch.response_ids[i][batch.response_mask[i]].tolist()) == {sid + 1}  # its own response
        assert batch.rewards[i].item() == pytest.approx(float(ok) + sid / 1000)  # its own reward
        assert bool(batch.correct[i]) == ok
    groups = batch.group_ids.view(-1, G)
    assert bool((groups == groups[:, :1]).all())  # groups whole and contiguous
    assert all(0 < int(c.sum()) < G for c in batch.correct.view(-1, G))  # only mixed groups
    assert stats.kept_fraction == stats.groups_kept / stats.groups_seen


def test_shaped_reward_differences_do_not_rescue_an_all_correct_group() -> None:
    b = make_batch([0] * G, list(range(G)), [3] * G, [True] * G)
    # overlong shaping made one member's total reward differ; correctness is still all-equal
    b = b.replace(rewards=torch.tensor([1.0, 1.0, 0.5, 1.0]))
    acc = GroupAccumulator(target_groups=1, group_size=G, max_rounds=1)
    acc.add(b)
    assert acc.num_kept == 0 and acc.stats.dropped_all_correct == 1


def test_max_rounds_error_reports_what_was_kept() -> None:
    rounds = [make_batch([0] * G, [0, 1, 2, 3], [2] * G, [True, False, True, False]),
              make_batch([1] * G, [4, 5, 6, 7], [2] * G, [True] * G)]
    with pytest.raises(DynamicSamplingExhausted) as err:
        collect_groups(lambda i: rounds[i], target_groups=3, group_size=G, max_rounds=2)
    assert "2 of 2 rounds kept 1 of the 3 groups" in str(err.value)
    assert "1 all-correct" in str(err.value) and "on_exhausted=partial" in str(err.value)
    assert err.value.kept is not None and err.value.kept.sample_ids.tolist() == [0, 1, 2, 3]


def test_partial_mode_returns_what_was_kept() -> None:
    rounds = [make_batch([0] * G, [0, 1, 2, 3], [2] * G, [True, False, True, False]),
              make_batch([1] * G, [4, 5, 6, 7], [2] * G, [False] * G)]
    batch, stats = collect_groups(lambda i: rounds[i], target_groups=3, group_size=G, max_rounds=2,
                                  on_exhausted="partial")
    assert batch.sample_ids.tolist() == [0, 1, 2, 3] and stats.partial and stats.rounds == 2
    assert stats.as_metrics()["dynamic_sampling/kept_fraction"] == 0.5


def test_partial_mode_with_nothing_kept_still_errors() -> None:
    with pytest.raises(DynamicSamplingExhausted, match="kept 0 of the 1 groups"):
        collect_groups(lambda i: make_batch([0] * G, [0, 1, 2, 3], [1] * G, [False] * G),
                       target_groups=1, group_size=G, max_rounds=1, on_exhausted="partial")


def test_batch_is_cut_to_target_and_disabled_filter_keeps_everything() -> None:
    b = make_batch([0] * G + [1] * G + [2] * G, list(range(3 * G)), [1] * (3 * G), [True] * (3 * G))
    kept, stats = collect_groups(lambda i: b, target_groups=2, group_size=G, max_rounds=1, enable=False)
    assert kept.sample_ids.tolist() == list(range(2 * G)) and stats.groups_seen == 3


def test_non_contiguous_groups_are_rejected() -> None:
    b = make_batch([0, 1, 0, 1], [0, 1, 2, 3], [1] * 4, [True, False, True, False])
    with pytest.raises(ValueError, match="contiguous groups of 2"):
        GroupAccumulator(target_groups=1, group_size=2, max_rounds=1).add(b)
