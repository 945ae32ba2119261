"""Token-budgeted micro-batches (sequence packing plan). Pure Python.

Rows are grouped, in order, into micro-batches whose summed length stays within `budget` tokens;
a single row longer than the budget gets a micro-batch of its own (it is never cut). The optimiser
step's loss denominator is counted over all of them (see algorithms.losses), so the split does
not change the result.
"""

from __future__ import annotations

from collections.abc import Sequence


def micro_batches_by_tokens(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Row indices per micro-batch, in order, each micro-batch's Σ length <= budget (or one long row)."""
    if budget < 1:
        raise ValueError(f"micro-batch token budget must be >= 1, got {budget}")
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if n < 0:
            raise ValueError(f"row {i} has negative length {n}")
        if current and used + n > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        batches.append(current)
    return batches
