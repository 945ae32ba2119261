"""The rollout/train batch contract: validation, row selection and concatenation keep rows aligned."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.algorithms.batch import BatchContractError, RolloutBatch
from tests.algorithms.helpers import make_batch


def test_wrong_dtype_names_the_field() -> None:
    b = make_batch([0, 0], [0, 1], [2, 3], [True, False])
    with pytest.raises(BatchContractError, match="RolloutBatch.rewards: expected torch.float32"):
        b.replace(rewards=torch.tensor([1, 0]))
    with pytest.raises(BatchContractError, match="RolloutBatch.old_logprobs: shape \\[2, 2\\] must equal"):
        b.replace(old_logprobs=torch.zeros(2, 2))
    with pytest.raises(BatchContractError, match="item_ids: expected 2 ids, got 1"):
        b.replace(item_ids=("x",))


def test_select_moves_every_field_together() -> None:
    b = make_batch([0, 0, 1, 1], [10, 11, 12, 13], [1, 2, 3, 4], [True, False, False, True])
    s = b.select([3, 0])
    assert s.sample_ids.tolist() == [13, 10]
    assert s.response_ids[:, 0].tolist() == [14, 11]  # tokens follow their row
    assert s.response_lengths.tolist() == [4, 1]
    assert s.rewards.tolist() == pytest.approx([1.013, 1.010])
    assert s.item_ids == ("item1", "item0")


def test_concat_pads_to_widest_and_rejects_partial_optional_fields() -> None:
    a = make_batch([0, 0], [0, 1], [1, 2], [True, False])
    b = make_batch([1, 1], [2, 3], [5, 4], [True, True])
    c = RolloutBatch.concat([a, b])
    assert c.response_ids.shape == (4, 5)
    assert c.response_lengths.tolist() == [1, 2, 5, 4]
    assert c.response_mask[0].tolist() == [True, False, False, False, False]
    with pytest.raises(BatchContractError, match="old_logprobs is set in some batches only"):
        RolloutBatch.concat([a.replace(old_logprobs=torch.zeros(2, 2)), b])
