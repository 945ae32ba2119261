"""Budgeted grouping: token-budgeted micro-batches (the sequence packing plan) and byte-budgeted
groups of tensors (refit buckets, safetensors shards). Pure Python (torch only for tensor sizes).

Micro-batches are budgeted by the tokens the forward pass runs: a micro-batch of rows is laid out
as rows × S, S = its longest row rounded up to the padding multiple (`sequences.join_rows`), so
rows · S <= budget; a single row whose S exceeds the budget gets a micro-batch of its own (it is
never cut). Rows are taken longest first (choice: rows of similar length share a micro-batch, so
little of the budget is padding); callers map results back by the returned row indices. The
optimiser step's loss denominator is counted over all micro-batches (see algorithms.losses), so
the split does not change the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from torch import Tensor

from nemo_qwenlong.algorithms.sequences import padded_width

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


def micro_batches_by_tokens(lengths: Sequence[int], budget: int, *, multiple: int = 1) -> list[list[int]]:
    """Row indices per micro-batch (ascending within each), longest rows first; each micro-batch's
    padded size len(rows) · padded_width(longest, multiple) <= budget, or it is one long row."""
    _check_plan(lengths, budget, multiple)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    width = 0  # S of the open micro-batch: its first (longest) row's
    for i in order:
        if batches and (len(batches[-1]) + 1) * width <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
            width = padded_width(lengths[i], multiple)
    return [sorted(b) for b in batches]


def _check_plan(lengths: Sequence[int], budget: int, multiple: int) -> None:
    if budget < 1:
        raise ValueError(f"micro-batch token budget must be >= 1, got {budget}")
    if multiple < 1:
        raise ValueError(f"padding multiple must be >= 1, got {multiple}")
    for i, n in enumerate(lengths):
        if n < 0:
            raise ValueError(f"row {i} has negative length {n}")
