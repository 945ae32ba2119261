"""Pure pieces of the RL loop (`loops/rl.py`): the mini-batch deal over data-parallel ranks with a short
last mini-batch, the zero-weight row, validation sampling settings and the metrics row."""

from __future__ import annotations

import time

import pytest
import torch

from nemo_qwenlong.algorithms.dynamic_sampling import DynamicSamplingStats
from nemo_qwenlong.algorithms.losses import count_sequences, count_tokens
from nemo_qwenlong.config.pipeline import RolloutConfig
from nemo_qwenlong.config.pipeline import StageConfig
from nemo_qwenlong.curriculum.sampler import RetrospectiveSampler
from nemo_qwenlong.loops.rl import (
    RLEnv,
    RoundLog,
    _row,
    mini_batch_rows,
    mini_batches,
    validation_sampling,
    zero_weight_row,
)
from tests.backends.megatron_policy_worker import make_batch


def test_a_short_last_mini_batch_leaves_a_rank_empty_instead_of_failing() -> None:
    # 3 groups of 2 rows in mini-batches of 2 groups over 2 ranks: [g0 | g1], then [g2 | nothing]
    assert mini_batches(3, 2, 0, 2, 2) == [[0, 1], [4, 5]]
    assert mini_batches(3, 2, 1, 2, 2) == [[2, 3], []]
    assert mini_batches(3, 2, 0, 1, 2) == [[0, 1, 2, 3], [4, 5]]  # DP=1: the same groups on one rank


def test_the_zero_weight_row_adds_no_token_sequence_or_advantage() -> None:
    batch = make_batch(n=8)
    batch = batch.replace(advantages=torch.ones(8))
    pad = zero_weight_row(batch)
    assert pad.num_rows == 1 and count_tokens(pad.response_mask) == 0 and count_sequences(pad.response_mask) == 0
    assert float(pad.advantages[0]) == 0.0 and pad.old_logprobs is None
    assert torch.equal(pad.prompt_ids, batch.prompt_ids[:1])  # a real prompt: the forward runs as usual
    mine = batch.select([2, 3])
    assert mini_batch_rows(mine, [1], batch).item_ids == ("3",)
    assert count_tokens(mini_batch_rows(mine, [], batch).response_mask) == 0


def test_validation_sampling_takes_val_samples_and_val_top_p() -> None:
    rollout = RolloutConfig(top_p=0.9, top_k=20, val_temperature=0.6, val_top_p=0.8, val_samples=4)
    s = validation_sampling(rollout, seed=7, max_tokens=32)
    assert (s.n, s.temperature, s.top_p, s.top_k, s.max_tokens, s.seed) == (4, 0.6, 0.8, 20, 32, 7)
    greedy = validation_sampling(rollout.model_copy(update={"val_temperature": 0.0}), seed=7, max_tokens=32)
    assert (greedy.n, greedy.temperature, greedy.top_p, greedy.top_k) == (1, 0.0, 1.0, -1)  # n identical samples = 1


def _env() -> RLEnv:
    stage = StageConfig(name="s1", max_input_tokens=100, steps=1)
    sampler = RetrospectiveSampler([["a", "b"]], [stage], batch_size=1, seed=0, drop_last=True)
    return RLEnv(cfg=None, policy=None, engine=None, reward=None, tokenizer=None, items={}, prompts={}, sampler=sampler)


def test_row_logs_kl_ratio_entropy_and_clip_token_weighted_over_updates() -> None:
    """Two updates of 30 and 10 tokens (each already reduced over ranks by the policy): the row's means
    are token-weighted over them, ratio_min/max the extremes; no unfilled `kl` key."""
    common = {"grad_norm": 1.0, "lr": 1e-3, "skipped_steps": 0.0, "dual_clip_frac": 0.0, "clip_frac_low": 0.0}
    train = [common | {"loss": 0.1, "num_tokens": 30.0, "entropy": 2.0, "approx_kl": 0.01, "ratio_mean": 1.0,
                       "ratio_min": 0.9, "ratio_max": 1.1, "clip_frac_high": 0.1},
             common | {"loss": 0.3, "num_tokens": 10.0, "entropy": 6.0, "approx_kl": 0.05, "ratio_mean": 1.2,
                       "ratio_min": 0.8, "ratio_max": 1.5, "clip_frac_high": 0.5}]
    env = _env()
    row = _row(env, env.sampler.stages[0], 3, RoundLog(), time.perf_counter(), DynamicSamplingStats(), train)
    # (30·2 + 10·6) / 40 = 3; (30·0.01 + 10·0.05) / 40 = 0.02; (30·1 + 10·1.2) / 40 = 1.05; (3 + 5) / 40 = 0.2
    assert row["entropy"] == pytest.approx(3.0) and row["approx_kl"] == pytest.approx(0.02)
    assert row["ratio_mean"] == pytest.approx(1.05) and row["clip_frac_high"] == pytest.approx(0.2)
    assert (row["ratio_min"], row["ratio_max"]) == (0.8, 1.5)
    assert row["dual_clip_frac"] == 0.0 and row["clip_frac_low"] == 0.0 and row["loss"] == pytest.approx(0.2)
    assert "kl" not in row and "kl_ref" not in row  # kl_ref only when the loss has a reference term


def test_a_fresh_rl_start_drops_a_step0_row_and_keeps_sft_rows(tmp_path) -> None:  # noqa: ANN001
    """The run truncates to ("rl", -1) on a fresh RL start (its step-0 validation runs again), to ("rl", s)
    when resuming from checkpoint s (the step-0 row stays)."""
    from nemo_qwenlong.loops.metrics import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    for phase, step in (("sft", 1), ("sft", 2), ("rl", 0), ("rl", 1), ("rl", 2)):
        log.write({"phase": phase, "step": step})
    log.truncate_after("rl", 1)
    assert [(r["phase"], r["step"]) for r in log.rows()] == [("sft", 1), ("sft", 2), ("rl", 0), ("rl", 1)]
    log.truncate_after("rl", -1)
    assert [(r["phase"], r["step"]) for r in log.rows()] == [("sft", 1), ("sft", 2)]
