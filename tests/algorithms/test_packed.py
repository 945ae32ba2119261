"""Packed (THD) layout: rows end to end, per-row padding rules, the per-row CP split, the packed
micro-batch plan, and the sequence-level loss over several sequences in one tensor row."""

from __future__ import annotations

import itertools

import pytest
import torch

from nemo_qwenlong.algorithms.losses import aggregate
from nemo_qwenlong.algorithms.packed import (
    cp_indices,
    cp_merge_packed,
    cp_split_packed,
    pack_rows,
    packed_lengths,
    row_multiple,
)
from nemo_qwenlong.algorithms.packing import micro_batches_by_tokens, micro_batches_packed
from nemo_qwenlong.algorithms.sequences import (
    cp_split,
    fp8_local_rows,
    join_rows,
    padding_multiple,
    to_response_layout,
    to_sequence_layout,
)
from tests.algorithms.test_sequences import rows


def test_rows_are_packed_end_to_end_with_targets_within_each_row() -> None:
    layout = pack_rows(*rows())
    assert layout.tokens.tolist() == [[5, 6, 7, 1, 2, 8, 9, 3, 4, 5]]
    # the last token of row 0 predicts nothing (PAD), not row 1's first token
    assert layout.targets.tolist() == [[6, 7, 1, 2, 0, 9, 3, 4, 5, 0]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]]
    assert layout.cu_seqlens.tolist() == [0, 5, 10] and layout.cu_seqlens_padded.tolist() == [0, 5, 10]
    assert layout.response_slots[0, :2].tolist() == [2, 3] and layout.response_slots[1].tolist() == [6, 7, 8]
    assert layout.cu_seqlens.dtype == torch.int32 and layout.max_seqlen == 5


def test_padding_rules_per_row_and_for_the_total() -> None:
    layout = pack_rows(*rows(), row_mult=4, total_mult=12)  # rows of 5 -> 8 each; 16 -> 24: the last gets 16
    assert layout.cu_seqlens_padded.tolist() == [0, 8, 24] and layout.cu_seqlens.tolist() == [0, 5, 10]
    assert layout.tokens.tolist() == [[5, 6, 7, 1, 2, 0, 0, 0, 8, 9, 3, 4, 5] + [0] * 11]
    assert layout.seq_len == 24 and layout.max_seqlen == 16
    with pytest.raises(ValueError, match="total multiple 6 is not a multiple of the row multiple 4"):
        packed_lengths([5, 5], row_mult=4, total_mult=6)


def test_values_move_between_the_response_and_packed_layouts() -> None:
    layout = pack_rows(*rows(), row_mult=4, total_mult=4)
    old = torch.tensor([[-1.0, -2.0, -9.0], [-3.0, -4.0, -5.0]])
    moved = to_sequence_layout(old, layout)
    assert moved.shape == (1, 16) and moved[0, [2, 3, 9, 10, 11]].tolist() == [-1, -2, -3, -4, -5]
    assert float(moved.abs().sum()) == 15.0  # the masked -9 is dropped
    assert torch.equal(to_response_layout(moved, layout), torch.where(layout.response_mask, old, 0.0))
    padded = join_rows(*rows())
    per_row = torch.randn(2, padded.seq_len)
    packed_values = to_sequence_layout(to_response_layout(per_row, padded), layout)
    assert torch.equal(to_response_layout(packed_values, layout), to_response_layout(per_row, padded))


@pytest.mark.parametrize(("cp", "tp", "sp", "fp8"), [
    (cp, tp, sp, fp8) for cp, tp, sp, fp8 in itertools.product((1, 2, 4), (1, 2, 8), (False, True),
                                                               (None, "tensorwise", "blockwise"))
    if not (sp and tp == 1)])
def test_every_rank_gets_whole_chunks_and_every_gemm_its_row_multiple(cp: int, tp: int, sp: bool, fp8: str | None) -> None:
    lengths = [1, 7, 130, 33, 2]
    total_mult = padding_multiple(context_parallel=cp, tensor_parallel=tp, sequence_parallel=sp, fp8=fp8)
    padded = packed_lengths(lengths, row_mult=row_multiple(cp), total_mult=total_mult)
    assert all(p >= n and p % (2 * cp if cp > 1 else 1) == 0 for p, n in zip(padded, lengths))  # CP: 2·CP chunks a row
    local = sum(padded) // cp // (tp if sp else 1)  # one rank's rows after the CP split and SP scatter
    assert sum(padded) % cp == 0 and local * cp * (tp if sp else 1) == sum(padded)
    if fp8:
        assert local % fp8_local_rows(fp8) == 0
    assert sum(padded) - sum(lengths) < len(lengths) * 2 * cp + total_mult  # the padding stays small


