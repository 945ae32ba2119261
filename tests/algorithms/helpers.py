"""Batch builders shared by the algorithm tests."""

from __future__ import annotations

import torch

from nemo_qwenlong.algorithms.batch import RolloutBatch, pad_sequences


def make_batch(group_ids: list[int], sample_ids: list[int], resp_lens: list[int], correct: list[bool]) -> RolloutBatch:
    """Rows whose tokens encode their own ids: prompt = [group id], response = [sample id] * len."""
    n = len(group_ids)
    prompt_ids, _ = pad_sequences([[g + 1] for g in group_ids])
    response_ids, mask = pad_sequences([[s + 1] * max(l, 0) for s, l in zip(sample_ids, resp_lens)])
    return RolloutBatch(
        group_ids=torch.tensor(group_ids),
        sample_ids=torch.tensor(sample_ids),
        prompt_ids=prompt_ids,
        prompt_lengths=torch.ones(n, dtype=torch.int64),
        response_ids=response_ids,
        response_mask=mask,
        truncated=torch.zeros(n, dtype=torch.bool),
        rewards=torch.tensor([float(c) + s / 1000 for s, c in zip(sample_ids, correct)]),
        correct=torch.tensor(correct),
        item_ids=tuple(f"item{g}" for g in group_ids),
    )
