"""Prompt + response rows as model inputs ("sequence layout"), and back. Pure torch.

A batch row i is the sequence prompt[:P_i] ++ response[:R_i], right-padded to a common length S
(rounded up to `multiple`: 2·CP for context parallelism, TP with sequence parallelism, 16 for FP8;
see `padding_multiple`). Position t's logits predict token t+1, so response token j of row i is
scored at position P_i − 1 + j. Per-token training inputs (mask, old log-probs, ...) are moved into
the sequence layout with `to_sequence_layout`, so the loss is computed where the logits are, and a
sequence-split (context-parallel) loss is a plain sum over ranks.

Context parallelism splits S into 2·CP chunks and gives rank r the chunks r and 2·CP−1−r
(megatron-core's load-balanced "zigzag" split for causal attention): `cp_split` / `cp_merge`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

PAD = 0


class TokenLayout(Protocol):
    """What moving values between the response layout and a token layout reads: `SequenceLayout`
    ([B, S]) and the one-row layouts (`packed.PackedLayout`, `shared_prompt.SharedPromptLayout`, [1, T])."""

    @property
    def tokens(self) -> Tensor: ...

    @property
    def response_mask(self) -> Tensor: ...

    @property
    def flat_slots(self) -> Tensor: ...


@dataclass(frozen=True)
class SequenceLayout:
    tokens: Tensor  # [B, S] int64, right-padded with PAD
    position_ids: Tensor  # [B, S] int64, 0.. per row
    targets: Tensor  # [B, S] int64, next token (PAD past each row's end)
    response_slots: Tensor  # [B, R] int64, position scoring response token j (clamped; use the mask)
    response_mask: Tensor  # [B, R] bool
    lengths: Tensor  # [B] int64, P_i + R_i

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def flat_slots(self) -> Tensor:
        """[B, R] index of each response token's scoring position in `tokens.view(-1)`."""
        return self.response_slots + torch.arange(self.tokens.shape[0]).unsqueeze(1) * self.seq_len


class OneRowLayout:
    """What the one-row layouts (`packed.PackedLayout`, `shared_prompt.SharedPromptLayout`) share: every
    row in one [1, T] tensor row, so `response_slots` already index `tokens.view(-1)`."""

    tokens: Tensor
    response_slots: Tensor

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def flat_slots(self) -> Tensor:
        return self.response_slots


# Rows (tokens) each rank's shard of S must be a multiple of before an FP8 GEMM sees it, per recipe.
# Transformer Engine's `assert_dim_for_fp8_exec` (transformer_engine/pytorch/utils.py) raises unless
# the product of an FP8 GEMM input's leading dims is divisible by 8; megatron-core aligns FP8 rows to
# 16 (`fp8_utils.get_fp8_align_size`, 32 for mxfp8), which we follow. Blockwise scaling quantises in
# 128-row blocks: `Float8BlockQuantizer.is_quantizable` (transformer_engine/pytorch/tensor/
# float8_blockwise_tensor.py) needs the row product divisible by its block_len (128), else the
# sequence-parallel all-gather of the norm+linear input cannot be done in FP8.
FP8_LOCAL_ROWS = {"tensorwise": 16, "delayed": 16, "blockwise": 128}


def fp8_local_rows(recipe: str) -> int:
    """Row multiple a rank's local FP8 GEMM input needs under `recipe` (see FP8_LOCAL_ROWS)."""
    if recipe not in FP8_LOCAL_ROWS:
        raise ValueError(f"fp8 recipe {recipe!r} is not one of {tuple(FP8_LOCAL_ROWS)}")
    return FP8_LOCAL_ROWS[recipe]


def padding_multiple(*, context_parallel: int = 1, tensor_parallel: int = 1, sequence_parallel: bool = False,
                     fp8: str | None = None) -> int:
    """Smallest S multiple that every enabled feature accepts (lcm of their requirements).

    CP splits S into 2·CP chunks (each rank holds S/CP); sequence parallel splits a rank's S/CP over
    TP. Under SP, TE's norm+linear checks its *local* input, B·S/(CP·TP) rows, so with one-row
    micro-batches S/(CP·TP) itself must be a multiple of `fp8_local_rows(fp8)`; without SP the
    local rows are B·S/CP. `fp8` names the recipe (None: no FP8)."""
    chunks = 2 * context_parallel if context_parallel > 1 else 1
    need = [chunks]
    if sequence_parallel:
        need.append(tensor_parallel * chunks)
    if fp8 is not None:
        shards = context_parallel * (tensor_parallel if sequence_parallel else 1)
        need.append(shards * fp8_local_rows(fp8))
    return math.lcm(*need)


