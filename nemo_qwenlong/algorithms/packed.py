"""Packed ("THD") sequence layout: a micro-batch's rows end to end in one [1, T] row. Pure torch.

The padded layout (`sequences.join_rows`) runs every row at the longest row's length S; a DocQA
micro-batch (a 19K-token document beside a 3K one) then spends most of its forward on padding.
Packed, row i occupies tokens [cu_seqlens_padded[i], cu_seqlens_padded[i+1]) of the pack, its
P_i + R_i valid tokens first, then padding up to its padded length; attention is causal *within*
each row (Transformer Engine's `thd` format: cu_seqlens, `padding_causal`; on CPU the SDPA core
attention runs it row by row), and RoPE restarts at 0 for each row (megatron's THD RoPE), so
every valid token sees exactly what it sees in the padded layout.

Padding rules (the same features as `sequences.padding_multiple`):
- context parallelism splits *each row* into 2·CP chunks and gives rank r chunks r and 2·CP−1−r
  of every row (Transformer Engine's `thd_get_partitioned_indices`, what megatron's THD attention
  and RoPE expect): each row's padded length is a multiple of `row_multiple` = 2·CP;
- sequence parallelism and FP8 constrain only the total (a rank's T/CP tokens are scattered over
  TP, and an FP8 GEMM sees them all): T is a multiple of `padding_multiple(...)`, reached by
  lengthening the last row's padding (it stays a multiple of 2·CP, since T is).
Response token j of row i is scored at pack position cu_seqlens_padded[i] + P_i − 1 + j.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nemo_qwenlong.algorithms.sequences import PAD, OneRowLayout, join_rows, padded_width


@dataclass(frozen=True)
class PackedLayout(OneRowLayout):
    tokens: Tensor  # [1, T] int64
    position_ids: Tensor  # [1, T] int64, 0.. within each row (padding continues the count)
    targets: Tensor  # [1, T] int64, next token within the row (PAD on padding and at each row's end)
    response_slots: Tensor  # [B, R] int64, pack position scoring response token j (clamped; use the mask)
    response_mask: Tensor  # [B, R] bool
    lengths: Tensor  # [B] int64, valid tokens P_i + R_i
    cu_seqlens: Tensor  # [B+1] int32, cumulative valid lengths (attention's sequence ends)
    cu_seqlens_padded: Tensor  # [B+1] int32, cumulative padded lengths (where each row starts)

    @property
    def padded_lengths(self) -> Tensor:
        return self.cu_seqlens_padded[1:] - self.cu_seqlens_padded[:-1]

    @property
    def max_seqlen(self) -> int:
        """Longest padded row (megatron's `max_seqlen_q`: the RoPE table length, TE's kernel bound)."""
        return int(self.padded_lengths.max())


def row_multiple(context_parallel: int = 1) -> int:
    """Each packed row's padded-length multiple: 2·CP chunks per row under context parallelism."""
    return 2 * context_parallel if context_parallel > 1 else 1


def packed_lengths(lengths: list[int], *, row_mult: int = 1, total_mult: int = 1) -> list[int]:
    """Padded length of each row of a pack: rounded up to `row_mult`, the last one lengthened until
    the sum is a multiple of `total_mult` (which must be a multiple of `row_mult`)."""
    if total_mult % row_mult:
        raise ValueError(f"the pack's total multiple {total_mult} is not a multiple of the row multiple {row_mult}")
    padded = [padded_width(n, row_mult) for n in lengths]
    if padded:
        padded[-1] += padded_width(sum(padded), total_mult) - sum(padded)
    return padded


def pack_rows(prompt_ids: Tensor, prompt_lengths: Tensor, response_ids: Tensor, response_mask: Tensor,
              *, row_mult: int = 1, total_mult: int = 1) -> PackedLayout:
    """The rows of `join_rows` end to end (see the module docstring)."""
    rect = join_rows(prompt_ids, prompt_lengths, response_ids, response_mask)  # [B, S], no extra padding
    b = rect.tokens.shape[0]
    padded = torch.tensor(packed_lengths(rect.lengths.tolist(), row_mult=row_mult, total_mult=total_mult),
                          dtype=torch.int64)
    starts = torch.cumsum(padded, 0) - padded
    total = int(padded.sum())
    row_of = torch.repeat_interleave(torch.arange(b), padded)  # [T]
    col = torch.arange(total) - starts[row_of]
    valid = col < rect.lengths[row_of]
    tokens = torch.full((total,), PAD, dtype=torch.int64)
    targets = torch.full((total,), PAD, dtype=torch.int64)
    tokens[valid] = rect.tokens[row_of[valid], col[valid]]
    targets[valid] = rect.targets[row_of[valid], col[valid]]
    slots = (starts.unsqueeze(1) + rect.response_slots).clamp(0, max(total - 1, 0))
    zero = torch.zeros(1, dtype=torch.int32)
    return PackedLayout(
        tokens.unsqueeze(0), col.unsqueeze(0), targets.unsqueeze(0), slots, rect.response_mask, rect.lengths,
        torch.cat([zero, torch.cumsum(rect.lengths, 0).to(torch.int32)]),
        torch.cat([zero, torch.cumsum(padded, 0).to(torch.int32)]),
    )


def cp_indices(cu_seqlens_padded: Tensor, rank: int, size: int) -> Tensor:
    """Pack positions context-parallel rank `rank` holds, in order: chunks r and 2·size−1−r of every
    row (each row's padded length must be a multiple of 2·size)."""
    bounds = cu_seqlens_padded.tolist()
    if size == 1:
        return torch.arange(bounds[-1])
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if (end - start) % (2 * size):
            raise ValueError(f"packed row of padded length {end - start} is not a multiple of "
                             f"2·context_parallel={2 * size}")
        chunk = (end - start) // (2 * size)
        parts += [torch.arange(start + rank * chunk, start + (rank + 1) * chunk),
                  torch.arange(end - (rank + 1) * chunk, end - rank * chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def cp_split_packed(values: Tensor, layout: PackedLayout, rank: int, size: int) -> Tensor:
    """This context-parallel rank's share of [1, T] pack values (`cp_indices`), [1, T/CP]."""
    if size == 1:
        return values
    return values.index_select(1, cp_indices(layout.cu_seqlens_padded, rank, size).to(values.device))


def cp_merge_packed(parts: list[Tensor], layout: PackedLayout) -> Tensor:
    """Inverse of `cp_split_packed` over every rank's part, in rank order: [1, T]."""
    if len(parts) == 1:
        return parts[0]
    out = parts[0].new_zeros((parts[0].shape[0], layout.seq_len))
    for rank, part in enumerate(parts):
        out[:, cp_indices(layout.cu_seqlens_padded, rank, len(parts)).to(part.device)] = part
    return out
