"""Sequence layout: prompt + response rows joined, per-token values moved both ways, CP zigzag split."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.algorithms.sequences import (
    cp_merge,
    cp_split,
    fp8_local_rows,
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
    assert padding_multiple(fp8="tensorwise") == 16
    assert padding_multiple(context_parallel=4, fp8="tensorwise") == 64  # 16 rows on each of 4 CP ranks


# The recipe layouts (conf/qwenlong-l1: TP8/CP4, TP8/CP2, TP4/CP2, TP1) and the small ones a test cluster uses.
LAYOUTS = [(8, 4), (8, 2), (4, 2), (4, 1), (8, 1), (2, 2), (1, 4), (1, 1)]


@pytest.mark.parametrize("recipe", ["tensorwise", "delayed", "blockwise"])
@pytest.mark.parametrize(("tp", "cp"), LAYOUTS)
@pytest.mark.parametrize("sp", [True, False])
def test_fp8_padding_gives_every_local_gemm_input_its_row_multiple(recipe: str, tp: int, cp: int, sp: bool) -> None:
    """TE's `assert_dim_for_fp8_exec` checks the rows a rank's FP8 GEMM sees: under sequence parallel
    the norm+linear's *local* input, B·S/(CP·TP) rows; for B = 1 that is S/(CP·TP). It needs 8;
    megatron aligns to 16 (`get_fp8_align_size`); blockwise quantises 128-row blocks. The old rule
    (16·2·CP) left 4 local rows at TP8/CP4, TP8/CP2 and TP4/CP1."""
    if sp and tp == 1:
        return  # sequence parallel needs TP > 1 (config validation)
    m = padding_multiple(context_parallel=cp, tensor_parallel=tp, sequence_parallel=sp, fp8=recipe)
    need = fp8_local_rows(recipe)
    for s in (m, 3 * m, 7 * m):  # every S the layout can build is a multiple of m
        local_rows = s // (cp * (tp if sp else 1))  # one-row micro-batch
        assert s % (cp * (tp if sp else 1)) == 0 and local_rows % need == 0, (s, local_rows)
        assert local_rows % 8 == 0  # TE's hard floor
        assert cp == 1 or s % (2 * cp) == 0  # zigzag CP chunks still whole
    assert fp8_local_rows("blockwise") == 128 and fp8_local_rows("tensorwise") == 16


def test_fp8_recipe_names_are_checked() -> None:
    with pytest.raises(ValueError, match="'mxfp8' is not one of"):
        padding_multiple(fp8="mxfp8")
