"""The Megatron policy budgets its micro-batches by the layout it builds (padded rows × S, or a
packed row's padded lengths, or shared-prompt trees), with its padding multiples."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nemo_qwenlong.algorithms.batch import TokenRows
from nemo_qwenlong.backends.megatron.policy import MegatronPolicy


@pytest.mark.parametrize("layout_name", ["padded", "packed", "shared_prompt"])
def test_policy_micro_batches_respect_the_budget(layout_name: str) -> None:
    rows = TokenRows.from_lists([[1] * 5, [2] * 3, [3] * 4, [4] * 2, [5] * 17, [2] * 3],
                                [[7, 7], [7], [], [7, 7, 7], [7], [8, 8]])  # rows 1 and 5 share a prompt
    multiple = 1 if layout_name == "shared_prompt" else 8  # e.g. CP=4: 2·CP per row (packed) or per S
    policy = SimpleNamespace(micro_batch_tokens=16, multiple=multiple, row_multiple=multiple,
                             sequence_layout=layout_name)
    policy._layout = lambda mb: MegatronPolicy._layout(policy, mb)
    seen = []
    for idx, mb, layout in MegatronPolicy._micro_batches(policy, rows):
        assert layout.seq_len % multiple == 0 and mb.num_rows == len(idx)
        assert layout.tokens.numel() <= 16 or len(idx) == 1 or layout_name == "shared_prompt", (idx, layout.tokens.shape)
        if layout_name == "packed":  # every row starts on a 2·CP boundary
            assert all(int(c) % 8 == 0 for c in layout.cu_seqlens_padded)
        if layout_name == "shared_prompt":  # whole groups; over budget only as one group
            assert layout.tokens.numel() <= 16 or len(layout.trees) == 1, (idx, layout.trees)
            assert (1 in idx) == (5 in idx)
        seen += idx
    assert sorted(seen) == list(range(rows.num_rows))