def padded_width(longest: int, multiple: int = 1) -> int:
    """S of the layout whose longest row has `longest` tokens: at least 1, rounded up to `multiple`
    (what `join_rows` builds; the micro-batch planner budgets rows × S with it)."""
    return -(-max(longest, 1) // multiple) * multiple


def join_rows(prompt_ids: Tensor, prompt_lengths: Tensor, response_ids: Tensor, response_mask: Tensor,
              *, multiple: int = 1) -> SequenceLayout:
    """Concatenate each row's valid prompt and response tokens (see the module docstring)."""
    b, r = response_ids.shape
    resp_len = response_mask.sum(dim=1)
    lengths = prompt_lengths + resp_len
    width = padded_width(int(lengths.max()) if b else 1, multiple)
    col = torch.arange(width).unsqueeze(0)
    tokens = torch.full((b, width), PAD, dtype=torch.int64)
    in_prompt = col < prompt_lengths.unsqueeze(1)
    q = min(prompt_ids.shape[1], width)
    tokens[:, :q] = torch.where(in_prompt[:, :q], prompt_ids[:, :q], PAD)
    resp_cols = prompt_lengths.unsqueeze(1) + torch.arange(r).unsqueeze(0)  # [B, R]
    valid = response_mask & (resp_cols < width)
    rows = torch.arange(b).unsqueeze(1).expand(b, r)
    tokens[rows[valid], resp_cols[valid]] = response_ids[valid]
    targets = torch.full_like(tokens, PAD)
    targets[:, :-1] = tokens[:, 1:]
    targets = torch.where(col + 1 < lengths.unsqueeze(1), targets, PAD)
    slots = (resp_cols - 1).clamp(0, width - 1)
    return SequenceLayout(tokens, col.expand(b, width).clone(), targets, slots, response_mask.clone(), lengths)


def to_sequence_layout(values: Tensor, layout: TokenLayout, fill: float = 0) -> Tensor:
    """[B, R] response-layout values -> the layout's token shape ([B, S] padded, [1, T] packed) at
    their scoring positions (`fill` elsewhere)."""
    out = torch.full((layout.tokens.numel(),), fill, dtype=values.dtype, device=values.device)
    mask = layout.response_mask.to(values.device)
    out[layout.flat_slots.to(values.device)[mask]] = values[mask]  # valid slots are distinct
    return out.view(layout.tokens.shape)


def to_response_layout(values: Tensor, layout: TokenLayout, fill: float = 0) -> Tensor:
    """Token-shaped values ([B, S] or [1, T]) -> [B, R] (`fill` where the response mask is False).
    Differentiable."""
    picked = values.reshape(-1)[layout.flat_slots.to(values.device)]
    return torch.where(layout.response_mask.to(values.device), picked, torch.as_tensor(fill, dtype=values.dtype))


def cp_split(values: Tensor, rank: int, size: int, dim: int = 1) -> Tensor:
    """This context-parallel rank's chunks r and 2·size−1−r of `values` along `dim`."""
    if size == 1:
        return values
    if values.shape[dim] % (2 * size):
        raise ValueError(f"sequence length {values.shape[dim]} is not a multiple of 2·context_parallel={2 * size}")
    chunks = values.chunk(2 * size, dim=dim)
    return torch.cat([chunks[rank], chunks[2 * size - 1 - rank]], dim=dim)


def cp_merge(parts: list[Tensor], dim: int = 1) -> Tensor:
    """Inverse of `cp_split` over every rank's part, in rank order."""
    size = len(parts)
    if size == 1:
        return parts[0]
    chunks: list[Tensor | None] = [None] * (2 * size)
    for rank, part in enumerate(parts):
        chunks[rank], chunks[2 * size - 1 - rank] = part.chunk(2, dim=dim)
    return torch.cat(chunks, dim=dim)  # type: ignore[arg-type]