def test_context_parallel_split_is_per_row_zigzag() -> None:
    cu = torch.tensor([0, 8, 12, 24], dtype=torch.int32)  # rows of 8, 4, 12 at CP=2: chunks of 2, 1, 3
    assert cp_indices(cu, 0, 2).tolist() == [0, 1, 6, 7, 8, 11, 12, 13, 14, 21, 22, 23]
    assert cp_indices(cu, 1, 2).tolist() == [2, 3, 4, 5, 9, 10, 15, 16, 17, 18, 19, 20]
    single = torch.tensor([0, 16], dtype=torch.int32)  # one row: the padded layout's zigzag
    x = torch.arange(16).view(1, 16)
    for r in range(2):
        assert torch.equal(x[:, cp_indices(single, r, 2)], cp_split(x, r, 2))
    with pytest.raises(ValueError, match="padded length 6 is not a multiple of 2·context_parallel=4"):
        cp_indices(torch.tensor([0, 8, 14], dtype=torch.int32), 0, 2)


@pytest.mark.parametrize("cp", [2, 4])
def test_context_parallel_parts_merge_back(cp: int) -> None:
    prompt_ids = torch.randint(1, 50, (5, 30), generator=torch.Generator().manual_seed(0))
    prompt_lengths = torch.tensor([3, 30, 11, 1, 17])
    response_mask = torch.arange(9).unsqueeze(0) < torch.tensor([[9], [2], [0], [5], [1]])
    layout = pack_rows(prompt_ids, prompt_lengths, torch.ones(5, 9, dtype=torch.int64), response_mask,
                       row_mult=row_multiple(cp), total_mult=row_multiple(cp))
    parts = [cp_split_packed(layout.tokens, layout, r, cp) for r in range(cp)]
    assert all(p.shape[1] == layout.seq_len // cp for p in parts)
    assert sorted(torch.cat([cp_indices(layout.cu_seqlens_padded, r, cp) for r in range(cp)]).tolist()) == \
        list(range(layout.seq_len))
    assert torch.equal(cp_merge_packed(parts, layout), layout.tokens)


def test_packed_micro_batches_fill_first_fit_within_the_budget() -> None:
    # longest first: 9 alone (over budget); 5 opens a batch and 3 joins it; 4 opens, 2 and 1 fill it
    assert micro_batches_packed([3, 4, 5, 2, 9, 1], 8) == [[4], [0, 2], [1, 3, 5]]
    # rows rounded to 2: 9→10 alone; 5→6 opens; 4 opens; 3→4 joins 4 (8); 2 joins 6 (8); 1→2 fits nowhere
    plan = micro_batches_packed([3, 4, 5, 2, 9, 1], 8, row_multiple=2, total_multiple=4)
    assert plan == [[4], [2, 3], [0, 1], [5]]


def test_docqa_shaped_batch_packs_into_fewer_tokens_and_micro_batches() -> None:
    # 64 rollouts of 500-20,000 tokens (documents of every length), an 80K-token budget
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(500, 20_001, (64,), generator=gen).tolist()
    for cp in (1, 2):
        mult = padding_multiple(context_parallel=cp)
        packed = micro_batches_packed(lengths, 80_000, row_multiple=row_multiple(cp), total_multiple=mult)
        assert sorted(i for b in packed for i in b) == list(range(len(lengths)))
        sizes = [sum(packed_lengths([lengths[i] for i in b], row_mult=row_multiple(cp), total_mult=mult)) for b in packed]
        padded = micro_batches_by_tokens(lengths, 80_000, multiple=mult)
        padded_tokens = sum(len(b) * max(lengths[i] for i in b) for b in padded)
        print(f"cp={cp}: packed {len(packed)} micro-batches, {sum(sizes)} tokens; "
              f"padded {len(padded)}, {padded_tokens} tokens; valid {sum(lengths)}")
        assert max(sizes) <= 80_000 and sum(sizes) < sum(lengths) + len(lengths) * 2 * cp
        assert len(packed) < len(padded) and sum(sizes) < padded_tokens
        assert len(packed) <= -(-sum(sizes) // 80_000) + 1  # first-fit leaves at most one pack's worth of gaps


def test_sequence_level_loss_with_per_token_row_lengths_equals_per_row() -> None:
    g = torch.Generator().manual_seed(3)
    per_token, mask = torch.randn(4, 7, generator=g), torch.rand(4, 7, generator=g) > 0.3
    lengths = mask.sum(1)
    by_row = aggregate(per_token, mask, level="sequence", num_global_tokens=None, num_global_sequences=4)
    by_token = aggregate(per_token, mask, level="sequence", num_global_tokens=None, num_global_sequences=4,
                         row_lengths=lengths.unsqueeze(1).expand(4, 7).float())
    assert torch.allclose(by_row, by_token, atol=1e-6) and float(by_row.abs()) > 1e-3
    # the same values packed into one tensor row, each token carrying its row's length
    flat = aggregate(per_token.view(1, -1), mask.view(1, -1), level="sequence", num_global_tokens=None,
                     num_global_sequences=4, row_lengths=lengths.unsqueeze(1).expand(4, 7).reshape(1, -1).float())
    assert torch.allclose(flat, by_row, atol=1e-6)


def test_shared_prompt_trees_run_each_prompt_once() -> None:
    from nemo_qwenlong.algorithms.shared_prompt import prompt_groups, shared_prompt_rows, tree_tokens

    prompt_ids = torch.tensor([[5, 6, 7], [8, 9, 0], [5, 6, 7]])  # rows 0 and 2 share a prompt
    response_ids = torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0]])
    response_mask = response_ids != 0
    layout = shared_prompt_rows(prompt_ids, torch.tensor([3, 2, 3]), response_ids, response_mask)
    assert prompt_groups(prompt_ids, torch.tensor([3, 2, 3])) == [[0, 2], [1]]
    # tree 1: trunk [5, 6], branches [7, 1, 2] and [7, 6]; tree 2: trunk [8], branch [9, 3, 4, 5]
    assert layout.tokens.tolist() == [[5, 6, 7, 1, 2, 7, 6, 8, 9, 3, 4, 5]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 3, 0, 1, 2, 3, 4]]
    assert layout.targets.tolist() == [[0, 0, 1, 2, 0, 6, 0, 0, 3, 4, 5, 0]]
    assert [(t.start, t.trunk, t.branches) for t in layout.trees] == [(0, 2, ((2, 3), (5, 2))), (7, 1, ((8, 4),))]
    # response token j is scored where its target is: the branch's j-th position
    picked = to_response_layout(layout.targets.float(), layout)
    assert torch.equal(picked, torch.where(response_mask, response_ids, 0).float())
    assert layout.seq_len == tree_tokens(3, [2, 1]) + tree_tokens(2, [3]) == 12  # padded would run 3 × 6 = 18
    assert layout.lengths.tolist() == [5, 5, 4]
    with pytest.raises(ValueError, match="at least one token"):
        shared_prompt_rows(prompt_ids, torch.tensor([3, 0, 3]), response_ids, response_mask)


