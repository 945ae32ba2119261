"""The Megatron policy budgets its micro-batches by the padded layout it builds (its padding multiple)."""

from __future__ import annotations

from types import SimpleNamespace

from nemo_qwenlong.algorithms.batch import TokenRows
from nemo_qwenlong.backends.megatron.policy import MegatronPolicy


def test_policy_micro_batches_respect_the_padded_budget() -> None:
    rows = TokenRows.from_lists([[1] * 5, [2] * 3, [3] * 4, [4] * 2, [5] * 17], [[7, 7], [7], [], [7, 7, 7], [7]])
    policy = SimpleNamespace(micro_batch_tokens=16, multiple=8)  # e.g. CP=4: S is a multiple of 2·CP
    policy._layout = lambda mb: MegatronPolicy._layout(policy, mb)
    seen = []
    for idx, mb, layout in MegatronPolicy._micro_batches(policy, rows):
        assert layout.seq_len % 8 == 0 and mb.num_rows == len(idx)
        assert layout.tokens.numel() <= 16 or len(idx) == 1, (idx, tuple(layout.tokens.shape))
        seen += idx
    assert sorted(seen) == list(range(rows.num_rows))
