"""The one batch contract for rollout results and training batches.

One row per response. The G responses of a prompt are contiguous rows (a *group*) and share a
`group_ids` value. Token tensors are right-padded; `response_mask` is the only mask (True on valid
response tokens, EOS included). Rows travel together: `select`/`concat` move every field at once, so
a reward can never be paired with another row's tokens.

| field            | dtype   | shape   | meaning                                                       |
|------------------|---------|---------|---------------------------------------------------------------|
| group_ids        | int64   | [N]     | prompt group (GRPO `uid`); contiguous runs of `group_size`    |
| sample_ids       | int64   | [N]     | unique row id, stable through filtering and concatenation     |
| prompt_ids       | int64   | [N, P]  | prompt tokens, right-padded with 0                            |
| prompt_lengths   | int64   | [N]     | valid prompt tokens                                           |
| response_ids     | int64   | [N, R]  | response tokens, right-padded with 0                          |
| response_mask    | bool    | [N, R]  | valid response tokens                                         |
| truncated        | bool    | [N]     | generation stopped at the output cap                          |
| rewards          | float32 | [N]     | total (shaped) reward R = r_answer + r_len                    |
| correct          | bool    | [N]     | unshaped correctness (r_answer == 1); drives dynamic sampling |
| old_logprobs     | float32 | [N, R]  | optional: behaviour-policy token log-probs (trainer recompute)|
| ref_logprobs     | float32 | [N, R]  | optional: reference-policy token log-probs (kl_coef > 0 only) |
| advantages       | float32 | [N]     | optional: per-sequence advantage, broadcast over tokens       |
| item_ids         | str     | [N]     | dataset item id of the row's prompt (difficulty ledger key)   |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

PAD_ID = 0

# name -> (dtype, rank, padding value for concatenation along dim 1)
TENSOR_FIELDS: dict[str, tuple[torch.dtype, int, float]] = {
    "group_ids": (torch.int64, 1, 0),
    "sample_ids": (torch.int64, 1, 0),
    "prompt_ids": (torch.int64, 2, PAD_ID),
    "prompt_lengths": (torch.int64, 1, 0),
    "response_ids": (torch.int64, 2, PAD_ID),
    "response_mask": (torch.bool, 2, False),
    "truncated": (torch.bool, 1, False),
    "rewards": (torch.float32, 1, 0.0),
    "correct": (torch.bool, 1, False),
    "old_logprobs": (torch.float32, 2, 0.0),
    "ref_logprobs": (torch.float32, 2, 0.0),
    "advantages": (torch.float32, 1, 0.0),
}
OPTIONAL_FIELDS = frozenset({"old_logprobs", "ref_logprobs", "advantages"})
RESPONSE_WIDTH_FIELDS = ("response_ids", "response_mask", "old_logprobs", "ref_logprobs")


class BatchContractError(ValueError):
    """A batch whose fields do not match the contract (names the field, expected and actual)."""


@dataclass(frozen=True)
class RolloutBatch:
    group_ids: Tensor
    sample_ids: Tensor
    prompt_ids: Tensor
    prompt_lengths: Tensor
    response_ids: Tensor
    response_mask: Tensor
    truncated: Tensor
    rewards: Tensor
    correct: Tensor
    item_ids: tuple[str, ...]
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    advantages: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.group_ids.shape[0] if isinstance(self.group_ids, Tensor) else -1
        for name, (dtype, rank, _) in TENSOR_FIELDS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL_FIELDS:
                continue
            if not isinstance(value, Tensor) or value.dtype != dtype or value.dim() != rank or value.shape[0] != n:
                got = f"{value.dtype} {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
                raise BatchContractError(f"RolloutBatch.{name}: expected {dtype} of rank {rank} with N={n} rows, got {got}")
        for name in RESPONSE_WIDTH_FIELDS[1:]:
            value = getattr(self, name)
            if value is not None and value.shape != self.response_ids.shape:
                raise BatchContractError(
                    f"RolloutBatch.{name}: shape {list(value.shape)} must equal response_ids {list(self.response_ids.shape)}"
                )
        if len(self.item_ids) != n:
            raise BatchContractError(f"RolloutBatch.item_ids: expected {n} ids, got {len(self.item_ids)}")

    @property
    def num_rows(self) -> int:
        return int(self.group_ids.shape[0])

    @property
    def response_lengths(self) -> Tensor:
        """Valid response tokens per row, [N] int64."""
        return self.response_mask.sum(dim=1)

    def replace(self, **changes: object) -> "RolloutBatch":
        return dataclasses.replace(self, **changes)

    def select(self, index: Tensor | Sequence[int]) -> "RolloutBatch":
        """Rows `index` (in that order), every field moved together."""
        idx = torch.as_tensor(index, dtype=torch.int64)
        fields = {name: _take(getattr(self, name), idx) for name in TENSOR_FIELDS}
        return RolloutBatch(**fields, item_ids=tuple(self.item_ids[i] for i in idx.tolist()))

    @staticmethod
    def concat(batches: Sequence["RolloutBatch"]) -> "RolloutBatch":
        """Rows of all batches, token tensors right-padded to the widest batch."""
        if not batches:
            raise BatchContractError("RolloutBatch.concat: no batches given")
        fields: dict[str, Tensor | None] = {}
        for name, (_, rank, pad) in TENSOR_FIELDS.items():
            values = [getattr(b, name) for b in batches]
            present = [v is not None for v in values]
            if any(present) and not all(present):
                raise BatchContractError(f"RolloutBatch.concat: field {name} is set in some batches only")
            if not all(present):
                fields[name] = None
            elif rank == 1:
                fields[name] = torch.cat(values)
            else:
                width = max(v.shape[1] for v in values)
                fields[name] = torch.cat([_pad_right(v, width, pad) for v in values])
        item_ids = tuple(i for b in batches for i in b.item_ids)
        return RolloutBatch(**fields, item_ids=item_ids)


def _take(value: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if value is None else value.index_select(0, idx)


def _pad_right(value: Tensor, width: int, pad: float) -> Tensor:
    if value.shape[1] == width:
        return value
    return torch.nn.functional.pad(value, (0, width - value.shape[1]), value=pad)


def pad_sequences(rows: Sequence[Sequence[int]], pad: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """Right-pad token lists into ([N, max_len] int64 ids, [N, max_len] bool mask)."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.int64)
        mask[i, : len(row)] = True
    return ids, mask