def test_shared_prompt_micro_batches_keep_groups_whole() -> None:
    from nemo_qwenlong.algorithms.packing import micro_batches_shared_prompt

    groups = [[0, 3], [1, 2, 4], [5]]
    assert micro_batches_shared_prompt(groups, [6, 9, 2], 10) == [[1, 2, 4], [0, 3, 5]]  # 9 alone; 6 + 2
    assert micro_batches_shared_prompt(groups, [6, 9, 2], 100) == [[0, 1, 2, 3, 4, 5]]


def test_a_group_over_the_budget_is_split_into_trees_that_fit() -> None:
    from nemo_qwenlong.algorithms.packing import micro_batches_shared_prompt
    from nemo_qwenlong.algorithms.shared_prompt import fitting_groups, tree_tokens

    # one prompt of 20 tokens, 8 responses of 9: the whole tree is 19 + 8·10 = 99 tokens
    prompt, resp = [20] * 8, [9] * 8
    assert tree_tokens(20, resp) == 99
    parts = fitting_groups([list(range(8))], prompt, resp, 50)
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7]]  # 19 + 3·10 = 49 each; every row once, in order
    sizes = [tree_tokens(20, [resp[i] for i in p]) for p in parts]
    assert max(sizes) <= 50
    plan = micro_batches_shared_prompt(parts, sizes, 50)
    assert sorted(i for b in plan for i in b) == list(range(8)) and len(plan) == 3
    assert fitting_groups([[0, 1]], [20, 20], [40, 1], 30) == [[0], [1]]  # a branch over the budget stays alone
