"""Token-budgeted micro-batching."""

from __future__ import annotations

import pytest

from nemo_qwenlong.algorithms.packing import micro_batches_by_tokens


def test_rows_grouped_in_order_within_budget() -> None:
    # 3+4 = 7 <= 8; +5 would be 12 → new batch; 5+2 = 7; 9 alone (over budget, never cut); 1
    assert micro_batches_by_tokens([3, 4, 5, 2, 9, 1], 8) == [[0, 1], [2, 3], [4], [5]]


def test_every_row_exactly_once() -> None:
    lengths = [7, 1, 1, 30, 2, 2, 2, 8, 0]
    batches = micro_batches_by_tokens(lengths, 10)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 or len(b) == 1 for b in batches)


def test_bad_budget() -> None:
    with pytest.raises(ValueError, match="budget must be >= 1"):
        micro_batches_by_tokens([1], 0)
    assert micro_batches_by_tokens([], 5) == []
