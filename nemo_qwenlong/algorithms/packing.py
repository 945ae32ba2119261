"""Budgeted grouping: token-budgeted micro-batches (the sequence packing plan) and byte-budgeted
groups of tensors (refit buckets, safetensors shards). Pure Python (torch only for tensor sizes).

Rows are grouped, in order, into micro-batches whose summed length stays within `budget` tokens;
a single row longer than the budget gets a micro-batch of its own (it is never cut). The optimiser
step's loss denominator is counted over all of them (see algorithms.losses), so the split does
not change the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from torch import Tensor

T = TypeVar("T")


def budget_groups(items: Iterable[T], size: Callable[[T], int], budget: int) -> Iterator[list[T]]:
    """Items in order, lazily, in lists whose summed `size` stays within `budget`; an item larger
    than the budget gets a list of its own (it is never cut). Serves micro-batches (tokens), refit
    buckets and safetensors shards (bytes)."""
    group: list[T] = []
    used = 0
    for item in items:
        n = size(item)
        if group and used + n > budget:
            yield group
            group, used = [], 0
        group.append(item)
        used += n
    if group:
        yield group


def tensor_bytes(named: tuple[str, Tensor]) -> int:
    """Size of a (name, tensor) pair's data: the `size` of byte-budgeted groups."""
    return named[1].numel() * named[1].element_size()


def micro_batches_by_tokens(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Row indices per micro-batch, in order, each micro-batch's Σ length <= budget (or one long row)."""
    if budget < 1:
        raise ValueError(f"micro-batch token budget must be >= 1, got {budget}")
    for i, n in enumerate(lengths):
        if n < 0:
            raise ValueError(f"row {i} has negative length {n}")
    return [[i for i, _ in group] for group in budget_groups(enumerate(lengths), lambda row: row[1], budget)]
