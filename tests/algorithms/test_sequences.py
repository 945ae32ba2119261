"""Sequence layout: prompt + response rows joined, per-token values moved both ways, CP zigzag split."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.algorithms.sequences import (
    cp_merge,
    cp_split,
    join_rows,
    padding_multiple,
    to_response_layout,
    to_sequence_layout,
)


def rows():
    prompt_ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    response_ids = torch.tensor([[1, 2, 0], [3, 4, 5]])
    response_mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    return prompt_ids, torch.tensor([3, 2]), response_ids, response_mask


def test_rows_are_joined_and_targets_are_next_tokens() -> None:
    layout = join_rows(*rows(), multiple=4)
    assert layout.tokens.tolist() == [[5, 6, 7, 1, 2, 0, 0, 0], [8, 9, 3, 4, 5, 0, 0, 0]]
    assert layout.targets.tolist() == [[6, 7, 1, 2, 0, 0, 0, 0], [9, 3, 4, 5, 0, 0, 0, 0]]
    # response token j of row i is scored at position P_i - 1 + j
    assert layout.response_slots[:, :2].tolist() == [[2, 3], [1, 2]]
    assert layout.lengths.tolist() == [5, 5] and layout.seq_len == 8
    assert join_rows(*rows(), multiple=1).seq_len == 5


def test_values_move_between_layouts() -> None:
    layout = join_rows(*rows())
    per_position = torch.arange(10.0).view(2, 5)
    assert to_response_layout(per_position, layout).tolist() == [[2.0, 3.0, 0.0], [6.0, 7.0, 8.0]]
    old = torch.tensor([[-1.0, -2.0, -9.0], [-3.0, -4.0, -5.0]])
    moved = to_sequence_layout(old, layout)
    assert moved.tolist() == [[0, 0, -1, -2, 0], [0, -3, -4, -5, 0]]  # the masked -9 is dropped
    mask = to_sequence_layout(layout.response_mask, layout, False)
    assert mask.sum() == 5 and torch.equal(to_response_layout(moved, layout), torch.where(layout.response_mask, old, 0.0))


def test_context_parallel_zigzag_split_and_merge() -> None:
    x = torch.arange(16).view(1, 16)
    parts = [cp_split(x, r, 2) for r in range(2)]
    assert parts[0].tolist() == [[0, 1, 2, 3, 12, 13, 14, 15]]  # megatron's get_batch_on_this_cp_rank split
    assert parts[1].tolist() == [[4, 5, 6, 7, 8, 9, 10, 11]]
    assert torch.equal(cp_merge(parts), x)
    four = [cp_split(torch.arange(24).view(1, 24), r, 4) for r in range(4)]
    assert torch.equal(cp_merge(four), torch.arange(24).view(1, 24))
    with pytest.raises(ValueError, match="not a multiple of 2·context_parallel=4"):
        cp_split(torch.arange(10).view(1, 10), 0, 2)


def test_padding_multiple_rules() -> None:
    assert padding_multiple() == 1
    assert padding_multiple(context_parallel=4) == 8
    assert padding_multiple(tensor_parallel=8, sequence_parallel=True) == 8
    assert padding_multiple(context_parallel=2, tensor_parallel=8, sequence_parallel=True) == 32
    assert padding_multiple(fp8=True) == 16
    assert padding_multiple(context_parallel=4, fp8=True) == 128