@dataclass(frozen=True)
class TokenRows:
    """Rows of prompt + response tokens only: SFT batches, log-prob probes (select() like RolloutBatch)."""

    prompt_ids: Tensor  # [N, P] int64
    prompt_lengths: Tensor  # [N] int64
    response_ids: Tensor  # [N, R] int64
    response_mask: Tensor  # [N, R] bool

    @property
    def num_rows(self) -> int:
        return int(self.prompt_ids.shape[0])

    @property
    def response_lengths(self) -> Tensor:
        return self.response_mask.sum(dim=1)

    def select(self, index: list[int]) -> "TokenRows":
        i = torch.as_tensor(index, dtype=torch.int64)
        return TokenRows(*(t.index_select(0, i) for t in (self.prompt_ids, self.prompt_lengths,
                                                         self.response_ids, self.response_mask)))

    @classmethod
    def from_lists(cls, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> "TokenRows":
        prompt_ids, _ = pad_sequences(prompts)
        response_ids, response_mask = pad_sequences(responses)
        return cls(prompt_ids, torch.tensor([len(p) for p in prompts], dtype=torch.int64), response_ids, response_mask)

    def to_lists(self) -> tuple[list[list[int]], list[list[int]]]:
        """Inverse of `from_lists`: each row's valid prompt and response tokens."""
        prompts = [self.prompt_ids[i, : int(self.prompt_lengths[i])].tolist() for i in range(self.num_rows)]
        responses = [self.response_ids[i][self.response_mask[i]].tolist() for i in range(self.num_rows)]
        return prompts, responses
