"""The planner with R = W/T engine replicas and a judge on the trainer's first GPU(s): hand-computed values on
the small model of test_planning.py. Each generation figure would differ if R were ignored (one engine for
the whole batch)."""

from __future__ import annotations

import pytest

from nemo_qwenlong.planning.hardware import KNOWN_MODELS, Gpu
from nemo_qwenlong.planning.layout import colocation_problems, memory_plan, replicas_text, rollout_replicas, \
    vllm_tp_problems
from nemo_qwenlong.planning.report import Batch, step_times
from tests.planning.test_planning import GPU, NO_SLACK, G, layout

R4 = layout(world=8, rollout_tp=2)  # 8 GPUs, replicas of T=2: R = 4
R1 = layout(world=2, gpus_per_node=2, rollout_tp=2)  # 2 GPUs, one replica of T=2


def batch(prompts: int) -> Batch:
    return Batch(gen_prompts=prompts, train_prompts=2, group_size=2, input_tokens=10, output_tokens=4, epochs=1,
                 optimizer_steps=1, reference_pass=False, prefix_caching=True)


def test_replicas_are_world_over_rollout_tp() -> None:
    assert [rollout_replicas(w, t) for w, t in [(32, 4), (16, 4), (8, 2), (1, 1), (8, 8)]] == [8, 4, 4, 1, 1]
    assert (R4.rollout_replicas, R1.rollout_replicas) == (4, 1)
    assert replicas_text(32, 4) == "R = W/T = 32/4 = 8"


def test_per_gpu_engine_memory_does_not_depend_on_r() -> None:
    """Each GPU holds its replica's weights / T and its own KV cache, whatever R is."""
    four, one = memory_plan(G, R4, GPU, NO_SLACK), memory_plan(G, R1, GPU, NO_SLACK)
    assert four.engine_weights == one.engine_weights == 1736 * 2 / 2  # P · 2 B / T
    assert four.kv_cache == one.kv_cache == 50_000 - 1736 - 1120  # share − weights − step buffers
    assert four.kv_tokens == one.kv_tokens == 47_144 / 32  # a replica's token capacity


def test_generation_is_split_over_the_replicas() -> None:
    """8 prompts of 2 samples: 2 per replica at R = 4, all 8 at R = 1."""
    four = step_times(G, R4, batch(8), GPU, memory_plan(G, R4, GPU, NO_SLACK), NO_SLACK)
    one = step_times(G, R1, batch(8), GPU, memory_plan(G, R1, GPU, NO_SLACK), NO_SLACK)
    assert (four.replicas, four.replica_prompts) == (4, 2)
    assert (one.replicas, one.replica_prompts) == (1, 8)
    # prefill: prompts × forward(10) = 31 360 FLOPs each, on the replica's T = 2 GPUs × 1e6 × MFU 0.5
    assert four.prefill == pytest.approx(2 * 31_360 / 1e6)
    assert one.prefill == pytest.approx(8 * 31_360 / 1e6)
    # decode: KV holds 1473 tokens, a group 10 + 2·4 = 18, so every group is resident at once (one wave);
    # a step reads weights 1736 B + seqs × mean context 12 × 32 B/token at 1000 B/s, 4 steps
    assert (four.decode.sequences_resident, four.decode.waves) == (4, 1)
    assert four.decode.seconds == pytest.approx(4 * (1736 + 4 * 12 * 32) / 1000)  # 13.088 s
    assert (one.decode.sequences_resident, one.decode.waves) == (16, 1)
    assert one.decode.seconds == pytest.approx(4 * (1736 + 16 * 12 * 32) / 1000)  # 31.52 s


def test_the_fullest_replica_sets_the_pace() -> None:
    """9 prompts over 4 replicas: groups are dealt whole, so one replica generates 3."""
    t = step_times(G, R4, batch(9), GPU, memory_plan(G, R4, GPU, NO_SLACK), NO_SLACK)
    assert t.replica_prompts == 3 and t.prefill == pytest.approx(3 * 31_360 / 1e6)


def test_a_judge_on_the_trainer_gpus_is_counted_there() -> None:
    m = memory_plan(G, layout(judge_gpus=1, judge_memory_utilization=0.1), GPU, NO_SLACK)
    assert m.judge_share == 10_000  # 0.1 × 100 000
    # rollouts 61 964 (test_phase_peaks) are the larger phase; GPU 0 adds the judge
    assert (m.peak, m.judge_gpu_peak) == (61_964, 71_964)
    own_node = memory_plan(G, layout(judge_gpus=0, judge_memory_utilization=0.1), GPU, NO_SLACK)
    assert own_node.judge_share == 0 and own_node.judge_gpu_peak == own_node.peak


def test_a_judge_that_does_not_fit_beside_trainer_and_engine_is_named() -> None:
    small = Gpu("small", memory_bytes=60_000, bf16_flops=1e6, hbm_bytes_per_s=1000)
    assert colocation_problems(G, layout(), small, NO_SLACK) == []  # 6076 resident + 30 000 engine
    (problem,) = colocation_problems(G, layout(judge_gpus=1, judge_memory_utilization=0.6), small, NO_SLACK)
    # free for engine and judge: 60 000 − 6076 = 53 924; judge ≤ (53 924 − 30 000) / 60 000 = 0.40,
    # engine ≤ (53 924 − 36 000) / 60 000 = 0.30
    assert "cluster.judge.placement=trainer_node" in problem and "cluster.judge.gpu_memory_utilization=0.6" in problem
    assert "lower cluster.judge.gpu_memory_utilization to <= 0.40" in problem
    assert "lower rollout.gpu_memory_utilization to <= 0.30" in problem
    assert "set cluster.judge.placement=own_node" in problem


def test_the_one_node_models_and_vllm_tensor_parallel_rule() -> None:
    seven, small = KNOWN_MODELS["deepseek-r1-distill-qwen-7b"], KNOWN_MODELS["deepseek-r1-distill-qwen-1.5b"]
    assert seven.params == 7_615_616_512 and small.params == 1_777_088_000  # the published 7.62 B / 1.78 B
    assert (seven.heads, seven.kv_heads, small.heads, small.kv_heads) == (28, 4, 12, 2)
    assert [t for t in (1, 2, 4, 8) if not vllm_tp_problems(seven, t, "T")] == [1, 2, 4]
    (eight,) = vllm_tp_problems(seven, 8, "rollout.tensor_parallel")
    assert eight.startswith("rollout.tensor_parallel=8 does not split the model's 28 attention heads and 4 KV heads")
    assert vllm_tp_problems(small, 4, "T") == []  # 12 heads; 4 is a multiple of the 2 KV heads
    (three,) = vllm_tp_problems(small, 3, "T")
    assert "does not split the model's 12 attention heads and 2 KV heads" in three
