"""Token-budgeted micro-batching: the budget counts the padded tokens the forward pass runs."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.algorithms.packing import micro_batches_by_tokens
from nemo_qwenlong.algorithms.sequences import join_rows


def padded_tokens(lengths: list[int], rows: list[int], multiple: int) -> int:
    """rows × the longest row rounded up to `multiple`: the [B, S] shape `join_rows` builds."""
    longest = max(max(lengths[i] for i in rows), 1)
    return len(rows) * (-(-longest // multiple) * multiple)


def check_plan(lengths: list[int], budget: int, multiple: int = 1) -> list[list[int]]:
    batches = micro_batches_by_tokens(lengths, budget, multiple=multiple)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every row exactly once
    assert all(padded_tokens(lengths, b, multiple) <= budget or len(b) == 1 for b in batches)
    return batches


def test_longest_rows_first_within_the_padded_budget() -> None:
    # longest first: 9 alone (over budget, never cut); 5 (5+4 would pad to 2·5 = 10); 4,3 (2·4 = 8); 2,1
    assert micro_batches_by_tokens([3, 4, 5, 2, 9, 1], 8) == [[4], [2], [0, 1], [3, 5]]


def test_padding_multiple_counts() -> None:
    assert micro_batches_by_tokens([2, 2, 2, 2], 8) == [[0, 1, 2, 3]]
    assert micro_batches_by_tokens([2, 2, 2, 2], 8, multiple=4) == [[0, 1], [2, 3]]  # each row pads to 4


def test_every_row_exactly_once() -> None:
    check_plan([7, 1, 1, 30, 2, 2, 2, 8, 0], 10)
    check_plan([7, 1, 1, 30, 2, 2, 2, 8, 0], 10, multiple=4)


@pytest.mark.parametrize("multiple", [1, 8, 64])
def test_docqa_shaped_batch_stays_within_the_budget(multiple: int) -> None:
    # one group of 8 rollouts on an 18K-token document among 7 groups on 1K-token ones, in rollout order
    lengths = [1000 + 13 * i for i in range(24)] + [18000 + 7 * i for i in range(8)] + [1000 + 11 * i for i in range(32)]
    batches = check_plan(lengths, 80_000, multiple)
    worst = max(padded_tokens(lengths, b, multiple) for b in batches)
    print(f"multiple={multiple}: {len(batches)} micro-batches, largest {worst} padded tokens (budget 80000)")
    assert worst <= 80_000 and len(batches) <= 5  # 2 of the long rows' (4 each) + 1K rows (~76 per 80K)


def test_plan_matches_the_layout_the_forward_pass_sees() -> None:
    gen = torch.Generator().manual_seed(0)
    prompt_lengths = torch.randint(1, 40, (24,), generator=gen)
    response_mask = torch.arange(12).unsqueeze(0) < torch.randint(0, 13, (24, 1), generator=gen)
    lengths = (prompt_lengths + response_mask.sum(1)).tolist()
    for multiple in (1, 4, 16):
        for rows in check_plan(lengths, 96, multiple):
            i = torch.tensor(rows)
            layout = join_rows(torch.ones(len(rows), 40, dtype=torch.int64), prompt_lengths[i],
                               torch.ones(len(rows), 12, dtype=torch.int64), response_mask[i], multiple=multiple)
            assert layout.tokens.numel() <= 96 or len(rows) == 1


def test_bad_budget() -> None:
    with pytest.raises(ValueError, match="budget must be >= 1"):
        micro_batches_by_tokens([1], 0)
    with pytest.raises(ValueError, match="multiple must be >= 1"):
        micro_batches_by_tokens([1], 8, multiple=0)
    assert micro_batches_by_tokens([], 5) == []
