"""Budgeted grouping: token-budgeted micro-batches (the sequence packing plan) and byte-budgeted
groups of tensors (refit buckets, safetensors shards). Pure Python (torch only for tensor sizes).

Micro-batches are budgeted by the tokens the forward pass runs: a micro-batch of rows is laid out
as rows × S, S = its longest row rounded up to the padding multiple (`sequences.join_rows`), so
rows · S <= budget; a single row whose S exceeds the budget gets a micro-batch of its own (it is
never cut). Rows are taken longest first (choice: rows of similar length share a micro-batch, so
little of the budget is padding); callers map results back by the returned row indices. The
optimiser step's loss denominator is counted over all micro-batches (see algorithms.losses), so
the split does not change the result.

Packed micro-batches (`micro_batches_packed`, the THD layout of `algorithms.packed`) run the sum of
their rows' padded lengths, not rows × longest, so they are filled first-fit by decreasing length:
each row, longest first, joins the first micro-batch it still fits in. Shared-prompt micro-batches
(`algorithms.shared_prompt`) are filled the same way with prompt groups as the items (a group over
the budget first split into sub-groups that fit, `shared_prompt.fitting_groups`).
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


def micro_batches_packed(lengths: Sequence[int], budget: int, *, row_multiple: int = 1,
                         total_multiple: int = 1) -> list[list[int]]:
    """Row indices per packed micro-batch (ascending within each): first-fit by decreasing length,
    each micro-batch's pack (every row rounded up to `row_multiple`, the sum to `total_multiple`,
    `packed.packed_lengths`) <= budget, or it is one long row."""
    _check_plan(lengths, budget, max(row_multiple, total_multiple))
    return [sorted(b) for b in first_fit([padded_width(n, row_multiple) for n in lengths], budget, total_multiple)]


def micro_batches_shared_prompt(groups: Sequence[Sequence[int]], tree_sizes: Sequence[int],
                                budget: int) -> list[list[int]]:
    """Row indices per shared-prompt micro-batch (ascending): whole prompt groups (a group's rows
    share one trunk, `shared_prompt.tree_tokens` each), first-fit by decreasing tree size."""
    _check_plan(tree_sizes, budget, 1)
    return [sorted(i for g in b for i in groups[g]) for b in first_fit(list(tree_sizes), budget)]


def first_fit(sizes: Sequence[int], budget: int, total_multiple: int = 1) -> list[list[int]]:
    """Item indices per bin, first-fit by decreasing size: each item, largest first, joins the first
    bin whose summed size, rounded up to `total_multiple`, stays within `budget`; an item that fits
    nowhere opens a bin (one larger than the budget is alone)."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    bins: list[list[int]] = []
    used: list[int] = []
    for i in order:
        k = next((k for k, u in enumerate(used) if padded_width(u + sizes[i], total_multiple) <= budget), None)
        if k is None:
            bins.append([i])
            used.append(sizes[i])
        else:
            bins[k].append(i)
            used[k] += sizes[i]
    return bins


def _check_plan(lengths: Sequence[int], budget: int, multiple: int) -> None:
    if budget < 1:
        raise ValueError(f"micro-batch token budget must be >= 1, got {budget}")
    if multiple < 1:
        raise ValueError(f"padding multiple must be >= 1, got {multiple}")
    for i, n in enumerate(lengths):
        if n < 0:
            raise ValueError(f"row {i} has negative length {n}")
