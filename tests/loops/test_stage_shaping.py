"""Overlong shaping in a curriculum stage uses that stage's own output cap (its max_output_tokens), not
rollout.max_new_tokens: the 3-stage recipes cap stage 1 at 12K while the rollout cap is stage 3's 50K."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nemo_qwenlong.config import load_config
from nemo_qwenlong.loops import rl
from nemo_qwenlong.rollout.generator import Sample


@pytest.mark.parametrize(("index", "cap", "expected"), [(0, 12, -0.5), (1, 50, 0.0)])
def test_a_round_shapes_at_the_stage_cap(monkeypatch: pytest.MonkeyPatch, index: int, cap: int,
                                         expected: float) -> None:
    cfg = load_config(None, ["cluster.gpus_per_node=0", "rl.group_size=2", "rollout.max_new_tokens=50",
                             "rl.overlong.buffer=4", "rl.overlong.factor=1.0",
                             "curriculum.stages.0.max_output_tokens=12", "curriculum.stages.1.max_output_tokens=50"])
    seen = {}

    def fake_generate(env, ids, settings, log):  # noqa: ANN001, ANN202 - the engine and reward stand-in
        seen["max_tokens"] = settings.max_tokens
        one = Sample(token_ids=tuple(range(10)), logprobs=(0.0,) * 10, finish_reason="stop")  # 10 tokens
        return [[one, one]], [1.0, 1.0]

    monkeypatch.setattr(rl, "generate_and_score", fake_generate)
    sampler = SimpleNamespace(next_batch=lambda: SimpleNamespace(item_ids=["a"]), observe=lambda *a, **k: None)
    env = SimpleNamespace(cfg=cfg, sampler=sampler, prompts={"a": [1, 2, 3]})
    stage = cfg.curriculum.stages[index]
    batch = rl.rollout_round(env, stage, step=0, round_index=0, log=rl.RoundLog(), first_group=0)
    assert seen["max_tokens"] == cap
    # cap 12, buffer 4: the ramp starts at 8, so 10 tokens get −(10 − 8)/4 = −0.5; at cap 50 none
    assert batch.rewards.tolist() == pytest.approx([1.0 + expected] * 2)
